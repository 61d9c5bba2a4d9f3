package config

import (
	"strings"
	"testing"
)

func TestDirectLayout(t *testing.T) {
	for layout, ok := range map[string]bool{"": true, "pigsty": true, "twins": true, "twin": false} {
		c, err := Parse("c.yml", []byte(`inventory: inv.yml
direct:
  - config_path: /tmp/h.cfg
    stats_socket: /tmp/s.sock
    master_socket: /tmp/m.sock
    server_state_file: /tmp/st
    layout: "`+layout+`"
`))
		if err == nil {
			c.ApplyDefaults()
			err = c.Validate()
		}
		if ok && err != nil {
			t.Errorf("layout %q: %v", layout, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "direct[0].layout")) {
			t.Errorf("layout %q: err %v, want one naming direct[0].layout", layout, err)
		}
		c, err = Parse("c.yml", []byte(`inventory: inv.yml
dataplaneapi:
  - url: http://admin:pw@{host}:5555
    layout: "`+layout+`"
`))
		if err == nil {
			c.ApplyDefaults()
			err = c.Validate()
		}
		if ok && err != nil {
			t.Errorf("dataplaneapi layout %q: %v", layout, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "dataplaneapi[0].layout")) {
			t.Errorf("dataplaneapi layout %q: err %v, want one naming dataplaneapi[0].layout", layout, err)
		}
	}
}

func TestRuntimeReadEvery(t *testing.T) {
	c, err := Parse("c.yml", []byte(`inventory: inv.yml
direct:
  - config_path: /tmp/h.cfg
    stats_socket: /tmp/s.sock
    master_socket: /tmp/m.sock
    server_state_file: /tmp/st
    layout: twins
    runtime_read_every: 2m
dataplaneapi:
  - url: http://admin:pw@127.0.0.1:5555
    layout: twins
    runtime_read_every: 30m
`))
	if err != nil {
		t.Fatal(err)
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := c.Direct[0].RuntimeReadEvery.Duration; got.String() != "2m0s" {
		t.Errorf("direct runtime_read_every = %s", got)
	}
	if got := c.DataPlaneAPI[0].RuntimeReadEvery.Duration; got.String() != "30m0s" {
		t.Errorf("dataplaneapi runtime_read_every = %s", got)
	}
}

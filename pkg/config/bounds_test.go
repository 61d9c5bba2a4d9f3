package config

import (
	"fmt"
	"strings"
	"testing"
)

// TestControllerBounds (issue 12 rows 9, 14): settings that would panic,
// spin or time out every apply are rejected at load, naming file and field.
func TestControllerBounds(t *testing.T) {
	base := "inventory: inv.yml\ndirect: [{config_path: a, stats_socket: b, master_socket: c, server_state_file: d}]\n"
	for _, tc := range []struct{ yaml, want string }{
		{"controller: {history_size: -5}", "c.yml: controller.history_size: -5 is out of range (1-100000)"},
		{"controller: {resync_interval: 1ns}", "c.yml: controller.resync_interval: 1ns is too short (at least 1s)"},
		{"controller: {apply_timeout: 1ns}", "c.yml: controller.apply_timeout: 1ns is too short (at least 100ms)"},
	} {
		c, err := Parse("c.yml", []byte(base+tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		c.ApplyDefaults()
		if err := c.Validate(); err == nil || err.Error() != tc.want {
			t.Errorf("%s: err = %v, want %s", tc.yaml, err, tc.want)
		}
	}
	c, err := Parse("c.yml", []byte(base+"controller: {resync_interval: 1s, apply_timeout: 100ms, history_size: 1}"))
	if err != nil {
		t.Fatal(err)
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Errorf("the bounds themselves are refused: %v", err)
	}
	if !strings.Contains(Default().Controller.ResyncInterval.String(), "30s") {
		t.Error("default resync interval changed")
	}
}

// TestDirectMaxconnBounds: HAProxy 2.6 parses the global maxconn without
// any check, then cannot start with a negative one or one needing more file
// descriptors than Linux gives a process: refused at load, naming the file
// and direct[N].maxconn.
func TestDirectMaxconnBounds(t *testing.T) {
	base := "inventory: inv.yml\ndirect:\n  - {config_path: a, stats_socket: b, master_socket: c, server_state_file: d}\n" +
		"  - {config_path: e, stats_socket: f, master_socket: g, server_state_file: h, maxconn: %s}\n"
	check := func(v string) error {
		c, err := Parse("c.yml", []byte(fmt.Sprintf(base, v)))
		if err != nil {
			t.Fatal(err)
		}
		c.ApplyDefaults()
		return c.Validate()
	}
	for _, v := range []string{"-1", "1073709025", "2147483647", "99999999999"} {
		want := "c.yml: direct[1].maxconn: " + v + " is out of range (1-1073709024; 0 or unset: 8000)"
		if err := check(v); err == nil || err.Error() != want {
			t.Errorf("maxconn %s: err = %v, want %s", v, err, want)
		}
	}
	for _, v := range []string{"0", "1", "8000", "1073709024"} {
		if err := check(v); err != nil {
			t.Errorf("maxconn %s refused: %v", v, err)
		}
	}
}

package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadGood(t *testing.T) {
	c, err := Load("testdata/good.yml")
	if err != nil {
		t.Fatal(err)
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Controller.Debounce.Duration != 20*time.Millisecond || c.Controller.ResyncInterval.Duration != time.Minute {
		t.Errorf("durations: %+v", c.Controller)
	}
	if c.Controller.StaleAfter.Duration != 10*time.Second {
		t.Errorf("default stale_after not applied: %v", c.Controller.StaleAfter)
	}
	if c.Etcd.Endpoints[0] != "https://10.10.10.10:2379" || c.DataPlaneAPI[0].PasswordFile == "" || c.DataPlaneAPI[0].APIVersion != "v3" {
		t.Errorf("decoded: %+v", c)
	}
}

func TestRejected(t *testing.T) {
	cases := map[string]string{
		"unknown-field.yml":            "field endpoint not found",
		"bad-duration.yml":             `"fast" is not a duration`,
		"no-target.yml":                "dataplaneapi: no HAProxy target",
		"no-inventory.yml":             "inventory: required",
		"bad-etcd-url.yml":             "etcd.endpoints[0]",
		"bad-etcd-url-credentials.yml": "etcd.endpoints[0]",
		"etcd-url-credentials.yml":     "etcd.endpoints[1]: \"http://root:xxxxx@127.0.0.1:2379\": credentials in an etcd endpoint URL are not used; give etcd.username and etcd.password_file",
		"bad-dpapi-url.yml":            "dataplaneapi[0].url",
		"bad-dpapi-version.yml":        "dataplaneapi[0].api_version",
		"bad-dpapi-reload-timeout.yml": "dataplaneapi[0].reload_timeout",
		"direct-no-state-file.yml":     "direct[0].server_state_file",
		"cert-without-key.yml":         "etcd.cert_file",
		"bad-listen.yml":               "listen:",
		"bad-log-level.yml":            "log.level",
	}
	files, _ := filepath.Glob("testdata/bad/*.yml")
	if len(files) != len(cases) {
		t.Fatalf("%d files in testdata/bad, %d cases: every rejected case needs both", len(files), len(cases))
	}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata/bad", name)
			c, err := Load(path)
			if err == nil {
				c.ApplyDefaults()
				err = c.Validate()
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), want) {
				t.Errorf("error %q: want the file %q and %q", err, path, want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks a password: %q", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	got := Redact("http://admin:s3cret@127.0.0.1:5555")
	if strings.Contains(got, "s3cret") || !strings.Contains(got, "admin") {
		t.Errorf("Redact = %q", got)
	}
}

func TestPigstyVersionSetting(t *testing.T) {
	base := "inventory: /etc/pgsvc/pigsty.yml\ndirect: [{config_path: /etc/haproxy/haproxy.cfg, stats_socket: /run/a.sock, master_socket: /run/m.sock, server_state_file: /var/lib/haproxy/state}]\n"
	check := func(doc string) error {
		c, err := Parse("c.yml", []byte(doc))
		if err != nil {
			return err
		}
		c.ApplyDefaults()
		return c.Validate()
	}
	for _, v := range []string{"", "pigsty_version: auto\n", "pigsty_version: v3\n", "pigsty_version: v4\n"} {
		if err := check(base + v); err != nil {
			t.Errorf("%q: %v", v, err)
		}
	}
	err := check(base + "pigsty_version: v5\n")
	if err == nil || err.Error() != `c.yml: pigsty_version: "v5": want auto, v3 or v4` {
		t.Errorf("v5: %v", err)
	}
}

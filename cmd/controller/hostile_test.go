package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/topology"
)

// TestHostileInventoryRejected (issue 12 rows 2, 9, 14): plan and render
// exit 1 with one line naming file, line and field for host keys HAProxy
// would misread or cannot resolve, and run refuses out-of-bounds settings.
func TestHostileInventoryRejected(t *testing.T) {
	prev := topology.LookupHost
	topology.LookupHost = func(string) ([]string, error) { return nil, errors.New("no such host") }
	t.Cleanup(func() { topology.LookupHost = prev })
	dir := t.TempDir()
	for _, tc := range []struct{ name, host, want string }{
		{"comment", `"127.4.0.99 #"`, `:5: cluster pg-test, host 127.4.0.99 #: hosts: host key: address "127.4.0.99 #": not an IP address or a host name`},
		{"space", `"127.0.0.11 127.0.0.12"`, `:5: cluster pg-test, host 127.0.0.11 127.0.0.12: hosts: host key:`},
		{"unresolvable", `no-such-host.invalid`, `:5: cluster pg-test, host no-such-host.invalid: hosts: host key: host "no-such-host.invalid" does not resolve`},
	} {
		path := filepath.Join(dir, tc.name+".yml")
		inv := "all:\n  children:\n    pg-test:\n      hosts:\n        " + tc.host + ": { pg_seq: 1, pg_role: primary }\n      vars: { pg_cluster: pg-test }\n"
		if err := os.WriteFile(path, []byte(inv), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []string{"plan", "render"} {
			code, out, errOut := runCmd(t, cmd, "--inventory", path)
			if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 ||
				!strings.HasPrefix(errOut, "controller: "+path+tc.want) {
				t.Errorf("%s %s: exit %d, stdout %q, stderr %q\nwant exit 1 and %s%s", cmd, tc.name, code, out, errOut, path, tc.want)
			}
		}
	}
	good := filepath.Join(dir, "good.yml")
	if err := os.WriteFile(good, []byte("all:\n  children:\n    pg-test:\n      hosts: { 127.0.0.11: { pg_seq: 1, pg_role: primary } }\n      vars: { pg_cluster: pg-test }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ setting, want string }{
		{"history_size: -5", "controller.history_size: -5 is out of range"},
		{"resync_interval: 1ns", "controller.resync_interval: 1ns is too short (at least 1s)"},
		{"apply_timeout: 1ns", "controller.apply_timeout: 1ns is too short (at least 100ms)"},
	} {
		cfg := filepath.Join(dir, "c.yml")
		text := "inventory: " + good + "\nlisten: 127.0.0.1:0\ndataplaneapi: [{url: \"http://127.0.0.1:1\"}]\ncontroller: {" + tc.setting + "}\n"
		if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := runCmd(t, "run", "--config", cfg)
		if code == 0 || !strings.Contains(errOut, cfg+": "+tc.want) {
			t.Errorf("%s: exit %d, stderr %q", tc.setting, code, errOut)
		}
	}
}

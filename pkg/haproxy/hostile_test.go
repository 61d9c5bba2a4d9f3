package haproxy

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// TestDirectRefusesUnvalidatedTokens (issue 12 row 1, defence in depth): a
// server name or address that would inject configuration never reaches the
// running HAProxy, even when handed straight to the driver: Apply fails
// naming it, the config file is untouched and the live servers unchanged.
func TestDirectRefusesUnvalidatedTokens(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m1 := newMember(t, "pg-t-1", "127.0.0.31", "primary")
	pp, rp := freePort(t, frontIP), freePort(t, frontIP)
	good := cluster(pp, rp, map[string]int{}, m1)
	if _, err := r.direct.Apply(ctx, good); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(r.opts.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []services.Server{
		{Name: "pwn 127.4.0.99:5432 #", Address: "127.4.0.99", Port: 5432, CheckPort: 8008, Weight: 100},
		{Name: "pg-h-9", Address: "127.4.0.99 #", Port: 5432, CheckPort: 8008, Weight: 100},
		{Name: "pg-h-9", Address: "127.4.0.99\n    server x 127.4.0.99:5432", Port: 5432, CheckPort: 8008, Weight: 100},
		{Name: "pg-h-9", Address: "127.4.0.99", Port: 70000, CheckPort: 8008, Weight: 100},
	} {
		desired := cluster(pp, rp, map[string]int{}, m1)
		desired[0].Servers = append(desired[0].Servers, bad)
		_, err := r.direct.Apply(ctx, desired)
		if err == nil || !strings.Contains(err.Error(), "pg-t-primary") {
			t.Errorf("server %+v: Apply = %v, want an error naming the service", bad, err)
		}
		after, err := os.ReadFile(r.opts.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		if string(after) != string(before) {
			t.Errorf("server %+v: the config file changed", bad)
		}
		for key, row := range r.stat(t) {
			if row.Addr == "127.4.0.99" {
				t.Errorf("server %+v: the running HAProxy has %s", bad, key)
			}
		}
	}
	// A bad default-server line is refused too (what the Data Plane API
	// driver could never apply is not applied here either).
	desired := cluster(pp, rp, map[string]int{}, m1)
	desired[1].DefaultServer = "inter 1s # check disabled"
	if _, err := r.direct.Apply(ctx, desired); err == nil {
		t.Error("a default-server line with '#' was applied")
	}
}

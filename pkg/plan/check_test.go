package plan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// TestLoadInventoryRejectsWhatRunCannotApply (issue 12 row 10): the check
// plan, render, diff and run all load inventories with.
func TestLoadInventoryRejectsWhatRunCannotApply(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, selector, want string }{
		{"number", "length(@)", `selector: "length(@)": returned a number, want a list of members`},
		{"projection", "[].pg_role", `element 0 is a string, want a member`},
	} {
		path := filepath.Join(dir, tc.name+".yml")
		inv := strings.ReplaceAll(testInventory, "vars: { pg_cluster: pg-duo }",
			"vars: { pg_cluster: pg-duo, pg_services: [{ name: x, port: 5440, selector: \""+tc.selector+"\" }] }")
		if err := os.WriteFile(path, []byte(inv), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadInventory(path, topology.ParseOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: err = %v, want it to name %s and contain %s", tc.name, err, path, tc.want)
		}
	}
	// Accepted: the inventory alone, and a selector that only fails on
	// some data (run holds that cluster back while it fails).
	for name, text := range map[string]string{
		"good": testInventory,
		"live": strings.ReplaceAll(testInventory, "vars: { pg_cluster: pg-duo }",
			`vars: { pg_cluster: pg-duo, pg_services: [{ name: x, port: 5440, selector: "[? starts_with(patroni_state, 'run')]" }] }`),
	} {
		path := filepath.Join(dir, name+".yml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadInventory(path, topology.ParseOptions{}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestLoadInventorySelectorCompilerPanic: go-jmespath's compiler panics on an
// identifier followed by U+0080; loading such an inventory (at start or on a
// hot reload) must return an error naming the file and the field, not panic.
func TestLoadInventorySelectorCompilerPanic(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, service, field string }{
		{"selector", `{ name: x, port: 5440, selector: "[? pg_offline_query\x80 ]" }`, "pg_services[0].selector"},
		{"backup", `{ name: x, port: 5440, selector: "[]", backup: "A\u0080 0" }`, "pg_services[0].backup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".yml")
			inv := strings.ReplaceAll(testInventory, "vars: { pg_cluster: pg-duo }",
				"vars: { pg_cluster: pg-duo, pg_services: ["+tc.service+"] }")
			if err := os.WriteFile(path, []byte(inv), 0o600); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("LoadInventory panicked: %v", r)
				}
			}()
			got, err := LoadInventory(path, topology.ParseOptions{})
			if got != nil || err == nil {
				t.Fatalf("LoadInventory = %v, %v: want an error", got, err)
			}
			for _, want := range []string{path, tc.field, "does not compile"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %v, want it to contain %q", err, want)
				}
			}
		})
	}
}

// TestGhostLeaderIgnored (issue 12 row 7): a leader key naming no known
// member leaves the last known leader primary, with a warning.
func TestGhostLeaderIgnored(t *testing.T) {
	inv := loadInventory(t, testInventory)
	for _, ghost := range []string{"ghost-9", "\x00garbage", "pg-test-1 #"} {
		st := state("pg-test", ghost, "pg-test-1:replica", "pg-test-2:replica", "pg-test-3:replica")
		p, err := Compute(inv, map[string]*patroni.ClusterState{"pg-test": st},
			Options{LastKnownLeaders: map[string]string{"pg-test": "pg-test-1"}, IncludeUnknown: true})
		if err != nil {
			t.Fatal(err)
		}
		c := p.Clusters[0]
		got := strings.Join(summary(c), "\n")
		if !strings.Contains(got, "pg-test-1 primary->primary") || !strings.Contains(got, "replica: pg-test-1(backup) pg-test-3 pg-test-2") {
			t.Errorf("leader %q:\n%s", ghost, got)
		}
		if !strings.Contains(got, "which is no known member: ignored") {
			t.Errorf("leader %q: no warning:\n%s", ghost, got)
		}
		if st.Leader != ghost {
			t.Error("Compute modified its input")
		}
	}
	// An inventory member holding the key without a member key is no ghost.
	st := state("pg-test", "pg-test-2", "pg-test-1:replica", "pg-test-3:replica")
	p, err := Compute(inv, map[string]*patroni.ClusterState{"pg-test": st}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Clusters[0].Leader != "pg-test-2" {
		t.Errorf("leader = %q, want pg-test-2", p.Clusters[0].Leader)
	}
}

// TestInvalidServersDropped: a live member whose address could not be given
// to HAProxy (a state built without the decoder's checks) is skipped with a
// warning; the rest of the service is kept.
func TestInvalidServersDropped(t *testing.T) {
	inv := loadInventory(t, testInventory)
	st := state("pg-test", "pg-test-1", "pg-test-1:primary", "pg-test-2:replica", "pg-test-3:replica", "pg-test-9:replica")
	st.Members["pg-test-9"].Host = "127.4.0.99 #"
	p, err := Compute(inv, map[string]*patroni.ClusterState{"pg-test": st}, Options{IncludeUnknown: true})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(summary(p.Clusters[0]), "\n")
	if !strings.Contains(got, `server pg-test-9: address "127.4.0.99 #"`) || !strings.Contains(got, "server skipped") {
		t.Errorf("no warning about the skipped server:\n%s", got)
	}
	for _, s := range p.Clusters[0].Services {
		for _, sv := range s.Servers {
			if sv.Name == "pg-test-9" {
				t.Errorf("service %s serves pg-test-9", s.Name)
			}
		}
	}
}

package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestServiceOverridePlanRender: an inventory whose pg_services redefines
// services of pg_default_services (testdata/pigsty/v4-override.yml) plans
// and renders as Pigsty leaves it: one section per name, the later
// definition's, in the earlier one's place, and the plan warns about each
// replacement, naming both definitions.
func TestServiceOverridePlanRender(t *testing.T) {
	inv := filepath.Join("testdata", "pigsty", "v4-override.yml")
	p := planJSON(t, "--inventory", inv)
	if len(p.Clusters) != 1 {
		t.Fatalf("%d clusters", len(p.Clusters))
	}
	c := p.Clusters[0]
	var names []string
	for _, s := range c.Services {
		names = append(names, s.Service)
	}
	if got, want := strings.Join(names, " "), "primary replica default offline standby"; got != want {
		t.Errorf("services %s, want %s", got, want)
	}
	if s := c.Services[0]; s.Balance != "first" || s.Maxconn != 300 || s.Dest != "postgres" {
		t.Errorf("primary: balance %s maxconn %d dest %s, want pg_services[1]'s first, 300, postgres", s.Balance, s.Maxconn, s.Dest)
	}
	if got, want := servers(t, p, "pg-test", "replica"), "pg-test-2 pg-test-3 pg-test-1(backup)"; got != want {
		t.Errorf("replica servers %s, want %s", got, want)
	}
	want := []string{
		"service primary: pg_services[1] (line 16) replaces pg_default_services[0] (Pigsty renders both into pg-test-primary.cfg, the later one last: it wins)",
		"service replica: pg_services[2] (line 17) replaces pg_default_services[1] (Pigsty renders both into pg-test-replica.cfg, the later one last: it wins)",
	}
	for _, w := range want {
		found := false
		for _, got := range c.Warnings {
			found = found || got == w
		}
		if !found {
			t.Errorf("no warning %q in %q", w, c.Warnings)
		}
	}

	code, out, errOut := runCmd(t, "render", "--inventory", inv, "--stats-socket", "", "--server-state-file", "")
	if code != 0 {
		t.Fatalf("render: exit %d: %s", code, errOut)
	}
	if n := strings.Count(out, "\nbackend pg-test-primary\n"); n != 1 {
		t.Errorf("render has %d backends pg-test-primary, want 1:\n%s", n, out)
	}
	_, primary, _ := strings.Cut(out, "\nbackend pg-test-primary\n")
	primary, _, _ = strings.Cut(primary, "\n\n")
	if !strings.Contains(primary, "    balance first\n") || !strings.Contains(primary, "10.10.10.11:5432 ") {
		t.Errorf("backend pg-test-primary is not pg_services[1]'s (balance first, dest postgres):\n%s", primary)
	}
}

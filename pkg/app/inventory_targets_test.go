package app

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

func expand(t *testing.T, invPath string, entries ...config.DataPlaneAPI) ([]DataPlaneAPITarget, []string, error) {
	t.Helper()
	inv, err := topology.Load(invPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{File: "controller.yml", Inventory: invPath, DataPlaneAPI: entries}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return ExpandDataPlaneAPI(cfg, inv)
}

func summary(ts []DataPlaneAPITarget) []string {
	var out []string
	for _, t := range ts {
		out = append(out, fmt.Sprintf("%s %s %s [%s]", t.Field, t.Host, t.URL, strings.Join(t.Clusters, " ")))
	}
	return out
}

// TestExpandTemplate: a {host} entry in the shape of Pigsty's conf/ha/simu.yml
// gives one target per node that carries services, each with exactly the
// clusters Pigsty renders there; explicit entries pass through unchanged.
func TestExpandTemplate(t *testing.T) {
	ts, warnings, err := expand(t, "testdata/ha-simu.yml",
		config.DataPlaneAPI{URL: "http://admin@10.10.10.99:5555", Clusters: []string{"pg-meta"}},
		config.DataPlaneAPI{URL: "http://admin@{host}:5555", PasswordFile: "/etc/pgsvc/dpapi.pass"},
		config.DataPlaneAPI{URL: "https://10.10.10.98:5555"},
	)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"dataplaneapi[0]  http://admin@10.10.10.99:5555 [pg-meta]",
		"dataplaneapi[1] 10.10.10.10 http://admin@10.10.10.10:5555 [pg-meta]",
		"dataplaneapi[1] 10.10.10.11 http://admin@10.10.10.11:5555 [pg-meta]",
		"dataplaneapi[1] 10.10.10.18 http://admin@10.10.10.18:5555 [pg-v12 pg-v13]",
		"dataplaneapi[1] 10.10.10.19 http://admin@10.10.10.19:5555 [pg-v12 pg-v13]",
		"dataplaneapi[1] 10.10.10.41 http://admin@10.10.10.41:5555 [pg-test]",
		"dataplaneapi[1] 10.10.10.42 http://admin@10.10.10.42:5555 [pg-test]",
		"dataplaneapi[1] 10.10.10.43 http://admin@10.10.10.43:5555 [pg-test]",
		"dataplaneapi[1] 10.10.10.45 http://admin@10.10.10.45:5555 [pg-src]",
		"dataplaneapi[1] 10.10.10.46 http://admin@10.10.10.46:5555 [pg-src]",
		"dataplaneapi[2]  https://10.10.10.98:5555 []",
	}
	if got := summary(ts); !reflect.DeepEqual(got, want) {
		t.Errorf("targets:\n got %q\nwant %q", got, want)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings: %q", warnings)
	}
	if ts[1].Entry.PasswordFile != "/etc/pgsvc/dpapi.pass" {
		t.Errorf("credentials not carried: %+v", ts[1].Entry)
	}

	// clusters on a template keeps only those clusters' nodes and clusters.
	ts, _, err = expand(t, "testdata/ha-simu.yml", config.DataPlaneAPI{URL: "http://{host}:5555", Clusters: []string{"pg-v13", "pg-src"}})
	if err != nil {
		t.Fatal(err)
	}
	want = []string{
		"dataplaneapi[0] 10.10.10.18 http://10.10.10.18:5555 [pg-v13]",
		"dataplaneapi[0] 10.10.10.19 http://10.10.10.19:5555 [pg-v13]",
		"dataplaneapi[0] 10.10.10.45 http://10.10.10.45:5555 [pg-src]",
		"dataplaneapi[0] 10.10.10.46 http://10.10.10.46:5555 [pg-src]",
	}
	if got := summary(ts); !reflect.DeepEqual(got, want) {
		t.Errorf("filtered targets:\n got %q\nwant %q", got, want)
	}
}

// TestExplicitOnlyUnchanged: without a template, entries are what they were
// (no placement, no clash check: an explicit entry may carry every cluster).
func TestExplicitOnlyUnchanged(t *testing.T) {
	entries := []config.DataPlaneAPI{
		{URL: "http://admin@10.10.10.10:5555", Clusters: []string{"pg-meta"}},
		{URL: "http://admin@10.10.10.10:5555", Clusters: []string{"pg-test"}},
		{URL: "http://10.10.10.18:5555"},
	}
	ts, warnings, err := expand(t, "testdata/ha-simu.yml", entries...)
	if err != nil || len(warnings) != 0 {
		t.Fatalf("err %v, warnings %q", err, warnings)
	}
	for i, e := range entries {
		if ts[i].URL != e.URL || !reflect.DeepEqual(ts[i].Clusters, e.Clusters) || ts[i].Host != "" || !reflect.DeepEqual(ts[i].Entry, e) {
			t.Errorf("entry %d: %+v, want %+v", i, ts[i], e)
		}
	}
}

func TestExpandRejects(t *testing.T) {
	_, _, err := expand(t, "testdata/ha-simu.yml",
		config.DataPlaneAPI{URL: "http://10.10.10.18:5555"},
		config.DataPlaneAPI{URL: "http://{host}:5555"})
	if err == nil || !strings.Contains(err.Error(), "controller.yml: dataplaneapi[1] (host 10.10.10.18): http://10.10.10.18:5555 is also dataplaneapi[0]") {
		t.Errorf("duplicate API: %v", err)
	}
	_, _, err = expand(t, "../placement/testdata/shared-node-clash.yml", config.DataPlaneAPI{URL: "http://{host}:5555"})
	if err == nil || !strings.Contains(err.Error(), "controller.yml: dataplaneapi[0].url: inventory ../placement/testdata/shared-node-clash.yml: ") ||
		!strings.Contains(err.Error(), "host 10.10.10.10 carries clusters pg-meta and pg-v12") {
		t.Errorf("clash on a shared node: %v", err)
	}
	// Limited to one of the two clusters, the same node no longer clashes.
	if _, _, err = expand(t, "../placement/testdata/shared-node-clash.yml", config.DataPlaneAPI{URL: "http://{host}:5555", Clusters: []string{"pg-v12"}}); err != nil {
		t.Errorf("one cluster per node: %v", err)
	}
}

// TestReloadKeepsPlacement: an inventory reload that would change the
// template-expanded targets is rejected (they are built once); one that
// keeps them is accepted.
func TestReloadKeepsPlacement(t *testing.T) {
	cfg := &config.Config{File: "controller.yml", DataPlaneAPI: []config.DataPlaneAPI{{URL: "http://{host}:5555"}}}
	ts, _, err := expand(t, "testdata/ha-simu.yml", cfg.DataPlaneAPI...)
	if err != nil {
		t.Fatal(err)
	}
	placed := TargetsKey(ts)
	same, err := topology.Load("testdata/ha-simu.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPlacementUnchanged(cfg, same, placed); err != nil {
		t.Errorf("same inventory: %v", err)
	}
	b, err := os.ReadFile("testdata/ha-simu.yml")
	if err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(t.TempDir(), "pigsty.yml")
	// pg-v13 stops delegating: its services move to its own member.
	text := strings.Replace(string(b), "pg_service_provider: proxy       # use load balancer on group `proxy` with port 10013", "", 1)
	if err := os.WriteFile(moved, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	next, err := topology.Load(moved)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPlacementUnchanged(cfg, next, placed); err == nil || !strings.Contains(err.Error(), moved+": the HAProxy nodes or the clusters each carries changed") {
		t.Errorf("moved services: %v", err)
	}
}

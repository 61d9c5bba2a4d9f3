package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/plan"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// runCmd runs the controller in-process, as the binary would.
func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (go test -update to accept):\n%s", path, got)
	}
}

const (
	pgTest = "testdata/plan/pg-test.yml"
	pgDuo  = "testdata/plan/pg-duo.yml"
)

func TestPlanGolden(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		golden string
	}{
		{"seed, inventory only", []string{"--inventory", pgTest}, "seed.txt"},
		{"seed, inventory only, json", []string{"--inventory", pgTest, "--format", "json"}, "seed.json"},
		{"initial", []string{"--inventory", pgTest, "--dcs", "testdata/dcs/dcs-initial.json"}, "initial.txt"},
		{"3 members after switchover", []string{"--inventory", pgTest, "--dcs", "testdata/dcs/dcs-after-switchover.json"}, "switchover.txt"},
		{"3 members after switchover, json", []string{"--inventory", pgTest, "--dcs", "testdata/dcs/dcs-after-switchover.json", "--format", "json"}, "switchover.json"},
		{"during failover", []string{"--inventory", pgTest, "--dcs", "testdata/dcs/dcs-during-failover.json"}, "during-failover.txt"},
		{"after failover", []string{"--inventory", pgTest, "--dcs", "testdata/dcs/dcs-after-failover.json"}, "after-failover.txt"},
		{"after failover, json", []string{"--inventory", pgTest, "--dcs", "testdata/dcs/dcs-after-failover.json", "--format=json"}, "after-failover.json"},
		{"2 members after switchover, patroni 4", []string{"--inventory", pgDuo, "--dcs", "testdata/dcs/pg-duo-switchover-4x.json"}, "duo-switchover.txt"},
		{"2 members after switchover, patroni 4, json", []string{"--inventory", pgDuo, "--dcs", "testdata/dcs/pg-duo-switchover-4x.json", "--format", "json"}, "duo-switchover.json"},
		{"unknown member", []string{"--inventory", pgDuo, "--dcs", "testdata/dcs/pg-duo-unknown-4x.json"}, "duo-unknown.txt"},
		{"unknown member included", []string{"--inventory", pgDuo, "--dcs", "testdata/dcs/pg-duo-unknown-4x.json", "--include-unknown"}, "duo-unknown-included.txt"},
		{"snapshot of another cluster", []string{"--inventory", pgDuo, "--dcs", "testdata/dcs/dcs-initial.json"}, "duo-no-state.txt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, append([]string{"plan"}, tc.args...)...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			checkGolden(t, filepath.Join("testdata", "plan", tc.golden), []byte(out))
		})
	}
}

// planJSON runs plan --format json and decodes it.
func planJSON(t *testing.T, args ...string) *plan.Plan {
	t.Helper()
	code, out, errOut := runCmd(t, append([]string{"plan", "--format", "json"}, args...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var p plan.Plan
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("decode plan JSON: %v", err)
	}
	return &p
}

// servers summarises one service of a cluster as "name" / "name(backup)".
func servers(t *testing.T, p *plan.Plan, cluster, service string) string {
	t.Helper()
	for _, c := range p.Clusters {
		if c.Name != cluster {
			continue
		}
		for _, s := range c.Services {
			if s.Service != service {
				continue
			}
			var parts []string
			for _, sv := range s.Servers {
				if sv.Backup {
					parts = append(parts, sv.Name+"(backup)")
				} else {
					parts = append(parts, sv.Name)
				}
			}
			return strings.Join(parts, " ")
		}
	}
	t.Fatalf("no service %s in cluster %s", service, cluster)
	return ""
}

// TestPlanFixesPigstyGaps states, independently of the golden files, what
// the live merge must change compared with Pigsty's static rendering.
func TestPlanFixesPigstyGaps(t *testing.T) {
	tests := []struct {
		name                   string
		args                   []string
		cluster, service, want string
	}{
		{"static: primary is the replica backup", []string{"--inventory", pgTest}, "pg-test", "replica", "pg-test-1(backup) pg-test-3 pg-test-2"},
		{"switchover: new primary is the replica backup, old primary serves reads", []string{"--inventory", pgTest, "--dcs", "testdata/dcs/dcs-after-switchover.json"}, "pg-test", "replica", "pg-test-1 pg-test-3 pg-test-2(backup)"},
		{"switchover: offline backed by a plain replica", []string{"--inventory", pgTest, "--dcs", "testdata/dcs/dcs-after-switchover.json"}, "pg-test", "offline", "pg-test-3 pg-test-1(backup)"},
		{"switchover: standby falls back to the new primary", []string{"--inventory", pgTest, "--dcs", "testdata/dcs/dcs-after-switchover.json"}, "pg-test", "standby", "pg-test-1 pg-test-3 pg-test-2(backup)"},
		{"failover: new primary pg-test-3 is the replica backup", []string{"--inventory", pgTest, "--dcs", "testdata/dcs/dcs-after-failover.json"}, "pg-test", "replica", "pg-test-1 pg-test-3(backup) pg-test-2"},
		{"failover: offline backed by the surviving replicas", []string{"--inventory", pgTest, "--dcs", "testdata/dcs/dcs-after-failover.json"}, "pg-test", "offline", "pg-test-3 pg-test-1(backup) pg-test-2(backup)"},
		{"2 members: offline gets the old primary", []string{"--inventory", pgDuo, "--dcs", "testdata/dcs/pg-duo-switchover-4x.json"}, "pg-duo", "offline", "pg-duo-2 pg-duo-1(backup)"},
		{"2 members: replica prefers the old primary", []string{"--inventory", pgDuo, "--dcs", "testdata/dcs/pg-duo-switchover-4x.json"}, "pg-duo", "replica", "pg-duo-1 pg-duo-2(backup)"},
		{"unknown member excluded", []string{"--inventory", pgDuo, "--dcs", "testdata/dcs/pg-duo-unknown-4x.json"}, "pg-duo", "replica", "pg-duo-1(backup) pg-duo-2"},
		{"unknown member included", []string{"--inventory", pgDuo, "--dcs", "testdata/dcs/pg-duo-unknown-4x.json", "--include-unknown"}, "pg-duo", "replica", "pg-duo-1(backup) pg-duo-2 pg-duo-3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := planJSON(t, tc.args...)
			if got := servers(t, p, tc.cluster, tc.service); got != tc.want {
				t.Errorf("%s-%s servers = %q, want %q", tc.cluster, tc.service, got, tc.want)
			}
		})
	}
}

func TestPlanPatroni4Leader(t *testing.T) {
	p := planJSON(t, "--inventory", pgDuo, "--dcs", "testdata/dcs/pg-duo-switchover-4x.json")
	c := p.Clusters[0]
	if c.Leader != "pg-duo-2" || !c.Live {
		t.Fatalf("leader %q live %t, want pg-duo-2 live", c.Leader, c.Live)
	}
	for _, m := range c.Members {
		if m.Name == "pg-duo-2" && (m.Role != "primary" || m.PatroniRole != "primary") {
			t.Errorf("pg-duo-2: role %q patroni_role %q, want primary/primary", m.Role, m.PatroniRole)
		}
	}
}

// TestBadInput checks every class of bad input: flag errors exit 2, bad files
// exit 1 with ONE line naming the file (and field) at fault.
func TestBadInput(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		// line is the expected stderr prefix; for exit 1 it must be the only line.
		line string
	}{
		{"plan without inventory", []string{"plan"}, 2, "controller plan: --inventory is required"},
		{"render without inventory", []string{"render"}, 2, "controller render: --inventory is required"},
		{"unknown flag", []string{"plan", "--inventory", pgTest, "--frobnicate"}, 2, "flag provided but not defined: -frobnicate"},
		{"bad format", []string{"plan", "--inventory", pgTest, "--format", "yaml"}, 2, `controller plan: --format "yaml": want text or json`},
		{"stray argument", []string{"plan", "--inventory", pgTest, "extra"}, 2, `controller plan: unexpected argument "extra"`},
		{"bad maxconn", []string{"render", "--inventory", pgTest, "--maxconn", "0"}, 2, "controller render: --maxconn 0: want a positive number"},
		{"missing inventory", []string{"plan", "--inventory", "testdata/nope.yml"}, 1, "controller: testdata/nope.yml: cannot open: no such file or directory"},
		{"inventory not YAML", []string{"plan", "--inventory", "testdata/bad/not-yaml.yml"}, 1, "controller: testdata/bad/not-yaml.yml:2: invalid YAML"},
		{"inventory bad field", []string{"plan", "--inventory", "testdata/bad/bad-role.yml"}, 1, `controller: testdata/bad/bad-role.yml:5: cluster pg-test, host 127.0.0.11: pg_role: unknown role "leader"`},
		{"selector returns no members", []string{"plan", "--inventory", "testdata/bad/projection-selector.yml"}, 1, `controller: testdata/bad/projection-selector.yml:11: cluster pg-test: service names (pg_services[0]): selector: "[].pg_role": element 0 is a string`},
		{"selector error in render", []string{"render", "--inventory", "testdata/bad/projection-selector.yml"}, 1, `controller: testdata/bad/projection-selector.yml:11: cluster pg-test: service names (pg_services[0]): selector:`},
		{"missing snapshot", []string{"plan", "--inventory", pgTest, "--dcs", "testdata/nope.json"}, 1, "controller: testdata/nope.json: cannot open: no such file or directory"},
		{"truncated snapshot", []string{"plan", "--inventory", pgTest, "--dcs", "testdata/bad/truncated-snapshot.json"}, 1, "controller: testdata/bad/truncated-snapshot.json: invalid snapshot JSON"},
		{"ports collide", []string{"render", "--inventory", "testdata/render/two-clusters.yml", "--cluster", "pg-test,pg-duo"}, 1, "controller: testdata/render/two-clusters.yml: services cannot share one haproxy: service pg-duo-primary: bind *:5433 collides with service pg-test-primary"},
		{"unknown cluster", []string{"render", "--inventory", "testdata/render/two-clusters.yml", "--cluster", "pg-nope"}, 1, "controller: testdata/render/two-clusters.yml: --cluster pg-nope: no such cluster in the inventory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, errOut)
			}
			if out != "" {
				t.Errorf("stdout not empty on error: %q", out)
			}
			if !strings.HasPrefix(errOut, tc.line) {
				t.Errorf("stderr %q, want it to start with %q", errOut, tc.line)
			}
			if tc.code == 1 && strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr is not one line: %q", errOut)
			}
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	for _, cmd := range []string{"plan", "render"} {
		t.Run(cmd, func(t *testing.T) {
			code, _, errOut := runCmd(t, cmd, "-h")
			if code != 0 || !strings.Contains(errOut, "usage: controller "+cmd) {
				t.Errorf("exit %d, stderr %q", code, errOut)
			}
		})
	}
}

// TestPlanSnapshotWithAnotherClustersBadNames: a snapshot in which another
// cluster has member and leader names HAProxy could not take still plans
// pg-test exactly as without them (bad DCS data of one cluster never
// affects another).
func TestPlanSnapshotWithAnotherClustersBadNames(t *testing.T) {
	src := filepath.Join("testdata", "dcs", "dcs-initial.json")
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	doc["kvs"] = append(doc["kvs"].([]any),
		map[string]any{"key": "/pg/pg-other/leader", "value": "x#1"},
		map[string]any{"key": "/pg/pg-other/members/x 1", "value": `{"conn_url":"postgres://10.9.9.9:5432/postgres"}`})
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	mixed := filepath.Join(t.TempDir(), "mixed.json")
	if err := os.WriteFile(mixed, out, 0o600); err != nil {
		t.Fatal(err)
	}
	code, got, errOut := runCmd(t, "plan", "--inventory", pgTest, "--dcs", mixed)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	_, want, _ := runCmd(t, "plan", "--inventory", pgTest, "--dcs", src)
	if got != want {
		t.Errorf("plan of pg-test changed by another cluster's bad keys:\n%s\nwant:\n%s", got, want)
	}
}

// TestPlanBadConfigKey: plan --dcs reads one snapshot, with no earlier
// config value to keep (the watcher keeps the last valid one): a config
// key that cannot be decoded is a warning saying its flags read as off.
func TestPlanBadConfigKey(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "dcs", "dcs-initial.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, kv := range doc["kvs"].([]any) {
		if m := kv.(map[string]any); m["key"] == "/pg/pg-test/config" {
			m["value"], found = `{"ttl":30,"failsafe_mode":`, true
		}
	}
	if !found {
		t.Fatal("no config key in the fixture")
	}
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad-config.json")
	if err := os.WriteFile(bad, out, 0o600); err != nil {
		t.Fatal(err)
	}
	code, got, errOut := runCmd(t, "plan", "--inventory", pgTest, "--dcs", bad)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	want := "DCS key /pg/pg-test/config: config: invalid JSON object: unexpected EOF; no valid config seen: failsafe_mode, pause, synchronous_mode and standby_cluster read as off"
	if !strings.Contains(got, want) {
		t.Errorf("plan output lacks %q:\n%s", want, got)
	}
}

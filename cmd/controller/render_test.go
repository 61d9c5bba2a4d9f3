package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

func TestRenderGolden(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		golden string
	}{
		{"seed, inventory only", []string{"--inventory", pgTest}, "seed.cfg"},
		{"3 members after switchover", []string{"--inventory", pgTest, "--dcs", "testdata/dcs/dcs-after-switchover.json"}, "switchover.cfg"},
		{"after failover", []string{"--inventory", pgTest, "--dcs", "testdata/dcs/dcs-after-failover.json"}, "after-failover.cfg"},
		{"2 members after switchover, own paths", []string{"--inventory", pgDuo, "--dcs", "testdata/dcs/pg-duo-switchover-4x.json",
			"--stats-socket", "/tmp/pgsvc/admin.sock", "--server-state-file", "", "--maxconn", "2000", "--no-strict-limits"}, "duo-switchover.cfg"},
		{"one cluster of two", []string{"--inventory", "testdata/render/two-clusters.yml", "--cluster", "pg-duo", "--stats-socket", ""}, "two-clusters-duo.cfg"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, append([]string{"render"}, tc.args...)...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			checkGolden(t, filepath.Join("testdata", "render", tc.golden), []byte(out))
		})
	}
}

// TestRenderAcceptedByHAProxy runs `haproxy -c` on what render prints.
func TestRenderAcceptedByHAProxy(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/haproxy"); statErr != nil {
			t.Skip("haproxy binary not installed (apt-get install haproxy); CI installs it and runs this test")
		}
		bin = "/usr/sbin/haproxy"
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "server-state")
	// An empty state file in `show servers state` format, so HAProxy does
	// not warn that it is missing.
	if err := os.WriteFile(state, []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd(t, "render", "--inventory", pgTest, "--dcs", "testdata/dcs/dcs-after-switchover.json",
		"--stats-socket", filepath.Join(dir, "admin.sock"), "--server-state-file", state)
	if code != 0 {
		t.Fatalf("render: exit %d: %s", code, errOut)
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := exec.CommandContext(ctx, bin, "-c", "-f", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c rejected the rendered config: %v\n%s", err, res)
	}
	if strings.Contains(string(res), "[WARNING]") {
		t.Errorf("haproxy -c warned:\n%s", res)
	}
}

// stripAnnotations removes the explanations the seed page writes after '#'
// on configuration lines (and after a second '#' on comment lines).
func stripAnnotations(text string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		t := strings.TrimSpace(l)
		indent := l[:len(l)-len(strings.TrimLeft(l, " "))]
		if strings.HasPrefix(t, "#") {
			if i := strings.Index(t[1:], " #"); i >= 0 {
				t = strings.TrimRight(t[:i+1], " :")
			}
		} else if i := strings.Index(t, "#"); i >= 0 {
			t = strings.TrimSpace(t[:i])
		}
		out = append(out, indent+t)
	}
	return out
}

// TestSeedExamples reproduces, line by line, every HAProxy example of
// Pigsty's Service / Access page from the example inventory
// config/pigsty.yml (its pg-test is the page's 3-member cluster).
func TestSeedExamples(t *testing.T) {
	inv, err := topology.Load(filepath.Join("..", "..", "config", "pigsty.yml"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Compute(inv, nil, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	seeds, err := filepath.Glob(filepath.Join("testdata", "seed", "seed-*.txt"))
	if err != nil || len(seeds) != 5 {
		t.Fatalf("want the 5 seed examples in testdata/seed, got %d (%v)", len(seeds), err)
	}
	for _, path := range seeds {
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), "seed-"), ".txt")
		t.Run(name, func(t *testing.T) {
			seed, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var got string
			for _, c := range p.Clusters {
				for _, s := range c.Services {
					if s.Name != name {
						continue
					}
					got = haproxycfg.RenderListen(s)
					if strings.HasPrefix(string(seed), "#") {
						// The standby example also shows Pigsty's header,
						// as rendered on the HAProxy of 10.10.10.11.
						got = haproxycfg.Header(s, "10.10.10.11") + got
					}
				}
			}
			if got == "" {
				t.Fatalf("no service %s in the plan", name)
			}
			want := stripAnnotations(string(seed))
			lines := strings.Split(strings.TrimRight(got, "\n"), "\n")
			if len(lines) != len(want) {
				t.Fatalf("got %d lines, the seed has %d:\n%s", len(lines), len(want), got)
			}
			for i := range want {
				if lines[i] != want[i] {
					t.Errorf("line %d:\n got %q\nseed %q", i+1, lines[i], want[i])
				}
			}
		})
	}
}

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRenderTwins: render --layout twins prints the file a twins target
// writes: after pg-test's switchover (pg-test-2 leads) the replica service
// has every member twice, the new primary's normal twin inactive, the
// backup twins tracking the primary service's servers (UP on the primary
// only); HAProxy accepts it. The default stays Pigsty's view.
func TestRenderTwins(t *testing.T) {
	args := []string{"render", "--inventory", pgTest, "--dcs", "testdata/dcs/dcs-after-switchover.json", "--cluster", "pg-test"}
	code, out, errOut := runCmd(t, append(args, "--layout", "twins")...)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	section := func(name string) string {
		s := out[strings.Index(out, "\nbackend "+name+"\n"):]
		return s[:strings.Index(s, "\n\n")]
	}
	rep := section("pg-test-replica")
	ends := map[string]string{}
	for _, l := range strings.Split(rep, "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && f[0] == "server" {
			ends[f[1]] = strings.SplitN(l, "weight 100", 2)[1]
		}
	}
	want := map[string]string{"pg-test-1": "", "pg-test-1.backup": " backup", "pg-test-2": " disabled",
		"pg-test-2.backup": " backup", "pg-test-3": "", "pg-test-3.backup": " backup"}
	for _, m := range []string{"pg-test-1", "pg-test-2", "pg-test-3"} {
		if !strings.Contains(rep, "server "+m+".backup ") || !strings.Contains(rep, " track pg-test-primary/"+m+" ") {
			t.Errorf("%s.backup does not track pg-test-primary/%s:\n%s", m, m, rep)
		}
	}
	if len(ends) != len(want) {
		t.Errorf("replica backend servers %v, want %v:\n%s", ends, want, rep)
	}
	for n, w := range want {
		if ends[n] != w {
			t.Errorf("server %s ends %q, want %q:\n%s", n, ends[n], w, rep)
		}
	}
	if strings.Contains(section("pg-test-primary"), ".backup") {
		t.Error("the primary service (no role-dependent membership) got twins")
	}
	_, plain, _ := runCmd(t, args...)
	if strings.Contains(plain, ".backup") || strings.Contains(plain, " disabled") {
		t.Error("default render is not Pigsty's view")
	}
	if code, _, _ := runCmd(t, append(args, "--layout", "twin")...); code != 2 && code != 1 {
		t.Errorf("--layout twin: exit %d, want a usage error", code)
	}
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/haproxy"); statErr != nil {
			t.Skip("haproxy binary not installed (apt-get install haproxy); CI installs it and runs this check")
		}
		bin = "/usr/sbin/haproxy"
	}
	dir := t.TempDir()
	code, out, errOut = runCmd(t, append(args, "--layout", "twins", "--stats-socket", filepath.Join(dir, "a.sock"), "--server-state-file", "")...)
	if code != 0 {
		t.Fatalf("render: %d %s", code, errOut)
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if res, err := exec.CommandContext(ctx, bin, "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c rejected the twins config: %v\n%s", err, res)
	}
}

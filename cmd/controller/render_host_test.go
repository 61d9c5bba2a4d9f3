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

const haSimu = "testdata/render/ha-simu.yml"

// TestRenderHost: --host prints exactly what --cluster prints for the
// clusters Pigsty places on that node: its own cluster, or the clusters
// delegating to a pg_service_provider group the node is in.
func TestRenderHost(t *testing.T) {
	for host, clusters := range map[string]string{
		"10.10.10.10": "pg-meta",
		"10.10.10.42": "pg-test",
		"10.10.10.18": "pg-v12,pg-v13", // the proxy group carries both delegating clusters
		"10.10.10.19": "pg-v12,pg-v13",
	} {
		code, byHost, errOut := runCmd(t, "render", "--inventory", haSimu, "--host", host)
		if code != 0 || errOut != "" {
			t.Fatalf("--host %s: exit %d, stderr %q", host, code, errOut)
		}
		code, byCluster, errOut := runCmd(t, "render", "--inventory", haSimu, "--cluster", clusters)
		if code != 0 || errOut != "" {
			t.Fatalf("--cluster %s: exit %d, stderr %q", clusters, code, errOut)
		}
		if byHost != byCluster {
			t.Errorf("--host %s differs from --cluster %s:\n%s\n----\n%s", host, clusters, byHost, byCluster)
		}
	}
	// --cluster narrows --host.
	code, out, errOut := runCmd(t, "render", "--inventory", haSimu, "--host", "10.10.10.18", "--cluster", "pg-v13")
	if code != 0 || errOut != "" || strings.Contains(out, "pg-v12") || !strings.Contains(out, "frontend pg-v13-primary") {
		t.Errorf("--host with --cluster: exit %d, stderr %q\n%s", code, errOut, out)
	}
}

// TestRenderMultiClusterInventory: clusters that reuse 5433-5438 on nodes
// they never share (Pigsty's conf/ha/simu.yml and full.yml) no longer fail:
// render prints one haproxy.cfg per set of nodes, each headed by its nodes.
func TestRenderMultiClusterInventory(t *testing.T) {
	code, out, errOut := runCmd(t, "render", "--inventory", haSimu)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var headers []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "# haproxy.cfg ") && strings.Contains(line, " of ") {
			headers = append(headers, line)
		}
	}
	want := []string{
		"# haproxy.cfg 1 of 4: for 10.10.10.10, 10.10.10.11 (clusters pg-meta)",
		"# haproxy.cfg 2 of 4: for 10.10.10.18, 10.10.10.19 (clusters pg-v12, pg-v13)",
		"# haproxy.cfg 3 of 4: for 10.10.10.41, 10.10.10.42, 10.10.10.43 (clusters pg-test)",
		"# haproxy.cfg 4 of 4: for 10.10.10.45, 10.10.10.46 (clusters pg-src)",
	}
	if strings.Join(headers, "\n") != strings.Join(want, "\n") {
		t.Errorf("headers:\n%s\nwant\n%s", strings.Join(headers, "\n"), strings.Join(want, "\n"))
	}
	if n := strings.Count(out, "\nglobal\n"); n != 4 {
		t.Errorf("%d global sections, want 4", n)
	}
	// A single-cluster inventory prints one plain file, as before.
	code, out, _ = runCmd(t, "render", "--inventory", pgTest)
	if code != 0 || strings.Contains(out, "# haproxy.cfg 1 of") {
		t.Errorf("one cluster: exit %d, headed output", code)
	}
}

func TestRenderHostRejected(t *testing.T) {
	clash := "testdata/render/shared-node-clash.yml"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--inventory", haSimu, "--host", "10.10.10.99"}, haSimu + ": --host 10.10.10.99: no such host in the inventory"},
		{[]string{"--inventory", haSimu, "--host", "10.10.10.12"}, haSimu + ": --host 10.10.10.12: Pigsty places no cluster's services on this node (a member of pg-v12, whose services live on its pg_service_provider group)"},
		{[]string{"--inventory", haSimu, "--host", "10.10.10.41", "--cluster", "pg-meta"}, "--host 10.10.10.41 carries pg-test, none of --cluster"},
		{[]string{"--inventory", haSimu, "--cluster", "pg-meta,pg-test"}, "bind *:5433 collides with service pg-meta-primary"},
		// Clusters placed on the same node still collide, by --host or not.
		{[]string{"--inventory", clash, "--host", "10.10.10.11"}, clash + ": services of clusters placed on the same node collide: host 10.10.10.11 carries clusters pg-meta and pg-v12: service pg-meta-primary binds *:5433 and service pg-v12-primary binds *:5433"},
		{[]string{"--inventory", clash}, "host 10.10.10.10 carries clusters pg-meta and pg-v12"},
	} {
		code, out, errOut := runCmd(t, append([]string{"render"}, tc.args...)...)
		if code != 1 || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("render %v: exit %d, stdout %d bytes, stderr %q; want exit 1 and %q", tc.args, code, len(out), errOut, tc.want)
		}
	}
}

// TestRenderHostAcceptedByHAProxy runs `haproxy -c` on a provider node's file.
func TestRenderHostAcceptedByHAProxy(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/haproxy"); statErr != nil {
			t.Skip("haproxy binary not installed (apt-get install haproxy); CI installs it and runs this test")
		}
		bin = "/usr/sbin/haproxy"
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "server-state")
	if err := os.WriteFile(state, []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"10.10.10.18", "10.10.10.41"} {
		code, out, errOut := runCmd(t, "render", "--inventory", haSimu, "--host", host,
			"--stats-socket", filepath.Join(dir, "admin.sock"), "--server-state-file", state)
		if code != 0 {
			t.Fatalf("render: exit %d: %s", code, errOut)
		}
		cfg := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(cfg, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := exec.CommandContext(ctx, bin, "-c", "-f", cfg).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("haproxy -c rejected the file for %s: %v\n%s", host, err, res)
		}
	}
}

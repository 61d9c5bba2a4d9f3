package app

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
)

// TestStatusNeverWaitsOnFrozenEtcd: with the election on and a real etcd
// process frozen by SIGSTOP (connections open, nothing answers), /status,
// /readyz, /metrics and /healthz still answer at once (issue 12 row 12).
func TestStatusNeverWaitsOnFrozenEtcd(t *testing.T) {
	etcd := etcdtest.StartProcess(t)
	cli := etcd.Client(t)
	patroniKeys(t, cli, "pg-test-1", 1)
	api := dpapitest.NewServer(t)
	dir := t.TempDir()
	inv := filepath.Join(dir, "pigsty.yml")
	if err := os.WriteFile(inv, []byte(inventory), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Inventory: inv, Listen: "127.0.0.1:0", Etcd: config.Etcd{Endpoints: []string{etcd.ClientURL}},
		DataPlaneAPI: []config.DataPlaneAPI{{URL: api.URL()}},
		Election:     config.Election{Enabled: true, TTL: 3, Identity: "frozen-test"}}
	cfg.Controller.Debounce.Duration = 5 * time.Millisecond
	addr := startServe(t, cfg)
	eventually(t, "leader and in sync", func() bool {
		st := getStatus(t, addr)
		return st.Ready && st.Leader != nil && st.Leader.IsLeader
	})

	etcd.Freeze(t)
	defer etcd.Thaw(t)
	hc := &http.Client{Timeout: 5 * time.Second}
	// Long enough for the lease deadline to pass and the watch to notice.
	until := time.Now().Add(6 * time.Second)
	var worst time.Duration
	for n := 0; time.Now().Before(until); n++ {
		for _, path := range []string{"/status", "/readyz", "/metrics", "/healthz"} {
			start := time.Now()
			resp, err := hc.Get("http://" + addr + path)
			if err != nil {
				t.Fatalf("GET %s with etcd frozen: %v (after %s)", path, err, time.Since(start))
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if d := time.Since(start); d > worst {
				worst = d
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	// An endpoint that waited on the frozen etcd would take an etcd call's
	// timeout (seconds: 6 s median before the fix); the bound leaves room for
	// a loaded CI machine without letting such a wait through.
	if worst > 1500*time.Millisecond {
		t.Errorf("slowest status request with etcd frozen took %s: it waited on etcd", worst)
	}
	t.Logf("slowest status request with etcd frozen: %s", worst)
	// The frozen etcd is visible: no longer the leader (fencing deadline
	// passed), and not ready.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		st := getStatus(t, addr)
		if !st.Ready && st.Leader != nil && !st.Leader.IsLeader {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("status with etcd frozen: ready=%v leader=%+v, want not ready and not leading", st.Ready, st.Leader)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

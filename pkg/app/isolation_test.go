package app

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
)

// isolationInventory: pg-test with the default services, and pg-live whose
// replica selector uses a live field that fails on a member Patroni does
// not report.
const isolationInventory = inventory + `    pg-live:
      hosts:
        127.0.0.21: { pg_seq: 1, pg_role: primary }
        127.0.0.22: { pg_seq: 2, pg_role: replica }
      vars:
        pg_cluster: pg-live
        pg_default_services:
          - { name: primary, port: 6433, ip: 127.0.0.20, dest: default, check: /primary, selector: "[]" }
          - { name: replica, port: 6434, ip: 127.0.0.20, dest: default, check: /read-only, selector: "[? starts_with(patroni_state,'run')]" }
`

// TestPlanFailureOfOneClusterThroughRealEtcd: real etcd, the controller
// binary's Serve, the Data Plane API double. Deleting one member key of
// pg-live makes its plan fail: pg-live keeps its services, /readyz and
// /metrics name it, and pg-test's switchover still reaches HAProxy
// (issue 12 row 5).
func TestPlanFailureOfOneClusterThroughRealEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	patroniKeys(t, cli, "pg-test-1", 1)
	etcdtest.PutPatroni(t, cli, "pg-live", []string{"127.0.0.21", "127.0.0.22"}, "pg-live-1", 1)
	api := dpapitest.NewServer(t)
	dir := t.TempDir()
	inv := filepath.Join(dir, "pigsty.yml")
	if err := os.WriteFile(inv, []byte(isolationInventory), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Inventory: inv, Listen: "127.0.0.1:0", Etcd: config.Etcd{Endpoints: []string{srv.ClientURL}},
		DataPlaneAPI: []config.DataPlaneAPI{{URL: api.URL()}}}
	cfg.Controller.Debounce.Duration = 5 * time.Millisecond
	addr := startServe(t, cfg)
	eventually(t, "both clusters applied, ready", func() bool {
		return getStatus(t, addr).Ready && backupsIn(api, "pg-live-replica") == "pg-live-1:false,pg-live-2:false" &&
			backupsIn(api, "pg-test-replica") == "pg-test-1:true,pg-test-2:false,pg-test-3:false"
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Delete(ctx, "/pg/pg-live/members/pg-live-2"); err != nil {
		t.Fatal(err)
	}
	patroniKeys(t, cli, "pg-test-2", 2)
	eventually(t, "pg-test's switchover applied while pg-live's plan fails", func() bool {
		return backupsIn(api, "pg-test-replica") == "pg-test-1:false,pg-test-2:true,pg-test-3:false"
	})
	if got := backupsIn(api, "pg-live-replica"); got != "pg-live-1:false,pg-live-2:false" {
		t.Errorf("pg-live-replica = %s, want its last good servers", got)
	}
	var ready struct {
		Ready    bool     `json:"ready"`
		NotReady []string `json:"not_ready"`
	}
	eventually(t, "/readyz names pg-live", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(body, &ready)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "cluster pg-live: plan failed")
	})
	m := scrape(t, addr)
	if m[`pgsvc_cluster_plan_failed{cluster="pg-live"}`] != 1 || m[`pgsvc_cluster_plan_failed{cluster="pg-test"}`] != 0 {
		t.Errorf("pgsvc_cluster_plan_failed: pg-live %v, pg-test %v; want 1, 0",
			m[`pgsvc_cluster_plan_failed{cluster="pg-live"}`], m[`pgsvc_cluster_plan_failed{cluster="pg-test"}`])
	}
	st := getStatus(t, addr)
	for _, cl := range st.Clusters {
		if cl.Name == "pg-test" && cl.Leader != "pg-test-2" {
			t.Errorf("pg-test leader in status %q, want pg-test-2", cl.Leader)
		}
		if cl.Name == "pg-live" && !strings.Contains(cl.PlanError, "starts_with") {
			t.Errorf("pg-live plan_error %q does not give the reason", cl.PlanError)
		}
	}

	// The member is back: ready again, nothing reported.
	etcdtest.PutPatroni(t, cli, "pg-live", []string{"127.0.0.21", "127.0.0.22"}, "pg-live-1", 1)
	eventually(t, "ready once pg-live plans again", func() bool { return getStatus(t, addr).Ready })
	if m := scrape(t, addr); m[`pgsvc_cluster_plan_failed{cluster="pg-live"}`] != 0 {
		t.Error("pgsvc_cluster_plan_failed still 1 for pg-live")
	}
}

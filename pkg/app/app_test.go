package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/controller"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
)

const inventory = `
all:
  children:
    pg-test:
      hosts:
        127.0.0.11: { pg_seq: 1, pg_role: primary }
        127.0.0.12: { pg_seq: 2, pg_role: replica }
        127.0.0.13: { pg_seq: 3, pg_role: replica, pg_offline_query: true }
      vars: { pg_cluster: pg-test }
`

// patroniKeys writes pg-test's Patroni keys on 127.0.0.11-13 with leader as the primary.
func patroniKeys(t testing.TB, cli *clientv3.Client, leader string, timeline int) {
	t.Helper()
	etcdtest.PutPatroni(t, cli, "pg-test", []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}, leader, timeline)
}

// startServe runs Serve in the background until the test ends and returns
// the status address.
func startServe(t *testing.T, cfg *config.Config) string {
	t.Helper()
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), ready) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not stop within 10s of cancel")
		}
	})
	select {
	case addr := <-ready:
		return addr
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not listen")
	}
	return ""
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func getStatus(t *testing.T, addr string) controller.Status {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st controller.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// backupsIn returns "name:backup" pairs of one backend of the double.
func backupsIn(s *dpapitest.Server, backend string) string {
	for _, b := range s.Config().Backends {
		if b.Model.Name != backend {
			continue
		}
		var out []string
		for _, sv := range b.Servers {
			out = append(out, fmt.Sprintf("%s:%t", sv.Name, sv.Backup == "enabled"))
		}
		return strings.Join(out, ",")
	}
	return ""
}

// TestSwitchoverThroughDataPlaneAPI: a switchover written into a real etcd
// reaches the Data Plane API (double checked against the real 2.9.9
// exchanges) as one transaction with the new backup flags.
func TestSwitchoverThroughDataPlaneAPI(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	patroniKeys(t, cli, "pg-test-1", 1)
	api := dpapitest.NewServer(t)
	dir := t.TempDir()
	inv := filepath.Join(dir, "pigsty.yml")
	if err := os.WriteFile(inv, []byte(inventory), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Inventory: inv, Listen: "127.0.0.1:0", Etcd: config.Etcd{Endpoints: []string{srv.ClientURL}},
		DataPlaneAPI: []config.DataPlaneAPI{{URL: api.URL()}}}
	cfg.Controller.Debounce.Duration = 5 * time.Millisecond
	addr := startServe(t, cfg)

	eventually(t, "initial services created", func() bool {
		return backupsIn(api, "pg-test-replica") == "pg-test-1:true,pg-test-2:false,pg-test-3:false"
	})
	commits := api.Count(http.MethodPut, "/transactions/")
	eventually(t, "status in sync", func() bool { st := getStatus(t, addr); return st.Ready })

	patroniKeys(t, cli, "pg-test-2", 2)
	eventually(t, "replica service follows the switchover", func() bool {
		return backupsIn(api, "pg-test-replica") == "pg-test-1:false,pg-test-2:true,pg-test-3:false"
	})
	eventually(t, "status shows the new leader, in sync", func() bool {
		st := getStatus(t, addr)
		return st.Ready && len(st.Clusters) == 1 && st.Clusters[0].Leader == "pg-test-2" && st.Targets[0].InSync
	})
	if got := api.Count(http.MethodPut, "/transactions/") - commits; got != 1 {
		t.Errorf("switchover took %d commits, want exactly 1 transaction", got)
	}
	if api.OpenTransactions() != 0 {
		t.Errorf("%d transactions left open", api.OpenTransactions())
	}
	st := getStatus(t, addr)
	if strings.Contains(st.Targets[0].Name, "adminpwd") {
		t.Errorf("status leaks the API password: %s", st.Targets[0].Name)
	}
	var applied int
	for _, e := range st.History {
		if e.Kind == "applied" {
			applied++
		}
	}
	if applied < 2 {
		t.Errorf("history has %d applied decisions, want >= 2", applied)
	}

	// Metrics after the scripted switchover.
	m := scrape(t, addr)
	for _, want := range []string{
		`pgsvc_convergence_seconds_count{target="` + st.Targets[0].Name + `"}`,
		`pgsvc_reloads_total{target="` + st.Targets[0].Name + `"}`,
		`pgsvc_applied_changes_total{kind="update_server",target="` + st.Targets[0].Name + `"}`,
		`pgsvc_dcs_snapshots_total{namespace="/pg"}`,
	} {
		if v, ok := m[want]; !ok || v < 1 {
			t.Errorf("metric %s = %v (present %v), want >= 1", want, v, ok)
		}
	}
	for _, want := range []string{`pgsvc_target_in_sync{target="` + st.Targets[0].Name + `"}`, `pgsvc_dcs_connected{namespace="/pg"}`, "pgsvc_ready"} {
		if m[want] != 1 {
			t.Errorf("metric %s = %v, want 1", want, m[want])
		}
	}
}

// scrape reads /metrics into "name{labels}" -> value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

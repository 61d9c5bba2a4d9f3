package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/haproxy"
)

// hostileInventory: pg-test on 127.0.1.11-13, services on 127.0.1.10, the
// primary service selected by role (so a wrong leader would empty it).
const hostileInventory = `
all:
  children:
    pg-test:
      hosts:
        127.0.1.11: { pg_seq: 1, pg_role: primary }
        127.0.1.12: { pg_seq: 2, pg_role: replica }
        127.0.1.13: { pg_seq: 3, pg_role: replica }
      vars:
        pg_cluster: pg-test
        pg_port: %d
        pgbouncer_port: %d
        patroni_port: %d
        pg_default_services:
          - { name: primary, port: %d, ip: 127.0.1.10, dest: default, check: /primary, selector: "[? pg_role == ` + "`primary`" + ` ]", options: "%s" }
          - { name: replica, port: %d, ip: 127.0.1.10, dest: default, check: /read-only, selector: "[]", backup: "[? pg_role == ` + "`primary`" + ` ]", options: "%s" }
`

// TestHostileDCSNeverReachesHAProxy (issue 12 rows 1, 7, 8): real etcd, a
// real HAProxy 2.6 driven directly and through each real Data Plane API
// (forEachDriver), include_unknown on.
//   - member keys with a name or address HAProxy would read as config (a
//     space, '#', '_') are skipped with a warning and never reach HAProxy;
//     a well-formed unknown member still does;
//   - a leader key naming no member changes nothing: the last known leader
//     keeps the primary service;
//   - deleting every key of the cluster keeps the last known roles (not the
//     inventory's), reported stale in status and metrics.
func TestHostileDCSNeverReachesHAProxy(t *testing.T) { forEachDriver(t, testHostileDCS) }

// testHostileDCS runs TestHostileDCSNeverReachesHAProxy through the direct
// driver (apiBin "") or the real Data Plane API apiBin.
func testHostileDCS(t *testing.T, bin, apiBin string) {
	pgPort, bouncerPort, restPort := freePort(t), freePort(t), freePort(t)
	primaryPort, replicaPort := freePort(t), freePort(t)
	members := map[string]*fakeMember{}
	for i, role := range []string{"primary", "replica", "replica"} {
		name := fmt.Sprintf("pg-test-%d", i+1)
		members[name] = startFakeMember(t, name, fmt.Sprintf("127.0.1.1%d", i+1), pgPort, bouncerPort, restPort, role)
	}
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	patroniKeys(t, cli, "pg-test-1", 1)

	dir := t.TempDir()
	text := fmt.Sprintf(hostileInventory, pgPort, bouncerPort, restPort, primaryPort, fastChecks, replicaPort, fastChecks)
	cfg := &config.Config{Listen: "127.0.0.1:0", Etcd: config.Etcd{Endpoints: []string{srv.ClientURL}}, IncludeUnknown: true}
	rt := startTarget(t, cfg, dir, bin, apiBin, text, 60*time.Second)
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	cfg.Controller.Debounce.Duration = 5 * time.Millisecond
	addr := startServe(t, cfg)
	// live lists "name@addr:backup" of a backend, as the running HAProxy has it.
	live := func(backend string) string {
		rows, err := rt.ShowStat(context.Background())
		if err != nil {
			return "error: " + err.Error()
		}
		var out []string
		for _, r := range rows {
			if r.Proxy == backend && r.Type == haproxy.TypeServer {
				out = append(out, fmt.Sprintf("%s@%s:%t", r.Name, r.Addr, r.Backup))
			}
		}
		return strings.Join(out, ",")
	}
	warnings := func() string {
		st := getStatus(t, addr)
		if len(st.Clusters) == 0 {
			return ""
		}
		return strings.Join(st.Clusters[0].Warnings, "\n")
	}
	primary := fmt.Sprintf("127.0.1.10:%d", primaryPort)
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(cfgPath)
			t.Logf("haproxy.cfg at failure:\n%s\nwarnings:\n%s", b, warnings())
		}
	}()
	eventually(t, "initial backends", func() bool {
		return live("pg-test-primary") == "pg-test-1@127.0.1.11:false" &&
			live("pg-test-replica") == "pg-test-1@127.0.1.11:true,pg-test-2@127.0.1.12:false,pg-test-3@127.0.1.13:false"
	})
	eventually(t, "writes reach pg-test-1", func() bool { return whoAnswers(primary) == "pg-test-1" })

	put := func(key, val string) {
		t.Helper()
		pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer pcancel()
		if _, err := cli.Put(pctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	member := func(host string) string {
		return fmt.Sprintf(`{"conn_url":"postgres://%s:5432/postgres","api_url":"http://%s:8008/patroni","state":"running","role":"replica","xlog_location":71531312,"timeline":1}`, host, host)
	}

	// Row 1: hostile member keys next to a well-formed unknown member.
	put("/pg/pg-test/members/pwn 127.4.0.99:5432 #", member("127.4.0.99"))
	put("/pg/pg-test/members/evil-1", member("bad_host.example"))
	put("/pg/pg-test/members/evil-2", `{"conn_url":"postgres://127.0.1.14:5432/postgres","api_url":"http://127.4.0.99 #:8008/patroni","state":"running","role":"replica"}`)
	put("/pg/pg-test/members/pg-test-9", member("127.0.1.14"))
	eventually(t, "the well-formed unknown member is served", func() bool {
		return live("pg-test-replica") == "pg-test-1@127.0.1.11:true,pg-test-2@127.0.1.12:false,pg-test-3@127.0.1.13:false,pg-test-9@127.0.1.14:false"
	})
	w := warnings()
	for _, want := range []string{"pwn 127.4.0.99:5432 #", "evil-1", "evil-2"} {
		if !strings.Contains(w, want) {
			t.Errorf("no warning about member key %q; warnings:\n%s", want, w)
		}
	}
	cfgText, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"127.4.0.99", "pwn", "bad_host", "evil"} {
		if strings.Contains(string(cfgText), bad) {
			t.Errorf("haproxy.cfg contains %q", bad)
		}
	}
	rows, err := rt.ShowStat(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Addr == "127.4.0.99" || strings.Contains(r.Name, "pwn") || strings.HasPrefix(r.Name, "evil") {
			t.Errorf("the running HAProxy has a hostile server: %+v", r)
		}
	}

	// Row 7: a leader key naming no member changes nothing.
	for _, ghost := range []string{"ghost-9", "\x00\xff garbage #"} {
		put("/pg/pg-test/leader", ghost)
		eventually(t, "warning about the ghost leader", func() bool { return strings.Contains(warnings(), "no known member") })
		if got := live("pg-test-primary"); got != "pg-test-1@127.0.1.11:false" {
			t.Errorf("leader %q: primary backend became %q", ghost, got)
		}
		if got := live("pg-test-replica"); !strings.HasPrefix(got, "pg-test-1@127.0.1.11:true,") {
			t.Errorf("leader %q: replica backend became %q (the primary must stay backup)", ghost, got)
		}
		if who := whoAnswers(primary); who != "pg-test-1" {
			t.Errorf("leader %q: writes reached %q", ghost, who)
		}
		put("/pg/pg-test/leader", "pg-test-1")
		eventually(t, "ghost warning gone", func() bool { return !strings.Contains(warnings(), "no known member") })
	}

	// Switchover to pg-test-2, so the inventory roles are now wrong.
	members["pg-test-1"].setRole("replica")
	members["pg-test-2"].setRole("primary")
	patroniKeys(t, cli, "pg-test-2", 2)
	eventually(t, "switchover applied", func() bool {
		return live("pg-test-primary") == "pg-test-2@127.0.1.12:false" &&
			strings.HasPrefix(live("pg-test-replica"), "pg-test-1@127.0.1.11:false,pg-test-2@127.0.1.12:true,")
	})
	eventually(t, "ready after the switchover", func() bool { return getStatus(t, addr).Ready })

	// Row 8: every key of the cluster deleted.
	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = cli.Delete(dctx, "/pg/pg-test/", clientv3.WithPrefix())
	dcancel()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "status reports the cluster stale", func() bool {
		st := getStatus(t, addr)
		return !st.Ready && strings.HasPrefix(st.Clusters[0].Frozen, "stale: every DCS key")
	})
	if got := live("pg-test-primary"); got != "pg-test-2@127.0.1.12:false" {
		t.Errorf("after the keys were deleted the primary backend became %q (inventory roles re-applied?)", got)
	}
	if who := whoAnswers(primary); who != "pg-test-2" {
		t.Errorf("after the keys were deleted writes reached %q", who)
	}
	if m := metricsText(t, addr); !strings.Contains(m, `pgsvc_cluster_frozen{cluster="pg-test"} 1`) {
		t.Errorf("metrics do not report pg-test frozen")
	}
	patroniKeys(t, cli, "pg-test-2", 2)
	eventually(t, "ready again once the keys are back", func() bool { return getStatus(t, addr).Ready })
	if got := live("pg-test-primary"); got != "pg-test-2@127.0.1.12:false" {
		t.Errorf("primary backend %q after the keys came back", got)
	}
}

func metricsText(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

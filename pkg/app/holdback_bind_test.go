package app

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/haproxy"
)

// pgTwo is a second cluster for directInventory, on 127.0.1.21-22 with
// services on 127.0.1.20: port %d (primary) and %d (replica).
const pgTwo = `    pg-two:
      hosts:
        127.0.1.21: { pg_seq: 1, pg_role: primary }
        127.0.1.22: { pg_seq: 2, pg_role: replica }
      vars:
        pg_cluster: pg-two
        pg_default_services:
          - { name: primary, port: %d, ip: 127.0.1.20, dest: postgres, check: /primary, selector: "[]" }
          - { name: replica, port: %d, ip: 127.0.1.20, dest: postgres, check: /read-only, selector: "[]", backup: "[? pg_role == ` + "`primary`" + ` ]" }
`

// TestBindFailureHoldsBackOneCluster: real etcd, real HAProxy 2.6 and
// `controller run`'s Serve, through the direct driver and through the real
// Data Plane API (2.9.x and 3.x, each where its binary is given). pg-two's
// primary service binds an address something else holds: pg-two is held
// back (named with its service in status and /readyz), pg-test is applied
// and follows a switchover; once the address is free pg-two is applied on
// a later retry (issue 12 row 6). The direct driver probes the bind before
// its reload; through the API, whose `haproxy -c` cannot see it, HAProxy's
// master refuses the file at reload and the controller puts the running
// file back.
func TestBindFailureHoldsBackOneCluster(t *testing.T) { forEachDriver(t, testBindFailure) }

// testBindFailure runs TestBindFailureHoldsBackOneCluster through the
// direct driver (apiBin "") or the real Data Plane API apiBin.
func testBindFailure(t *testing.T, bin, apiBin string) {
	pgPort, bouncerPort, restPort := freePort(t), freePort(t), freePort(t)
	primaryPort, replicaPort, offlinePort := freePort(t), freePort(t), freePort(t)
	twoPrimary, twoReplica := freePort(t), freePort(t)
	members := map[string]*fakeMember{}
	for i, role := range []string{"primary", "replica", "replica"} {
		name := fmt.Sprintf("pg-test-%d", i+1)
		members[name] = startFakeMember(t, name, fmt.Sprintf("127.0.1.1%d", i+1), pgPort, bouncerPort, restPort, role)
	}
	// Something else holds pg-two's primary address.
	squatter, err := net.Listen("tcp", fmt.Sprintf("127.0.1.20:%d", twoPrimary))
	if err != nil {
		t.Skipf("cannot listen on 127.0.1.20: %v", err)
	}
	defer squatter.Close()

	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	patroniKeys(t, cli, "pg-test-1", 1)
	etcdtest.PutPatroni(t, cli, "pg-two", []string{"127.0.1.21", "127.0.1.22"}, "pg-two-1", 1)

	dir := t.TempDir()
	text := fmt.Sprintf(directInventory, pgPort, bouncerPort, restPort, primaryPort, fastChecks, replicaPort, fastChecks, offlinePort, fastChecks) +
		fmt.Sprintf(pgTwo, twoPrimary, twoReplica)
	cfg := &config.Config{Listen: "127.0.0.1:0", Etcd: config.Etcd{Endpoints: []string{srv.ClientURL}}}
	rt := startTarget(t, cfg, dir, bin, apiBin, text, 20*time.Second)
	cfg.Controller.Debounce.Duration = 5 * time.Millisecond
	addr := startServe(t, cfg)
	live := func(backend string) string {
		rows, err := rt.ShowStat(context.Background())
		if err != nil {
			return "error: " + err.Error()
		}
		var out []string
		for _, r := range rows {
			if r.Proxy == backend && r.Type == haproxy.TypeServer {
				out = append(out, fmt.Sprintf("%s:%t", r.Name, r.Backup))
			}
		}
		return strings.Join(out, ",")
	}

	eventually(t, "pg-test applied while pg-two is held back", func() bool {
		return live("pg-test-replica") == "pg-test-1:true,pg-test-2:false,pg-test-3:false" && live("pg-two-primary") == ""
	})
	eventually(t, "status names pg-two and its service as held back", func() bool {
		st := getStatus(t, addr)
		ts := st.Targets[0]
		// "applying" while pg-two's retry (backoff) is under way.
		return !st.Ready && (ts.State == "partial" || ts.State == "applying") && len(ts.HeldBack) == 1 && ts.HeldBack[0].Cluster == "pg-two" &&
			strings.Contains(ts.HeldBack[0].Error, "service pg-two-primary") && strings.Contains(ts.HeldBack[0].Error, "cannot listen") &&
			strings.Contains(strings.Join(st.NotReady, "\n"), "cluster pg-two held back")
	})

	// pg-test's switchover goes through while pg-two stays held back.
	members["pg-test-1"].setRole("replica")
	members["pg-test-2"].setRole("primary")
	patroniKeys(t, cli, "pg-test-2", 2)
	eventually(t, "pg-test follows its switchover", func() bool {
		return live("pg-test-replica") == "pg-test-1:false,pg-test-2:true,pg-test-3:false"
	})
	eventually(t, "writes reach pg-test-2", func() bool { return whoAnswers(fmt.Sprintf("127.0.1.10:%d", primaryPort)) == "pg-test-2" })
	st := getStatus(t, addr)
	if len(st.Targets[0].HeldBack) != 1 || live("pg-two-primary") != "" {
		t.Fatalf("after the switchover: held back %+v, pg-two-primary running %q", st.Targets[0].HeldBack, live("pg-two-primary"))
	}
	failures := st.Targets[0].HeldBack[0].Failures

	// The address is free again: pg-two is applied at its next retry.
	squatter.Close()
	eventually(t, "pg-two applied once its address is free", func() bool {
		return live("pg-two-primary") == "pg-two-1:false,pg-two-2:false" && live("pg-two-replica") == "pg-two-1:true,pg-two-2:false"
	})
	eventually(t, "ready and in sync, nothing held back", func() bool {
		st := getStatus(t, addr)
		return st.Ready && st.Targets[0].InSync && len(st.Targets[0].HeldBack) == 0
	})
	if live("pg-test-replica") != "pg-test-1:false,pg-test-2:true,pg-test-3:false" {
		t.Errorf("pg-test changed when pg-two was applied: %s", live("pg-test-replica"))
	}
	t.Logf("pg-two refused %d times before its address was freed (backoff)", failures)
}

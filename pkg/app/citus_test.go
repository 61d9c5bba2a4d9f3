package app

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/haproxy"
)

// citusInventory is Pigsty v4's conf/ha/citus.yml layout on loopback: one
// group pg-citus whose hosts carry pg_cluster and pg_group (coordinator group
// 0 = pg-citus1 on 127.0.3.11-12, worker group 1 = pg-citus2 on
// 127.0.3.21-22). Both clusters' services share one HAProxy here, so each
// cluster's members carry its own service ports (a cluster setting set per
// host, the same on every member).
const citusInventory = `
all:
  children:
    pg-citus:
      hosts:
        127.0.3.11: { pg_group: 0, pg_cluster: pg-citus1, pg_seq: 1, pg_role: primary, pg_default_services: &svc1 [
          { name: primary, port: %[4]d, ip: 127.0.3.10, dest: postgres, check: /primary, selector: "[]", options: "%[8]s" },
          { name: replica, port: %[5]d, ip: 127.0.3.10, dest: postgres, check: /read-only, selector: "[]", backup: "[? pg_role == ` + "`primary`" + ` ]", options: "%[8]s" } ] }
        127.0.3.12: { pg_group: 0, pg_cluster: pg-citus1, pg_seq: 2, pg_role: replica, pg_default_services: *svc1 }
        127.0.3.21: { pg_group: 1, pg_cluster: pg-citus2, pg_seq: 1, pg_role: primary, pg_default_services: &svc2 [
          { name: primary, port: %[6]d, ip: 127.0.3.10, dest: postgres, check: /primary, selector: "[]", options: "%[8]s" },
          { name: replica, port: %[7]d, ip: 127.0.3.10, dest: postgres, check: /read-only, selector: "[]", backup: "[? pg_role == ` + "`primary`" + ` ]", options: "%[8]s" } ] }
        127.0.3.22: { pg_group: 1, pg_cluster: pg-citus2, pg_seq: 2, pg_role: replica, pg_default_services: *svc2 }
      vars:
        pg_mode: citus
        pg_shard: pg-citus
        pg_port: %[1]d
        pgbouncer_port: %[2]d
        patroni_port: %[3]d
`

// putCitusGroup writes one Citus group's keys as Patroni does with
// citus.group set: /pg/<scope>/<group>/{members/<name>,leader}.
func putCitusGroup(t *testing.T, cli *clientv3.Client, group int, cluster string, hosts []string, leader string, timeline int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	prefix := fmt.Sprintf("/pg/pg-citus/%d/", group)
	for i, h := range hosts {
		name := fmt.Sprintf("%s-%d", cluster, i+1)
		role := "replica"
		if name == leader {
			role = "primary"
		}
		v := fmt.Sprintf(`{"conn_url":"postgres://%s:5432/postgres","api_url":"http://%s:8008/patroni","state":"running","role":%q,"version":"4.0.4","xlog_location":71531312,"timeline":%d}`, h, h, role, timeline)
		if _, err := cli.Put(ctx, prefix+"members/"+name, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, prefix+"leader", leader); err != nil {
		t.Fatal(err)
	}
}

// TestCitusGroupSwitchoverThroughHAProxy: real etcd + a real HAProxy 2.6
// (direct driver), Citus-shaped keys. A switchover inside worker group 1
// moves pg-citus2's services and leaves the coordinator's pg-citus1 alone.
func TestCitusGroupSwitchoverThroughHAProxy(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not installed: this test runs in CI, where .ci/run installs Debian's haproxy 2.6")
	}
	pgPort, bouncerPort, restPort := freePort(t), freePort(t), freePort(t)
	p1, r1, p2, r2 := freePort(t), freePort(t), freePort(t), freePort(t)
	hosts := map[string][]string{"pg-citus1": {"127.0.3.11", "127.0.3.12"}, "pg-citus2": {"127.0.3.21", "127.0.3.22"}}
	members := map[string]*fakeMember{}
	for cluster, hs := range hosts {
		for i, h := range hs {
			name := fmt.Sprintf("%s-%d", cluster, i+1)
			role := "replica"
			if i == 0 {
				role = "primary"
			}
			members[name] = startFakeMember(t, name, h, pgPort, bouncerPort, restPort, role)
		}
	}

	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	putCitusGroup(t, cli, 0, "pg-citus1", hosts["pg-citus1"], "pg-citus1-1", 1)
	putCitusGroup(t, cli, 1, "pg-citus2", hosts["pg-citus2"], "pg-citus2-1", 1)

	dir := t.TempDir()
	text := fmt.Sprintf(citusInventory, pgPort, bouncerPort, restPort, p1, r1, p2, r2, fastChecks)
	inv, d, rt := startDirectHAProxy(t, dir, bin, text, 20*time.Second)

	cfg := &config.Config{Inventory: inv, Listen: "127.0.0.1:0", Etcd: config.Etcd{Endpoints: []string{srv.ClientURL}}, Direct: []config.Direct{d}}
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
	write1, write2 := fmt.Sprintf("127.0.3.10:%d", p1), fmt.Sprintf("127.0.3.10:%d", p2)

	eventually(t, "both groups' backends live in HAProxy", func() bool {
		return live("pg-citus1-replica") == "pg-citus1-1:true,pg-citus1-2:false" &&
			live("pg-citus2-replica") == "pg-citus2-1:true,pg-citus2-2:false"
	})
	eventually(t, "writes reach each group's primary", func() bool {
		return whoAnswers(write1) == "pg-citus1-1" && whoAnswers(write2) == "pg-citus2-1"
	})
	eventually(t, "target in sync", func() bool { return getStatus(t, addr).Ready })
	switchAt := time.Now()

	// Switchover inside worker group 1, as Patroni does it: roles flip, then the keys.
	members["pg-citus2-1"].setRole("replica")
	members["pg-citus2-2"].setRole("primary")
	putCitusGroup(t, cli, 1, "pg-citus2", hosts["pg-citus2"], "pg-citus2-2", 2)

	eventually(t, "pg-citus2's replica service follows the group 1 switchover", func() bool {
		return live("pg-citus2-replica") == "pg-citus2-1:false,pg-citus2-2:true"
	})
	eventually(t, "pg-citus2's writes reach pg-citus2-2", func() bool { return whoAnswers(write2) == "pg-citus2-2" })
	if got := live("pg-citus1-replica"); got != "pg-citus1-1:true,pg-citus1-2:false" {
		t.Errorf("the coordinator group's replica service changed: %s", got)
	}
	if got := whoAnswers(write1); got != "pg-citus1-1" {
		t.Errorf("the coordinator group's writes went to %q, want pg-citus1-1", got)
	}
	eventually(t, "in sync after the switchover", func() bool { return getStatus(t, addr).Ready })
	st := getStatus(t, addr)
	leaders := map[string]string{}
	for _, c := range st.Clusters {
		leaders[c.Name] = c.Leader
	}
	if leaders["pg-citus1"] != "pg-citus1-1" || leaders["pg-citus2"] != "pg-citus2-2" {
		t.Errorf("status leaders %v, want pg-citus1-1 and pg-citus2-2", leaders)
	}
	// Every change applied since the switchover is to pg-citus2's services.
	applied := 0
	for _, ev := range st.History {
		if ev.Kind != "applied" || ev.At.Before(switchAt) {
			continue
		}
		for _, ch := range ev.Changes {
			applied++
			if !strings.HasPrefix(ch.Backend, "pg-citus2-") {
				t.Errorf("a change outside worker group 1 after its switchover: %+v", ch)
			}
		}
	}
	if applied == 0 {
		t.Error("no applied change recorded after the switchover")
	}
}

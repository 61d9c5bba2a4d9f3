package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// TestFailsafeBadConfigLeaseExpiryNotFenced: pg-test under failsafe_mode,
// read through a live Watcher; its config key turns to bad JSON, then
// pg-test-1's lease (leader and member keys) expires. Patroni keeps its
// last valid dynamic config, failsafe_mode included, so the expiry is no
// release: pg-test-1 is not fenced (its /primary decides, as in
// TestFenceReleasedLeader's failsafe case), and the bad key is a warning.
func TestFailsafeBadConfigLeaseExpiryNotFenced(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	put := func(key, value string, opts ...clientv3.OpOption) {
		t.Helper()
		if _, err := cli.Put(ctx, key, value, opts...); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	put("/pg/pg-test/config", `{"ttl":30,"loop_wait":10,"failsafe_mode":true}`)
	for seq := 1; seq <= 3; seq++ {
		role, opts := "replica", []clientv3.OpOption(nil)
		if seq == 1 {
			role, opts = "master", []clientv3.OpOption{clientv3.WithLease(lease.ID)}
		}
		put(fmt.Sprintf("/pg/pg-test/members/pg-test-%d", seq), fmt.Sprintf(`{"conn_url":"postgres://127.0.0.1%d:5432/postgres",`+
			`"api_url":"http://127.0.0.1%d:8008/patroni","state":"running","role":%q,"xlog_location":1,"timeline":1}`, seq, seq, role), opts...)
	}
	put("/pg/pg-test/leader", "pg-test-1", clientv3.WithLease(lease.ID))

	w := patroni.NewWatcher(cli, "/pg", zap.NewNop(), patroni.WatcherOptions{})
	out := make(chan patroni.Snapshot)
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx, out) }()
	defer func() {
		wcancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("watcher Run returned %v", err)
		}
	}()

	ft := &fakeTarget{}
	now := time.Now()
	c := New(loadInventory(t), []target.Target{ft}, Options{Now: func() time.Time { return now }})
	// observe reads snapshots until pred holds, then reconciles that one.
	observe := func(what string, pred func(*patroni.ClusterState) bool) *patroni.ClusterState {
		t.Helper()
		for {
			select {
			case s := <-out:
				if cs := s.Clusters["pg-test"]; cs != nil && pred(cs) {
					c.Observe(s)
					step(c, false)
					return cs
				}
			case <-ctx.Done():
				t.Fatalf("no snapshot with %s", what)
			}
		}
	}
	configErr := func(cs *patroni.ClusterState) string {
		for _, e := range cs.Errors {
			if e.Key == "/pg/pg-test/config" {
				return e.Err
			}
		}
		return ""
	}

	observe("pg-test-1 leading under failsafe_mode", func(cs *patroni.ClusterState) bool {
		return cs.Leader == "pg-test-1" && cs.FailsafeMode && len(cs.Members) == 3
	})
	put("/pg/pg-test/config", `{"ttl":30,"loop_wait":10,"failsafe_mode":`)
	observe("the config key error", func(cs *patroni.ClusterState) bool { return configErr(cs) != "" })
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	cs := observe("pg-test-1's keys expired", func(cs *patroni.ClusterState) bool {
		return cs.Leader == "" && cs.Members["pg-test-1"] == nil
	})
	if !cs.FailsafeMode || !cs.ConfigKept {
		t.Errorf("failsafe_mode %v kept %v after the config key went bad, want the last valid config kept", cs.FailsafeMode, cs.ConfigKept)
	}
	got := ft.last()
	for _, svc := range []string{"pg-test-primary", "pg-test-default"} {
		if forcedDown(got, svc, "pg-test-1") {
			t.Errorf("pg-test-1 forced DOWN in %s at its leader key's expiry under failsafe_mode (config key unreadable)", svc)
		}
	}
	var warned bool
	for _, cl := range c.Status().Clusters {
		if cl.Name == "pg-test" {
			warned = strings.Contains(strings.Join(cl.Warnings, "\n"), "/pg/pg-test/config: config: invalid JSON object")
		}
	}
	if !warned {
		t.Error("no pg-test warning names its bad config key")
	}
}

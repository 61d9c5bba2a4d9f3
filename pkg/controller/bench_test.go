package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// issueTarget signals every Apply with the replica service's backup servers.
type issueTarget struct{ applied chan string }

func (t *issueTarget) Name() string { return "bench" }
func (t *issueTarget) Diff(context.Context, []services.Service) ([]target.Change, error) {
	return nil, nil
}
func (t *issueTarget) Apply(ctx context.Context, d []services.Service) (target.Result, error) {
	select {
	case t.applied <- backups(d, "pg-test-replica"):
	case <-ctx.Done():
	}
	return target.Result{}, nil
}

// BenchmarkConvergence measures the time from a Patroni-shaped leader change
// written into a real etcd to the HAProxy change being issued (Apply called
// with the new backup flags): watch + decode + plan + diff + hand-off.
func BenchmarkConvergence(b *testing.B) {
	srv := etcdtest.Start(b)
	cli := srv.Client(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	member := func(i int, role string) string {
		return fmt.Sprintf(`{"conn_url":"postgres://127.0.0.1%d:5432/postgres","api_url":"http://127.0.0.1%d:8008/patroni","state":"running","role":%q,"version":"3.0.2","xlog_location":1000,"timeline":1}`, i, i, role)
	}
	put := func(k, v string) {
		if _, err := cli.Put(ctx, k, v); err != nil {
			b.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		role := "replica"
		if i == 1 {
			role = "master"
		}
		put(fmt.Sprintf("/pg/pg-test/members/pg-test-%d", i), member(i, role))
	}
	put("/pg/pg-test/leader", "pg-test-1")

	tg := &issueTarget{applied: make(chan string, 16)}
	c := New(loadInventory(b), []target.Target{tg}, Options{Debounce: time.Millisecond})
	w := patroni.NewWatcher(cli, "/pg", zap.NewNop(), patroni.WatcherOptions{})
	c.SetHealth("/pg", w.Status)
	snaps := make(chan patroni.Snapshot, 16)
	go func() { _ = w.Run(ctx, snaps) }()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-snaps:
				c.Observe(s)
			}
		}
	}()
	go func() { _ = c.Run(ctx) }()
	waitBackup := func(want string) {
		for {
			select {
			case got := <-tg.applied:
				if got == want {
					return
				}
			case <-time.After(10 * time.Second):
				b.Fatalf("no apply with backup %s", want)
			}
		}
	}
	waitBackup("pg-test-1")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		next := 2 + i%2 // alternate the leader between pg-test-2 and pg-test-3
		put("/pg/pg-test/leader", fmt.Sprintf("pg-test-%d", next))
		waitBackup(fmt.Sprintf("pg-test-%d", next))
	}
}

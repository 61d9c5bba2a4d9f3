package election

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
)

// slowRevoke is a Revoke that takes its whole (1 s) budget, as with a slow
// etcd: the end of a term's cleanup is then late.
type slowRevoke struct{ clientv3.Lease }

func (s slowRevoke) Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// lastIs reports whether r's last reported change is v.
func (r *runner) lastIs(v bool) bool {
	c := r.changeLog()
	return len(c) > 0 && c[len(c)-1] == v
}

// removeLeader takes the election away from under leader a by a means
// outside the elector (an operator's etcdctl, a DCS cleanup script), then
// checks that a and b never both lead: a must stop leading as soon as it
// learns its term is over, not after its term's cleanup.
func removeLeader(t *testing.T, remove func(cli *clientv3.Client, kv *clientv3.GetResponse)) {
	removeLeaderWith(t, func(*clientv3.Client) {}, remove)
}

// removeLeaderWith is removeLeader with a's client changed by wrap first.
func removeLeaderWith(t *testing.T, wrap func(acli *clientv3.Client), remove func(cli *clientv3.Client, kv *clientv3.GetResponse)) {
	srv := etcdtest.Start(t)
	acli := srv.Client(t)
	acli.Lease = slowRevoke{acli.Lease}
	wrap(acli)
	a := start(t, acli, "a")
	waitFor(t, 10*time.Second, "a to win", func() bool { return a.e.IsLeader() })
	b := start(t, srv.Client(t), "b")
	cli := srv.Client(t)
	waitFor(t, 5*time.Second, "two candidates", func() bool { return candidates(t, cli) == 2 })
	resp, err := cli.Get(context.Background(), "/pgsvc/election/", clientv3.WithFirstCreate()...)
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Kvs[0].Value) != "a" {
		t.Fatalf("first candidate is %q, want a", resp.Kvs[0].Value)
	}
	remove(cli, resp)
	// Sample until b leads and a has reported its loss.
	deadline := time.Now().Add(3 * testTTL * time.Second)
	for !(b.e.IsLeader() && a.lastIs(false)) {
		if a.e.IsLeader() && b.e.IsLeader() {
			t.Fatal("a and b both lead after a's election key was removed")
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: b.IsLeader=%v a's changes=%v", 3*testTTL*time.Second, b.e.IsLeader(), a.changeLog())
		}
		time.Sleep(time.Millisecond)
	}
	if a.e.IsLeader() {
		t.Fatal("a leads again")
	}
}

func TestKeyDeletedNoTwoLeaders(t *testing.T) {
	removeLeader(t, func(cli *clientv3.Client, resp *clientv3.GetResponse) {
		if _, err := cli.Delete(context.Background(), string(resp.Kvs[0].Key)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestLeaseRevokedNoTwoLeaders(t *testing.T) {
	removeLeader(t, func(cli *clientv3.Client, resp *clientv3.GetResponse) {
		if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
			t.Fatal(err)
		}
	})
}

// lateWatch delivers every watch answer d late, as a loaded host may
// schedule the goroutine that reads it late.
type lateWatch struct {
	clientv3.Watcher
	d time.Duration
}

func (w lateWatch) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	in := w.Watcher.Watch(ctx, key, opts...)
	out := make(chan clientv3.WatchResponse)
	go func() {
		defer close(out)
		for wr := range in {
			select {
			case <-time.After(w.d):
			case <-ctx.Done():
				return
			}
			select {
			case out <- wr:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// TestLateWatchNoTwoLeaders: the leader learns that its key was deleted
// 50 ms after the next candidate does (its watch answers come late); the
// next candidate still does not lead before the old one stopped (it waits
// handoverGrace once an older key went). Failed before: both led for the
// 50 ms.
func TestLateWatchNoTwoLeaders(t *testing.T) {
	removeLeaderWith(t, func(acli *clientv3.Client) {
		acli.Watcher = lateWatch{Watcher: acli.Watcher, d: 50 * time.Millisecond}
	}, func(cli *clientv3.Client, resp *clientv3.GetResponse) {
		if _, err := cli.Delete(context.Background(), string(resp.Kvs[0].Key)); err != nil {
			t.Fatal(err)
		}
	})
}

// slowOnce makes every unary KeepAliveOnce take longer than the elector's
// per-call timeout (interval), as a loaded etcd would; the streaming
// KeepAlive (used by concurrency.Session) is untouched and keeps the lease.
type slowOnce struct{ clientv3.Lease }

func (s slowOnce) KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestFencedHolderGivesUp: a leader whose own keepalives keep failing is
// fenced (IsLeader false) at its deadline; a grace later it must give the
// election up, so that another instance leads, and campaign again.
func TestFencedHolderGivesUp(t *testing.T) {
	srv := etcdtest.Start(t)
	acli := srv.Client(t)
	acli.Lease = slowOnce{acli.Lease}
	a := start(t, acli, "a-slow-keepalive")
	waitFor(t, 10*time.Second, "a to win", func() bool { return a.e.IsLeader() })
	b := start(t, srv.Client(t), "b-healthy")
	cli := srv.Client(t)
	waitFor(t, testTTL*time.Second, "a fenced", func() bool { return !a.e.IsLeader() })
	// Deadline + grace is about a TTL after a's grant; allow two more.
	waitFor(t, 3*testTTL*time.Second, "b to lead", func() bool { return b.e.IsLeader() })
	if a.e.IsLeader() {
		t.Fatal("a and b both lead")
	}
	waitFor(t, 3*testTTL*time.Second, "a to campaign again", func() bool { return candidates(t, cli) == 2 })
}

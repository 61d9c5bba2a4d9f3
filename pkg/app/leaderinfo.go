package app

import (
	"context"
	"sync"
	"time"

	"github.com/pgsvc/pgsvc/pkg/controller"
	"github.com/pgsvc/pgsvc/pkg/election"
)

// LeaderRefresh is how often the name of the elected controller is re-read
// from etcd for status.
const LeaderRefresh = 2 * time.Second

// leaderCache keeps the elected controller's name for status, read from etcd
// in the background: /status, /readyz and /metrics never wait on etcd (a
// frozen etcd would otherwise hold every status request for its timeout).
type leaderCache struct {
	e *election.Elector
	// leaderless is how long no leader may be seen before the instance
	// reports itself not ready (LeaderlessTTLs lease TTLs).
	leaderless time.Duration
	now        func() time.Time

	mu     sync.Mutex
	leader string // "" until the first answer
	err    string
	at     time.Time
	seen   time.Time // a leader was last seen (start: creation)
}

// LeaderlessTTLs is how many election TTLs an instance may see no leader
// (nobody holds the election key, or etcd does not answer) before it
// reports itself not ready: a failover of the election takes about one TTL,
// so several mean the election is stuck and no instance applies changes.
const LeaderlessTTLs = 3

func newLeaderCache(e *election.Elector, ttl time.Duration) *leaderCache {
	return &leaderCache{e: e, leaderless: LeaderlessTTLs * ttl, now: time.Now, seen: time.Now()}
}

// run re-reads the leader at every change of the election's keys (watch),
// and every LeaderRefresh in case the watch is stuck, until ctx ends.
func (l *leaderCache) run(ctx context.Context) {
	t := time.NewTicker(LeaderRefresh)
	defer t.Stop()
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		wch := l.e.WatchCandidates(wctx)
		l.refresh(ctx)
	watch:
		for {
			select {
			case <-ctx.Done():
				break watch
			case <-t.C:
				l.refresh(ctx)
			case wr, ok := <-wch:
				if !ok || wr.Err() != nil {
					break watch // re-watch after the next tick
				}
				l.refresh(ctx)
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}

func (l *leaderCache) refresh(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, LeaderRefresh)
	defer cancel()
	leader, err := l.e.Leader(lctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.err = err.Error()
		return
	}
	l.leader, l.err, l.at = leader, "", l.now()
	l.seen = l.at
}

// info is controller.Options.LeaderInfo: it never blocks on etcd.
func (l *leaderCache) info() *controller.LeaderStatus {
	st := &controller.LeaderStatus{Identity: l.e.Identity(), IsLeader: l.e.IsLeader()}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if st.IsLeader {
		l.seen = now
		st.Leader = st.Identity // our own lease is certainly alive
		return st
	}
	// The leader read from etcd may be stale by up to a refresh (or be a
	// holder that cannot lead): "seen" is only the last read that found one.
	if d := now.Sub(l.seen); d > l.leaderless {
		st.LeaderlessSeconds = d.Seconds()
	}
	switch {
	case l.err != "" && l.leader != "":
		st.Leader = l.leader + " (as of " + l.at.UTC().Format(time.RFC3339) + "; now unknown: " + l.err + ")"
	case l.err != "":
		st.Leader = "(unknown: " + l.err + ")"
	case l.leader == "":
		st.Leader = "(unknown: not read yet)"
	default:
		st.Leader = l.leader
	}
	return st
}

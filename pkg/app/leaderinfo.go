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

	mu     sync.Mutex
	leader string // "" until the first answer
	err    string
	at     time.Time
}

func newLeaderCache(e *election.Elector) *leaderCache { return &leaderCache{e: e} }

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
	l.leader, l.err, l.at = leader, "", time.Now()
}

// info is controller.Options.LeaderInfo: it never blocks on etcd.
func (l *leaderCache) info() *controller.LeaderStatus {
	st := &controller.LeaderStatus{Identity: l.e.Identity(), IsLeader: l.e.IsLeader()}
	if st.IsLeader {
		st.Leader = st.Identity // our own lease is certainly alive
		return st
	}
	l.mu.Lock()
	defer l.mu.Unlock()
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

package app

import (
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/election"
)

// TestLeaderCacheLeaderless: no leader seen for LeaderlessTTLs TTLs (none
// elected, or etcd unanswered) is reported; a leader read resets it.
func TestLeaderCacheLeaderless(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLeaderCache(election.New(nil, election.Options{Identity: "b", TTL: 5}), 5*time.Second)
	l.now = func() time.Time { return now }
	l.seen = now
	if st := l.info(); st.LeaderlessSeconds != 0 {
		t.Fatalf("at start: %+v", st)
	}
	now = now.Add(15 * time.Second)
	if st := l.info(); st.LeaderlessSeconds != 0 {
		t.Fatalf("at the limit: %+v", st)
	}
	now = now.Add(time.Second)
	if st := l.info(); st.LeaderlessSeconds != 16 {
		t.Fatalf("past the limit: %+v, want 16 s leaderless", st)
	}
	// A read that finds a leader (as refresh records it).
	l.mu.Lock()
	l.leader, l.err, l.at, l.seen = "a", "", now, now
	l.mu.Unlock()
	if st := l.info(); st.LeaderlessSeconds != 0 || st.Leader != "a" {
		t.Fatalf("after a leader was read: %+v", st)
	}
}

package controller

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/target"
)

// TestLeaderlessNotReady: a standby is ready while some instance leads; one
// whose election has seen no leader past the limit (LeaderlessSeconds set by
// the caller) is not, and says why.
func TestLeaderlessNotReady(t *testing.T) {
	var leaderless atomic.Bool
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{Gate: func() bool { return false },
		LeaderInfo: func() *LeaderStatus {
			st := &LeaderStatus{Identity: "b", Leader: "a"}
			if leaderless.Load() {
				st.Leader, st.LeaderlessSeconds = "(unknown: election has no leader)", 16
			}
			return st
		}})
	c.Observe(state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3"))
	step(c, true)
	has := func(st Status) bool {
		for _, r := range st.NotReady {
			if strings.HasPrefix(r, "controller election: no leader seen for 16s") {
				return true
			}
		}
		return false
	}
	if st := c.Status(); st.Targets[0].State != "standby" || has(st) {
		t.Fatalf("standby with a leader: %+v %v", st.Targets[0], st.NotReady)
	}
	leaderless.Store(true)
	if st := c.Status(); st.Ready || !has(st) {
		t.Fatalf("leaderless standby: ready %v, not ready %q", st.Ready, st.NotReady)
	}
}

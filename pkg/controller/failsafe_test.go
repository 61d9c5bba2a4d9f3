package controller

import (
	"sync"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) add(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// TestFailsafeLeaderlessOneTransition: Patroni leaderless under
// failsafe_mode (every key expired, the old primary still primary) makes
// one transition, not one after every promote window; a leader key seen
// again ends that, and its next absence makes a new one.
func TestFailsafeLeaderlessOneTransition(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	c := New(loadInventory(t), []target.Target{&fakeTarget{}}, Options{Now: clock.Now, PromoteWindow: time.Second,
		FenceHold: 100 * time.Millisecond, PatroniCAFile: "/nonexistent"})
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	c.Observe(state(10, "pg-test-1", 1, all...))
	step(c, false)
	gone := func(rev int64) patroni.Snapshot {
		s := state(rev, "", 1, "pg-test-2", "pg-test-3") // pg-test-1's keys expired too
		s.Clusters["pg-test"].FailsafeMode = true
		return s
	}
	c.Observe(gone(11))
	step(c, false)
	active := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.tx.active["pg-test"] != nil
	}
	if !active() {
		t.Fatal("no transition for the expired leader key")
	}
	for range 5 {
		clock.add(2 * time.Second) // past the promote window
		step(c, false)
		step(c, false)
	}
	if n := len(transitionEvents(c)); n != 1 || active() {
		t.Fatalf("%d transitions (one active: %v) over 5 promote windows of one leaderless spell, want 1 and none", n, active())
	}

	c.Observe(state(12, "pg-test-1", 1, all...)) // the key is back
	step(c, false)
	c.Observe(gone(13)) // and gone again: a new absence
	step(c, false)
	if !active() {
		t.Fatal("no transition for a new absence of the leader key")
	}
}

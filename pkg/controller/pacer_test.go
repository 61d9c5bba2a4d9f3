package controller

import (
	"testing"
	"time"
)

// TestPacer: a probe-woken reconcile starts at once when the last one ended
// at least as long ago as it took (a lone answer, or a quiet loop); in a
// storm the next waits out the rest of that time, never more than maxPace.
func TestPacer(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	var p pacer
	if d := p.wait(t0); d != 0 {
		t.Fatalf("first wake waits %v", d)
	}
	p.done(t0, t0.Add(20*time.Millisecond))
	for _, c := range []struct {
		at   time.Duration // since t0
		want time.Duration
	}{
		{20 * time.Millisecond, 20 * time.Millisecond}, // right after: wait as long as it took
		{30 * time.Millisecond, 10 * time.Millisecond},
		{40 * time.Millisecond, 0},
		{time.Second, 0},
	} {
		if d := p.wait(t0.Add(c.at)); d != c.want {
			t.Errorf("wake at +%v: wait %v, want %v", c.at, d, c.want)
		}
	}
	p.done(t0, t0.Add(5*time.Second)) // a very slow reconcile
	if d := p.wait(t0.Add(5 * time.Second)); d != maxPace {
		t.Errorf("after a 5 s reconcile: wait %v, want the bound %v", d, maxPace)
	}
}

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

// TestDebounceWait: a DCS event after a quiet spell is reconciled at once;
// within a burst, the next reconcile waits until Debounce has passed since
// the last one started.
func TestDebounceWait(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	every := 50 * time.Millisecond
	for _, c := range []struct {
		last, now time.Duration // since t0
		want      time.Duration
	}{
		{-time.Hour, 0, 0}, // quiet (and the zero time of the first event)
		{0, 10 * time.Millisecond, 40 * time.Millisecond},
		{0, 50 * time.Millisecond, 0},
		{0, time.Second, 0},
	} {
		if d := debounceWait(t0.Add(c.now), t0.Add(c.last), every); d != c.want {
			t.Errorf("event at +%v, last at %v: wait %v, want %v", c.now, c.last, d, c.want)
		}
	}
	if d := debounceWait(t0, time.Time{}, every); d != 0 {
		t.Errorf("first event ever waits %v", d)
	}
}

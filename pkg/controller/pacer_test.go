package controller

import (
	"context"
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

// TestPacedWaitYieldsToDCS: a probe wake's paced wait ends when a DCS event
// comes (it is reconciled then, not after the pace), when the pace is
// over, or when the context ends; no pace, no wait.
func TestPacedWaitYieldsToDCS(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dirty := make(chan struct{}, 1)
	if dcs, err := pacedWait(ctx, 0, dirty); dcs || err != nil {
		t.Fatalf("no pace: %v, %v", dcs, err)
	}
	type result struct {
		dcs bool
		err error
	}
	done := make(chan result, 1)
	go func() {
		dcs, err := pacedWait(ctx, time.Hour, dirty)
		done <- result{dcs, err}
	}()
	dirty <- struct{}{}
	select {
	case r := <-done:
		if !r.dcs || r.err != nil {
			t.Fatalf("a DCS event during the pace: %v, %v; want it taken", r.dcs, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a DCS event did not end an hour's pace")
	}
	if len(dirty) != 0 {
		t.Fatal("the DCS event was left for the loop to reconcile a second time")
	}
	if dcs, err := pacedWait(ctx, time.Millisecond, dirty); dcs || err != nil {
		t.Fatalf("a pace that ends: %v, %v", dcs, err)
	}
	go func() {
		dcs, err := pacedWait(ctx, time.Hour, dirty)
		done <- result{dcs, err}
	}()
	cancel()
	select {
	case r := <-done:
		if r.dcs || r.err == nil {
			t.Fatalf("a cancelled pace: %v, %v; want the context's error", r.dcs, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelling did not end an hour's pace")
	}
}

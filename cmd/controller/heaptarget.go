package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"

	"go.uber.org/zap"
)

// defaultHeapTarget is -heap-target's default. With Go's own pacing
// (GOGC=100: collect when the heap has doubled) a 1,000-cluster fleet's
// mass failover took the heap to twice its live size and the RSS to
// 128-144 MB. A target of 48 MiB leaves the collector at GOGC=100 while
// the live heap is under ~24 MB (a fleet of a few hundred clusters) and
// lowers it towards 25 above: the same storm then peaked at 92-99 MB, for
// 0.5-1 s more of the controller's CPU in it (on two CPUs shared with the
// Data Plane API, a v2 mass failover took ~0.5-0.8 s longer; v3 and the
// direct driver stayed within their spread): RESULTS.md, "A heap target
// by default". A fleet far larger collects about four times as often as
// by default. -heap-target 0 restores Go's own pacing (GOGC).
const defaultHeapTarget = "48MiB"

// gcFloor is the lowest GOGC the heap target sets: the collector then runs
// at most about four times as often as by default (GOGC=100), so a live
// heap above the target costs memory, never a collector that runs without
// pause (a -memory-limit near the live heap cost a mass failover 3x its
// CPU: RESULTS.md).
const gcFloor = 25

// heapTuner lowers GOGC as the live heap grows so that the heap's goal (the
// size at which the next collection is due: live x (1 + GOGC/100)) stays
// at target: GOGC = 100 x (target/live - 1), between floor and ceil (the
// GOGC in force at start, 100 unless the GOGC variable says otherwise). It
// looks once per collection (a finalizer, so never while nothing is
// allocated), when the live heap the collection found is known. A soft
// memory limit (-memory-limit) keeps working beside it.
type heapTuner struct {
	target      uint64
	floor, ceil int
	live        func() uint64  // the live heap found by the last collection
	set         func(int) int  // debug.SetGCPercent
	cur         int            // the GOGC in force
	done        func() bool    // stop looking (the context is done)
	onSet       func(gogc int) // optional: told each change (logging)
}

// percent is the GOGC that puts the heap's goal at t.target for a live
// heap of live bytes.
func (t *heapTuner) percent(live uint64) int {
	if live == 0 {
		return t.ceil
	}
	p := int(100 * (float64(t.target)/float64(live) - 1))
	return max(t.floor, min(p, t.ceil))
}

// step applies percent to the live heap of the last collection.
func (t *heapTuner) step() {
	p := t.percent(t.live())
	if p == t.cur {
		return
	}
	t.set(p)
	t.cur = p
	if t.onSet != nil {
		t.onSet(p)
	}
}

// liveHeap reads the live heap the last collection marked.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// currentGOGC reads the GOGC in force (-1: off).
func currentGOGC() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 100
	}
	return int(int64(s[0].Value.Uint64()))
}

// newHeapTuner returns a tuner for target bytes, or nil when there is
// nothing to tune: no target, or the collector is off (GOGC=off) or
// already at or below the floor.
func newHeapTuner(ctx context.Context, target uint64) *heapTuner {
	base := currentGOGC()
	if target == 0 || base <= gcFloor { // GOGC=off reads as -1
		return nil
	}
	return &heapTuner{target: target, floor: gcFloor, ceil: base, live: liveHeap,
		set: debug.SetGCPercent, cur: base, done: func() bool { return ctx.Err() != nil }}
}

// tunerSentinel is an object nothing refers to: its finalizer runs after
// each collection that finds it unreachable, steps the tuner and re-arms
// itself for the next one.
type tunerSentinel struct{ t *heapTuner }

func finalizeSentinel(s *tunerSentinel) {
	if s.t.done() {
		return
	}
	s.t.step()
	runtime.SetFinalizer(s, finalizeSentinel)
}

// startHeapTarget starts a tuner for -heap-target's value (flag, "" when
// not given; "0" is none too) and returns it, nil when none runs.
func startHeapTarget(ctx context.Context, flag string, log *zap.Logger) (*heapTuner, error) {
	if flag == "" {
		return nil, nil
	}
	n, err := parseMemoryLimit(flag)
	if err != nil {
		return nil, fmt.Errorf("-heap-target %w", err)
	}
	t := newHeapTuner(ctx, uint64(n))
	if t == nil {
		return nil, nil
	}
	log.Info("heap target", zap.Int64("bytes", n), zap.Int("gogc_floor", t.floor), zap.Int("gogc_ceil", t.ceil))
	t.onSet = func(gogc int) { log.Debug("heap target: GOGC set", zap.Int("gogc", gogc)) }
	t.start()
	return t, nil
}

// start makes t look after every collection until its context is done.
func (t *heapTuner) start() {
	t.step()
	runtime.SetFinalizer(&tunerSentinel{t: t}, finalizeSentinel)
}

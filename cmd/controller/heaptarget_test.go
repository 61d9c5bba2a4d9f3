package main

import (
	"context"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestHeapTunerPercent(t *testing.T) {
	h := &heapTuner{target: 64 << 20, floor: 25, ceil: 100}
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 100},        // nothing known yet: the default
		{8 << 20, 100},  // a small fleet: never above the GOGC in force
		{32 << 20, 100}, // half the target: the default reaches it exactly
		{40 << 20, 60},  // 1,000 clusters idle: goal 64 MiB
		{48 << 20, 33},
		{56 << 20, 25},  // a mass failover: the floor, goal 70 MiB
		{200 << 20, 25}, // far above: the floor, never a collector without pause
	} {
		if got := h.percent(c.live); got != c.want {
			t.Errorf("live %d MiB: GOGC %d, want %d", c.live>>20, got, c.want)
		}
	}
}

func TestHeapTunerStep(t *testing.T) {
	var live uint64
	var set []int
	h := &heapTuner{target: 64 << 20, floor: 25, ceil: 100, cur: 100,
		live: func() uint64 { return live }, set: func(p int) int { set = append(set, p); return 0 }}
	for _, l := range []uint64{10 << 20, 40 << 20, 40 << 20, 56 << 20, 10 << 20} {
		live = l
		h.step()
	}
	want := []int{60, 25, 100} // no call when GOGC would not change
	if len(set) != len(want) {
		t.Fatalf("SetGCPercent calls %v, want %v", set, want)
	}
	for i := range want {
		if set[i] != want[i] {
			t.Fatalf("SetGCPercent calls %v, want %v", set, want)
		}
	}
}

// TestHeapTunerFollowsCollections runs the tuner on the real runtime: a
// live heap twice the target brings GOGC to the floor after a collection,
// and back to the default once it is garbage.
func TestHeapTunerFollowsCollections(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// The target is well above what the test binary keeps live on its own
	// (the tuner goes back to 100 below half of it), whatever else runs.
	runtime.GC()
	target := max(16<<20, 4*liveHeap())
	h := newHeapTuner(ctx, target)
	if h == nil {
		t.Fatal("no tuner at GOGC=100")
	}
	h.start()
	waitGOGC := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for currentGOGC() != want {
			if time.Now().After(deadline) {
				t.Fatalf("GOGC %d, want %d (live heap %d MiB)", currentGOGC(), want, liveHeap()>>20)
			}
			runtime.GC() // the tuner looks after each collection
			time.Sleep(5 * time.Millisecond)
		}
	}
	held := make([][]byte, 2*target>>20) // twice the target: the floor
	for i := range held {
		held[i] = make([]byte, 1<<20)
	}
	waitGOGC(gcFloor)
	runtime.KeepAlive(held)
	held = nil
	waitGOGC(100)
	cancel()
	// Stopped: it no longer changes GOGC.
	debug.SetGCPercent(77)
	runtime.GC()
	runtime.GC()
	if g := currentGOGC(); g != 77 {
		t.Errorf("GOGC %d after the tuner stopped, want 77", g)
	}
}

// TestStartHeapTarget: the flag's value reaches the collector (a target
// far under the live heap brings GOGC to the floor); unset or 0, nothing
// runs; a bad size is refused naming the flag.
func TestStartHeapTarget(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, off := range []string{"", "0"} {
		if h, err := startHeapTarget(ctx, off, zap.NewNop()); h != nil || err != nil {
			t.Errorf("-heap-target %q: tuner %v, error %v; want none", off, h != nil, err)
		}
	}
	if _, err := startHeapTarget(ctx, "64MB", zap.NewNop()); err == nil || !strings.Contains(err.Error(), "-heap-target") {
		t.Errorf("-heap-target 64MB: error %v, want a -heap-target error", err)
	}
	held := make([]byte, 8<<20)
	h, err := startHeapTarget(ctx, "1KiB", zap.NewNop())
	if err != nil || h == nil || h.target != 1<<10 {
		t.Fatalf("-heap-target 1KiB: tuner %v, error %v", h, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for currentGOGC() != gcFloor {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC %d with a 1 KiB heap target, want %d", currentGOGC(), gcFloor)
		}
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	runtime.KeepAlive(held)
	cancel()
}

func TestHeapTunerOff(t *testing.T) {
	ctx := context.Background()
	if newHeapTuner(ctx, 0) != nil {
		t.Error("a tuner for -heap-target 0")
	}
	orig := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(orig)
	if newHeapTuner(ctx, 64<<20) != nil {
		t.Error("a tuner with GOGC=off")
	}
}

// TestHeapTargetDefault: `controller run` aims at defaultHeapTarget unless
// told otherwise; -heap-target 0 leaves Go's own pacing.
func TestHeapTargetDefault(t *testing.T) {
	base := []string{"-inventory", "x.yml", "-etcd", "http://127.0.0.1:2379", "-haproxy-config", "/tmp/h.cfg",
		"-stats-socket", "/tmp/s", "-master-socket", "/tmp/m", "-server-state-file", "/tmp/st"}
	_, f, err := parseRunAll(base, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if f.heapTarget != defaultHeapTarget {
		t.Errorf("default -heap-target %q, want %q", f.heapTarget, defaultHeapTarget)
	}
	n, err := parseMemoryLimit(defaultHeapTarget)
	if err != nil || n != 48<<20 {
		t.Errorf("defaultHeapTarget %q: %d bytes, error %v", defaultHeapTarget, n, err)
	}
	_, f, err = parseRunAll(append(base, "-heap-target", "0"), &strings.Builder{})
	if err != nil || f.heapTarget != "0" {
		t.Fatalf("-heap-target 0: %q, error %v", f.heapTarget, err)
	}
	if h, err := startHeapTarget(context.Background(), f.heapTarget, zap.NewNop()); h != nil || err != nil {
		t.Errorf("-heap-target 0: tuner %v, error %v; want none", h != nil, err)
	}
}

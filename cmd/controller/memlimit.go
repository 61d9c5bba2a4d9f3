package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// parseMemoryLimit reads a size as GOMEMLIMIT writes it: bytes, or a
// number with a B, KiB, MiB or GiB suffix; "0" or "off" means no limit.
func parseMemoryLimit(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "0" || s == "off" {
		return 0, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q: want a size such as 96MiB (B, KiB, MiB, GiB), or 0 for none", s)
	}
	return n * mult, nil
}

// setMemoryLimit applies -memory-limit (flag, "" when not given): the flag
// wins, then GOMEMLIMIT (the runtime read it already); by default there is
// none (RESULTS.md, "Controller RSS at N = 1,000": a limit near the live
// heap makes a large fleet collect non-stop). It returns the limit in
// force (0: none) and where it came from.
func setMemoryLimit(flag string) (int64, string, error) {
	switch {
	case flag != "":
		n, err := parseMemoryLimit(flag)
		if err != nil {
			return 0, "", fmt.Errorf("-memory-limit %w", err)
		}
		if n == 0 {
			debug.SetMemoryLimit(math.MaxInt64)
		} else {
			debug.SetMemoryLimit(n)
		}
		return n, "-memory-limit", nil
	case os.Getenv("GOMEMLIMIT") != "":
		n := debug.SetMemoryLimit(-1)
		if n == math.MaxInt64 {
			n = 0
		}
		return n, "GOMEMLIMIT", nil
	}
	return 0, "", nil
}

// releaser returns the heap's free memory and uncollected garbage to the
// OS while the controller is quiet. Go keeps the pages a burst needed and
// gives them back slowly, and lets the garbage of the idle work (a resync
// every 30 s) reach the live heap's size before it collects: at 1,000
// clusters the controller stayed at ~150 MB for minutes after a mass
// failover while its live heap was ~50 MB, and idled at 86-120 MB
// depending on where the collector stood when one looked. It
// releases only between bursts (at most quiet bytes allocated since the
// last look), once at least minFree bytes would come back: one collection
// per ~minFree of idle garbage, nothing during a burst. (24 MiB left one
// run's idle garbage of 16 MB unreleased at 110 MB. 12 MiB was one
// collection per resync at 1,000 clusters until a resync planned only a
// tenth of them: then ~7 MB a resync, so one release every other resync,
// and the direct driver's idle RSS climbed 87 -> 94 -> 101 MB between
// two. At 6 MiB it is one per resync again: a collection of a ~40 MB live
// heap every 30 s.)
type releaser struct {
	every   time.Duration // how often to look (2s)
	quiet   uint64        // at most this many bytes allocated per look is quiet
	minFree uint64        // release only when the free, unreleased heap is larger
	release func()        // debug.FreeOSMemory
	read    func() (allocs, free uint64)

	lastAllocs uint64
}

// memStats reads the bytes allocated so far and the heap memory a release
// would return to the OS: the free heap not yet returned, plus the objects
// found dead since the last collection (the release collects first). The
// idle fleet's periodic work (a resync every 30 s)
// leaves its garbage in the heap until the next collection, and counting
// only the free memory missed it: a release came late or not at all.
func memStats() (allocs, free uint64) {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	for _, x := range s {
		if x.Value.Kind() != metrics.KindUint64 {
			return 0, 0
		}
	}
	free = s[1].Value.Uint64()
	if objects, live := s[2].Value.Uint64(), s[3].Value.Uint64(); objects > live {
		free += objects - live
	}
	return s[0].Value.Uint64(), free
}

// newReleaser looks every 2 s; quiet is at most 6 MiB allocated since the
// last look (~3 MB/s, as 16 MiB per 5 s was). Looking every 5 s, a resync's
// or a burst of scrapes' garbage stayed in the RSS 5-10 s, the controller
// then 15-20 MB above its idle 86-93 MB at 1,000 clusters; every 2 s it
// goes back 2-4 s after, with as many releases (one per resync at idle).
func newReleaser() *releaser {
	return &releaser{every: 2 * time.Second, quiet: 6 << 20, minFree: 6 << 20, release: debug.FreeOSMemory, read: memStats}
}

// step looks once: it reports whether it released memory.
func (r *releaser) step() bool {
	allocs, free := r.read()
	delta := allocs - r.lastAllocs
	r.lastAllocs = allocs
	if delta > r.quiet || free < r.minFree {
		return false
	}
	r.release()
	return true
}

// run looks every r.every until ctx is done.
func (r *releaser) run(ctx context.Context) {
	r.lastAllocs, _ = r.read()
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.step()
		}
	}
}

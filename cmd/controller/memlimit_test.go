package main

import (
	"io"
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

func TestParseMemoryLimit(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "off": 0, "100": 100, "512B": 512, "4KiB": 4096,
		"96MiB": 96 << 20, "2GiB": 2 << 30} {
		if got, err := parseMemoryLimit(in); err != nil || got != want {
			t.Errorf("parseMemoryLimit(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "96MB", "x", "1.5GiB", "99999999999GiB"} {
		if _, err := parseMemoryLimit(bad); err == nil {
			t.Errorf("parseMemoryLimit(%q): no error", bad)
		}
	}
	if _, _, err := parseRun([]string{"-inventory", "x.yml", "-memory-limit", "lots"}, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "-memory-limit") {
		t.Errorf("-memory-limit lots: got %v, want a -memory-limit error", err)
	}
	if _, _, err := parseRun([]string{"-inventory", "x.yml", "-heap-target", "64MB"}, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "-heap-target") {
		t.Errorf("-heap-target 64MB: got %v, want a -heap-target error", err)
	}
}

// TestSetMemoryLimit: the flag wins over GOMEMLIMIT, 0 removes the limit,
// and without either there is none.
func TestSetMemoryLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	t.Setenv("GOMEMLIMIT", "")
	if n, from, err := setMemoryLimit("64MiB"); err != nil || n != 64<<20 || from != "-memory-limit" || debug.SetMemoryLimit(-1) != 64<<20 {
		t.Fatalf("flag 64MiB: %d from %s, %v", n, from, err)
	}
	if n, _, _ := setMemoryLimit("0"); n != 0 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Fatalf("flag 0: %d, runtime limit %d", n, debug.SetMemoryLimit(-1))
	}
	t.Setenv("GOMEMLIMIT", "80MiB")
	debug.SetMemoryLimit(80 << 20) // as the runtime read it at start
	if n, from, _ := setMemoryLimit(""); n != 80<<20 || from != "GOMEMLIMIT" {
		t.Fatalf("GOMEMLIMIT: %d from %s", n, from)
	}
	if n, from, _ := setMemoryLimit("32MiB"); n != 32<<20 || from != "-memory-limit" {
		t.Fatalf("flag over GOMEMLIMIT: %d from %s", n, from)
	}
	t.Setenv("GOMEMLIMIT", "")
	debug.SetMemoryLimit(math.MaxInt64) // as the runtime starts without GOMEMLIMIT
	if n, _, _ := setMemoryLimit(""); n != 0 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Fatalf("default: %d, runtime limit %d, want none", n, debug.SetMemoryLimit(-1))
	}
}

// TestReleaserWhenQuiet: memory goes back only between bursts, once
// enough would come back: after a burst, and again once the quiet work's
// garbage has grown past minFree; never during a burst, never for little.
func TestReleaserWhenQuiet(t *testing.T) {
	var allocs, free uint64
	released := 0
	r := &releaser{quiet: 10, minFree: 100, release: func() { released++; free = 0 },
		read: func() (uint64, uint64) { return allocs, free }}
	look := func(alloc, nowFree uint64) bool {
		allocs += alloc
		free = nowFree
		return r.step()
	}
	if look(1000, 500) { // a burst
		t.Fatal("released during a burst")
	}
	if !look(5, 500) || released != 1 {
		t.Fatalf("not released once the burst was over (%d)", released)
	}
	if look(5, 0) {
		t.Fatal("released with nothing to release")
	}
	if look(5, 50) {
		t.Fatal("released with little free memory")
	}
	if !look(5, 200) || released != 2 {
		t.Fatalf("the quiet work's garbage past minFree was not released (%d)", released)
	}
	if look(1000, 200) {
		t.Fatal("released during a burst")
	}
}

var sink []byte

// TestMemStatsCountsGarbage: memory a release would return includes the
// objects that died since the last collection, not only the free heap.
func TestMemStatsCountsGarbage(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	debug.FreeOSMemory()
	_, before := memStats()
	for i := 0; i < 32<<10; i++ {
		sink = make([]byte, 1<<10) // each dead once the next is made
	}
	sink = nil
	if _, after := memStats(); after < before+24<<20 {
		t.Fatalf("releasable %d MiB after 32 MiB of garbage, was %d MiB", after>>20, before>>20)
	}
}

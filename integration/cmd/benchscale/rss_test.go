package main

import (
	"os"
	"testing"
	"time"
)

// TestRSSMonitorSpan reads this process's own RSS and finds the reads of a
// window, and none outside it.
func TestRSSMonitorSpan(t *testing.T) {
	m := startRSS(os.Getpid())
	t0 := time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, n := m.span(t0, time.Now()); n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no three RSS reads within 10s")
		}
		time.Sleep(rssEvery / 2)
	}
	m.close()
	m.close() // twice is fine
	lo, hi, n := m.span(t0, time.Now())
	if n < 3 || lo <= 0 || hi < lo {
		t.Fatalf("span = %v, %v, %d; want >= 3 reads, 0 < lo <= hi", lo, hi, n)
	}
	// A Go test binary maps its own file: some of its pages are resident,
	// never more than the whole RSS.
	if f := m.fileAtPeak(t0, time.Now()); f <= 0 || f > hi {
		t.Fatalf("file-backed part of the greatest read = %v MB, want in (0, %v]", f, hi)
	}
	if f := m.fileAtPeak(time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)); f != 0 {
		t.Fatalf("a window with no reads has a file-backed part of %v MB", f)
	}
	if _, _, n := m.span(time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)); n != 0 {
		t.Fatalf("a window with no reads has %d", n)
	}
	var nilMon *rssMonitor
	nilMon.close()
	if _, _, n := nilMon.span(t0, time.Now()); n != 0 {
		t.Fatalf("nil monitor: %d reads", n)
	}
	if f := nilMon.fileAtPeak(t0, time.Now()); f != 0 {
		t.Fatalf("nil monitor: file-backed %v MB", f)
	}
}

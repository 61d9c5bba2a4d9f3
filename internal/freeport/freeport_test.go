package freeport

import (
	"sync"
	"testing"
)

// A port the kernel hands out again is skipped: fresh returns the next one.
func TestGetSkipsPortsHandedOut(t *testing.T) {
	var seen sync.Map
	ports := []int{40001, 40001, 40001, 40002}
	listen := func() (int, error) {
		p := ports[0]
		ports = ports[1:]
		return p, nil
	}
	if got, err := fresh(&seen, listen); err != nil || got != 40001 {
		t.Fatalf("first port %d (%v), want 40001", got, err)
	}
	if got, err := fresh(&seen, listen); err != nil || got != 40002 {
		t.Fatalf("second port %d (%v), want 40002 (40001 was handed out)", got, err)
	}
}

// Get returns a port nothing listens on, never twice.
func TestGetNeverTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p := Get(t)
		if seen[p] || p <= 0 {
			t.Fatalf("port %d handed out twice or invalid", p)
		}
		seen[p] = true
	}
}

// Get's ports are below the kernel's ephemeral range (where an outgoing
// connection could take one before its server binds it), when the range
// leaves room below it.
func TestGetBelowEphemeralRange(t *testing.T) {
	lo := ephemeralLow()
	if lo-lowest <= 100 {
		t.Skipf("ephemeral range starts at %d: no room below it (Pick falls back to port 0)", lo)
	}
	for range 20 {
		if p := Get(t); p < lowest || p >= lo {
			t.Fatalf("port %d, want one in [%d, %d)", p, lowest, lo)
		}
	}
}

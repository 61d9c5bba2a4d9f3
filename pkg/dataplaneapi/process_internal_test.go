package dataplaneapi

import (
	"testing"
	"time"
)

// TestProcTable: answers of one process (its uptime in whole seconds, read
// at different times, however slow the answer) get one id; the same pid
// started anew, a couple of seconds or more after the previous start, gets
// another, and so does another pid; a process seen before keeps its id.
func TestProcTable(t *testing.T) {
	var p procTable
	t0 := time.Now()
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	// Started at t0-59.5 s.
	a := p.identify(7, 59, at(0), at(time.Millisecond))
	if procPID(a) != 7 || a == 7 {
		t.Fatalf("id %d: pid %d", a, procPID(a))
	}
	for _, c := range []struct {
		name       string
		uptime     int64
		sent, recv time.Duration
	}{
		{"0.4 s later", 59, 400 * time.Millisecond, 401 * time.Millisecond},
		{"1 s later", 60, time.Second, time.Second + time.Millisecond},
		{"a minute later", 119, time.Minute + 200*time.Millisecond, time.Minute + 210*time.Millisecond},
		{"an answer that took 5 s", 124, 65 * time.Second, 70 * time.Second},
		{"an hour later", 3659, time.Hour, time.Hour + time.Millisecond},
	} {
		if got := p.identify(7, c.uptime, at(c.sent), at(c.recv)); got != a {
			t.Errorf("%s: id %d, want %d (the same process)", c.name, got, a)
		}
	}
	// Restarted 3 s after it started, with the same pid (a container).
	b := p.identify(7, 3600, at(time.Hour+4*time.Second), at(time.Hour+4*time.Second+time.Millisecond))
	if b == a || procPID(b) != 7 {
		t.Fatalf("a restart keeping the pid: id %d, the process before %d", b, a)
	}
	if got := p.identify(7, 3601, at(time.Hour+5*time.Second), at(time.Hour+5*time.Second+time.Millisecond)); got != b {
		t.Errorf("the restarted process answered again: id %d, want %d", got, b)
	}
	c := p.identify(8, 3601, at(time.Hour+5*time.Second), at(time.Hour+5*time.Second+time.Millisecond))
	if c == a || c == b || procPID(c) != 8 {
		t.Errorf("another pid: id %d (ids before %d, %d)", c, a, b)
	}
	if got := p.identify(7, 3601, at(time.Hour+5*time.Second), at(time.Hour+5*time.Second+time.Millisecond)); got != b {
		t.Errorf("a process seen before a newer one: id %d, want %d", got, b)
	}
	// An uptime rounded the other way: the same process.
	if got := p.identify(8, 3600, at(time.Hour+5*time.Second), at(time.Hour+5*time.Second+time.Millisecond)); got != c {
		t.Errorf("1 s off (the uptime's rounding): id %d, want %d", got, c)
	}
	if procName(a) != "pid 7 (process #1)" || procName(0) != "unknown" {
		t.Errorf("procName: %q %q", procName(a), procName(0))
	}
}

package haproxyproc

import (
	"testing"
	"time"
)

// TestProcTable: answers of one process (its uptime in whole seconds, read
// at different times, however slow the answer) get one id; the same pid
// started anew a few seconds after the previous start gets another, and so
// does another pid; a process seen before a newer one keeps its id.
func TestProcTable(t *testing.T) {
	var p Table
	t0 := time.Now()
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	// Started at t0-59.5 s.
	a := p.Identify(7, 59, at(0), at(time.Millisecond))
	if a.PID() != 7 || a == 7 || a == 0 {
		t.Fatalf("id %d: pid %d", a, a.PID())
	}
	for _, c := range []struct {
		name       string
		uptime     int64
		sent, recv time.Duration
	}{
		{"0.4 s later", 59, 400 * time.Millisecond, 401 * time.Millisecond},
		{"1 s later", 60, time.Second, time.Second + time.Millisecond},
		{"an uptime 1 s more (whole seconds of the dates)", 61, time.Second + 100*time.Millisecond, time.Second + 101*time.Millisecond},
		{"a minute later", 119, time.Minute + 200*time.Millisecond, time.Minute + 210*time.Millisecond},
		{"an answer that took 5 s", 124, 65 * time.Second, 70 * time.Second},
		{"an hour later", 3659, time.Hour, time.Hour + time.Millisecond},
	} {
		if got := p.Identify(7, c.uptime, at(c.sent), at(c.recv)); got != a {
			t.Errorf("%s: %s, want %s (the same process)", c.name, got, a)
		}
	}
	// Restarted 4 s after it started, with the same pid (its own pid
	// namespace: a container).
	b := p.Identify(7, 3655, at(time.Hour+4*time.Second), at(time.Hour+4*time.Second+time.Millisecond))
	if b == a || b.PID() != 7 {
		t.Fatalf("a restart keeping the pid: %s, the process before %s", b, a)
	}
	if got := p.Identify(7, 3656, at(time.Hour+5*time.Second), at(time.Hour+5*time.Second+time.Millisecond)); got != b {
		t.Errorf("the restarted process answered again: %s, want %s", got, b)
	}
	c := p.Identify(8, 3656, at(time.Hour+5*time.Second), at(time.Hour+5*time.Second+time.Millisecond))
	if c == a || c == b || c.PID() != 8 {
		t.Errorf("another pid: %s (before: %s, %s)", c, a, b)
	}
	if got := p.Identify(7, 3656, at(time.Hour+5*time.Second), at(time.Hour+5*time.Second+time.Millisecond)); got != b {
		t.Errorf("a process seen before a newer one: %s, want %s", got, b)
	}
	// An uptime rounded the other way: the same process.
	if got := p.Identify(8, 3655, at(time.Hour+5*time.Second), at(time.Hour+5*time.Second+time.Millisecond)); got != c {
		t.Errorf("1 s off (the uptime's rounding): %s, want %s", got, c)
	}
	// A reload's new worker starts at uptime 0 (here with a pid seen before).
	if d := p.Identify(8, 0, at(time.Hour+10*time.Second), at(time.Hour+10*time.Second+time.Millisecond)); d == c {
		t.Errorf("a worker started 1 h later with the same pid: %s, the one before", d)
	}
	if a.String() != "worker 7 (process #1)" || ID(0).String() != "unknown" {
		t.Errorf("String: %q %q", a.String(), ID(0).String())
	}
	// The table keeps the last Keep processes.
	for i := range 2 * Keep {
		p.Identify(int64(100+i), 1, at(2*time.Hour), at(2*time.Hour))
	}
	if n := len(p.seen); n != Keep {
		t.Errorf("%d processes kept, want %d", n, Keep)
	}
}

// Package haproxyproc tells HAProxy worker processes apart by their pid
// and their start time, for both drivers (pkg/haproxy through `show info`,
// pkg/dataplaneapi through GET /runtime/info): a pid alone repeats across
// restarts in a container's pid namespace.
package haproxyproc

import (
	"fmt"
	"sync"
	"time"
)

// ID names one HAProxy worker process among those a driver has seen
// (Table): its pid in the low 32 bits, a sequence number of the
// driver's above; 0 is unknown. The driver's caches of what runs (the read
// cache, the forced-up records) hold it where they would hold a pid.
type ID int64

const mask = 1<<32 - 1

// PID is the pid of the process p names.
func (p ID) PID() int { return int(p & mask) }

// String names p for a log line: "worker 7 (process #3)".
func (p ID) String() string {
	if p == 0 {
		return "unknown"
	}
	return fmt.Sprintf("worker %d (process #%d)", p.PID(), int64(p)>>32)
}

// Table tells apart the HAProxy worker processes a driver's runtime reads
// answer from (the stats socket's `show info`, the Data Plane API's GET
// /runtime/info). A pid alone does not: in its own pid namespace (the
// shipped container, docker/haproxy: restarted by its restart policy or
// after a crash) HAProxy's worker has the same pid on every start, and the
// restarted process runs the states of the server-state file (those of the
// last reload or refresh, not those set at runtime since). A process is its
// pid and its start time, which both answers tell within a second or so:
// the uptime (Uptime_sec), whole seconds since the worker started (a
// reload's new worker starts at 0), puts the start in
// (sent - uptime - 1 s, received - uptime], sent and received bounding when
// HAProxy answered. Two answers are of one process when their pids are
// equal and their bounds of its start meet, Slack allowed. The zero Table
// is ready to use; it is safe for concurrent use.
type Table struct {
	mu   sync.Mutex
	seq  int64
	seen []entry // the last Keep processes seen, the latest last
}

type entry struct {
	id  ID
	pid int64
	// lo, hi bound the process's start as its latest answer told it.
	lo, hi time.Time
}

const (
	// Slack is how far apart two answers' bounds of one process's
	// start may be and still be taken for one process: the uptime is
	// HAProxy's clock, sent and received this controller's (time.Now,
	// monotonic; a step of the wall clock that HAProxy does not correct
	// moves its uptime: one full read more), HAProxy reads its clock once
	// per wake-up of its loop, and an uptime counted as the difference of the two dates' whole
	// seconds (HAProxy 2.6.12 counts the whole seconds of the difference)
	// is up to 1 s more. A restart keeping the pid less than about 2 s
	// after the previous start (3 s at worst, plus the answers' delays)
	// is not told apart: the drivers' periodic full reads
	// still find what it changed.
	Slack = time.Second
	// Keep is how many processes are remembered (an answer from a
	// process seen before a newer one keeps its id).
	Keep = 4
)

// Identify returns the id of the process that answered pid and uptime
// (Uptime_sec, seconds) to a request sent at sent and answered at recv.
func (p *Table) Identify(pid int64, uptime int64, sent, recv time.Time) ID {
	up := time.Duration(uptime) * time.Second
	lo, hi := sent.Add(-up-time.Second), recv.Add(-up)
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.seen) - 1; i >= 0; i-- {
		s := p.seen[i]
		if s.pid != pid || lo.After(s.hi.Add(Slack)) || s.lo.After(hi.Add(Slack)) {
			continue
		}
		// The latest bounds, not their intersection: a slow drift of the
		// two clocks must not add up over a process's life.
		s.lo, s.hi = lo, hi
		p.seen = append(append(p.seen[:i:i], p.seen[i+1:]...), s)
		return s.id
	}
	p.seq++
	s := entry{id: ID(p.seq<<32 | pid&mask), pid: pid, lo: lo, hi: hi}
	if len(p.seen) >= Keep {
		p.seen = append(p.seen[:0:0], p.seen[len(p.seen)-Keep+1:]...)
	}
	p.seen = append(p.seen, s)
	return s.id
}

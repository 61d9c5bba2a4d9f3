package haproxy

import (
	"fmt"
	"sync"
	"time"
)

// procID names one HAProxy worker process among those a driver has seen
// (procTable): its pid in the low 32 bits, a sequence number of the
// driver's above; 0 is unknown. The driver's caches of what runs (the read
// cache, the forced-up records) hold it where they would hold a pid.
type procID int64

const procMask = 1<<32 - 1

// PID is the pid of the process p names.
func (p procID) PID() int { return int(p & procMask) }

// String names p for a log line: "worker 7 (process #3)".
func (p procID) String() string {
	if p == 0 {
		return "unknown"
	}
	return fmt.Sprintf("worker %d (process #%d)", p.PID(), int64(p)>>32)
}

// procTable tells apart the HAProxy worker processes the stats socket
// answers from. A pid alone does not: in its own pid namespace (the shipped
// container, docker/haproxy: restarted by its restart policy or after a
// crash) HAProxy's worker has the same pid on every start, and the
// restarted process runs the states of the server-state file (those of
// the last reload or refresh, not those set at runtime since). A process
// is its pid and its start time, which `show info` tells within a second or
// so in the same answer: Uptime_sec, whole seconds since the worker started
// (a reload's new worker starts at 0), puts the start in
// (sent - uptime - 1 s, received - uptime], sent and received bounding when
// HAProxy answered. Two answers are of one process when their pids are
// equal and their bounds of its start meet, procSlack allowed. The Data
// Plane API driver tells processes apart the same way
// (pkg/dataplaneapi/process.go).
type procTable struct {
	mu   sync.Mutex
	seq  int64
	seen []procSeen // the last procKeep processes seen, the latest last
}

type procSeen struct {
	id  procID
	pid int
	// lo, hi bound the process's start as its latest answer told it.
	lo, hi time.Time
}

const (
	// procSlack is how far apart two answers' bounds of one process's
	// start may be and still be taken for one process: the uptime is
	// HAProxy's clock, sent and received this controller's (time.Now,
	// monotonic; a step of the wall clock that HAProxy does not correct
	// moves its uptime: one full read more), HAProxy reads its clock once
	// per wake-up of its loop, and an uptime counted as the difference of the two dates' whole
	// seconds (HAProxy 2.6.12 counts the whole seconds of the difference)
	// is up to 1 s more. A restart keeping the pid less than about 2 s
	// after the previous start (3 s at worst, plus the answers' delays)
	// is not told apart: the periodic full read (Options.FullReadEvery)
	// still finds what it changed.
	procSlack = time.Second
	// procKeep is how many processes are remembered (an answer from a
	// process seen before a newer one keeps its id).
	procKeep = 4
)

// identify returns the id of the process that answered pid and uptime
// (Uptime_sec) to a `show info` sent at sent and answered at recv.
func (p *procTable) identify(pid int, uptime int64, sent, recv time.Time) procID {
	up := time.Duration(uptime) * time.Second
	lo, hi := sent.Add(-up-time.Second), recv.Add(-up)
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.seen) - 1; i >= 0; i-- {
		s := p.seen[i]
		if s.pid != pid || lo.After(s.hi.Add(procSlack)) || s.lo.After(hi.Add(procSlack)) {
			continue
		}
		// The latest bounds, not their intersection: a slow drift of the
		// two clocks must not add up over a process's life.
		s.lo, s.hi = lo, hi
		p.seen = append(append(p.seen[:i:i], p.seen[i+1:]...), s)
		return s.id
	}
	p.seq++
	s := procSeen{id: procID(p.seq<<32 | int64(pid)&procMask), pid: pid, lo: lo, hi: hi}
	if len(p.seen) >= procKeep {
		p.seen = append(p.seen[:0:0], p.seen[len(p.seen)-procKeep+1:]...)
	}
	p.seen = append(p.seen, s)
	return s.id
}

package dataplaneapi

import (
	"fmt"
	"sync"
	"time"
)

// procTable tells apart the HAProxy processes the API's runtime socket
// answers from. A pid alone does not: in its own pid namespace (the shipped
// container, restarted by its restart policy or after a crash) HAProxy has
// the same pid on every start, and the restarted process runs the states of
// the last reload's server-state file, not those set since. A process is
// its pid and its start time, which GET /runtime/info tells within a second
// or so in the same answer: uptime, in whole seconds (HAProxy's
// Uptime_sec), puts the start in (sent - uptime - 1 s, received - uptime].
// Two answers are of one process when their pids are equal and their
// bounds of its start meet, procSlack allowed.
//
// Each process seen gets an id no other process of this client gets: its
// pid in the low 32 bits, a sequence number above (procPID, procName). The
// driver's caches of what runs (the admin states, the forced health
// records, the services in sync) hold these ids where they say "pid".
type procTable struct {
	mu   sync.Mutex
	seq  int64
	seen []procSeen // the last procKeep processes seen, the latest last
}

type procSeen struct {
	id, pid int64
	// lo, hi bound the process's start as its latest answer told it.
	lo, hi time.Time
}

const (
	// procSlack is how far apart two answers' bounds of one process's
	// start may be and still be taken for one process: the uptime is
	// HAProxy's clock, sent and received this controller's (time.Now,
	// monotonic), and a step of the wall clock that HAProxy does not
	// correct moves its uptime. A restart less than about 2 s after the
	// previous start, with the same pid, is not told apart (the periodic
	// full read, TargetOptions.AdminReadEvery, still finds what it changed).
	procSlack = time.Second
	// procKeep is how many processes are remembered (an answer from a
	// process seen before a newer one keeps its id).
	procKeep = 4
	procMask = 1<<32 - 1
)

// identify returns the id of the process that answered pid and uptime
// (seconds) to a GET sent at sent and answered at recv.
func (p *procTable) identify(pid, uptime int64, sent, recv time.Time) int64 {
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
	s := procSeen{id: p.seq<<32 | pid&procMask, pid: pid, lo: lo, hi: hi}
	if len(p.seen) >= procKeep {
		p.seen = append(p.seen[:0:0], p.seen[len(p.seen)-procKeep+1:]...)
	}
	p.seen = append(p.seen, s)
	return s.id
}

// procPID is the pid of the process id names (see procTable).
func procPID(id int64) int64 { return id & procMask }

// procName names the process id for a log line: "pid 7 (process #3)".
func procName(id int64) string {
	if id == 0 {
		return "unknown"
	}
	return fmt.Sprintf("pid %d (process #%d)", procPID(id), id>>32)
}

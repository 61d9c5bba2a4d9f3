package dataplaneapi

import (
	"strings"
	"sync"
	"time"

	"github.com/haproxytech/client-native/v5/models"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// forcedCache keeps what the answers of the controller's own runtime PUTs
// of operational_state said (the API reads the server back from HAProxy
// after changing it), so that an apply does not GET the live health of
// every backend where a server is forced: in a 1,000-cluster mass failover
// that was 2,000 GETs per apply (6,256 over the 3 applies), each apply
// re-reading servers it had just forced.
//
// Why this is safe (the three rules of the forced health, see target.Diff):
//
//   - The write fence (ForceDown) must never be lifted by us while the old
//     primary may take writes. Diff forces a fenced server DOWN unless the
//     current view says it is DOWN. A record says it is DOWN only while
//     HAProxy's checks cannot have raised it since our forced DOWN: `set
//     server B/S health down` resets the check's health to 0, and a server
//     comes UP only after `rise` good checks, spaced at least fastinter
//     (inter when unset) apart, less the spread-checks jitter; the first
//     may come at once. So a forced DOWN at time T keeps it DOWN until at
//     least T + (rise-1) x fastinter x (1 - spread-checks%) (riseBound),
//     counted from before the PUT was sent. Older, or unknown, and the
//     backend is read as before (one GET) and the server forced DOWN if it
//     is UP, or (a server we forced DOWN before) it is forced DOWN again
//     blind: one PUT, the cost of the GET, and a new record. A fence read
//     DOWN is recorded as a forced DOWN answered down, from before the
//     GET, and read again once over: the API's PUT handler (2.9.9, 3.2.0) sends `set
//     server health down` only when the server is not DOWN already, so a
//     forced DOWN of a server DOWN by its checks resets nothing either,
//     and its answer and a read tell the same (what a record trusts of a
//     server DOWN when forced is that its checks were not rising: an old
//     primary that lost the key answers Patroni's /primary with 503). A
//     dead old primary is then read once per bound, not at every apply (2,000 GETs per apply in a 1,000-cluster
//     mass failover). The records
//     count only for the HAProxy process they were made in (its pid and
//     start time, procTable, read by every twin-layout apply): a reload or
//     a restart, also one keeping the pid, can bring a server UP at once.
//   - A new leader held DOWN until it is read-write (HoldDown) must not come
//     UP through its checks before. Through the API a forced DOWN resets
//     nothing when the server is DOWN already (most new leaders), so the
//     hold is the admin state drain, set by the same PUT (see holdState):
//     its checks may raise it, it takes no connection. Diff still forces it
//     DOWN again at every apply unless the current view says so
//     (HoldDown); no read is needed for it. A record younger than
//     holdShare of the bound (0.5 s of Pigsty's 2 s) marks it held, so the
//     applies of one burst (paced 200 ms apart) do not force it again and
//     again: it is forced again by the first apply after that, which the
//     controller makes at least every second while a hold lasts, so the
//     last forced DOWN is at most ~1.5 s old when it is forced again, 0.5 s
//     before its checks can have raised it (forcing it at every apply left
//     1 s; both assume the apply itself is short: an apply that takes
//     seconds delays every re-assertion alike).
//   - A force UP must never go against a later real check failure: once our
//     own forced UP answered UP, the server counts as UP for as long as it
//     stays to be forced UP (its promotion) in this HAProxy process; if its
//     checks take it DOWN after that, that is their verdict, and it is not
//     forced UP again (a new promotion starts without a record).
//
// An operator's `set server … health` is not bounded by the checks: a
// fenced server brought UP that way within the bound is forced DOWN again
// by the first apply after the bound (the controller re-asserts fences
// every second), not at once.
type forcedCache struct {
	mu sync.Mutex
	// recs: "backend/server" -> the last answer of our own forced PUT.
	recs map[string]forcedRec
}

// forcedRec is what one forced PUT's answer said.
type forcedRec struct {
	up   bool      // forced UP (else forced DOWN)
	down bool      // the answer's operational_state was down
	at   time.Time // opts.Now() before the PUT was sent
	pid  int64     // the HAProxy process the apply read (procTable id; 0: unknown)
	// read: the record is of a read (a fence its checks had DOWN), not of
	// a PUT of ours: once its bound is over it is read again, not forced.
	read bool
}

// holdShare: a held new leader is forced DOWN again once its last forced
// DOWN is this share of riseBound old.
const holdShare = 0.25

// health is what a record tells of one desired forced server now.
type health int

const (
	healthUnknown health = iota // read it (or, held, force it blind)
	healthDown                  // DOWN since our forced DOWN, and its checks cannot have raised it yet
	healthHeld                  // as healthDown, and recent enough not to force a held one again
	healthUp                    // our own forced UP answered UP: never forced again
)

// know says what the records tell of server sv of backend now, for the
// running process pid, with bound the least time its checks take to raise
// it (riseBound).
func (c *forcedCache) know(backend string, sv services.Server, pid int64, now time.Time, bound time.Duration) health {
	if pid == 0 {
		return healthUnknown
	}
	c.mu.Lock()
	r, ok := c.recs[backend+"/"+sv.Name]
	c.mu.Unlock()
	if !ok || r.pid != pid {
		return healthUnknown
	}
	age := now.Sub(r.at)
	switch {
	case sv.ForceUp && r.up && !r.down:
		return healthUp
	case sv.ForceDown && !r.up && r.down && age >= 0 && age < bound:
		if sv.HoldDown && float64(age) < holdShare*float64(bound) {
			return healthHeld
		}
		return healthDown
	}
	return healthUnknown
}

// record keeps the answer of a forced PUT made at at.
func (c *forcedCache) record(key string, up bool, answer string, at time.Time, pid int64) {
	if answer == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.recs == nil {
		c.recs = map[string]forcedRec{}
	}
	c.recs[key] = forcedRec{up: up, down: answer == "down", at: at, pid: pid}
}

// readDown records a fence read DOWN by a GET sent at at: as a forced DOWN
// answered down, except that it is read again, not forced, once over (it
// was never forced by us: most often a dead old primary its checks have
// DOWN, and a GET costs the API less than a PUT and reports nothing).
func (c *forcedCache) readDown(key string, at time.Time, pid int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.recs[key]; ok && !r.read && !r.up {
		// Forced by us before: it stays one we force again.
		r.at, r.pid = at, pid
		c.recs[key] = r
		return
	}
	if c.recs == nil {
		c.recs = map[string]forcedRec{}
	}
	c.recs[key] = forcedRec{down: true, at: at, pid: pid, read: true}
}

// readBefore reports whether server key's record is a fence read DOWN
// (not forced by us) in HAProxy process pid, whatever its age.
func (c *forcedCache) readBefore(key string, pid int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.recs[key]
	return ok && r.read && r.pid == pid && pid != 0
}

// wasDown reports whether server key was forced DOWN by us since its
// fence began (any process).
func (c *forcedCache) wasDown(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.recs[key]
	return ok && !r.up && !r.read
}

// lastDown is when server key was last forced DOWN by us (any process).
func (c *forcedCache) lastDown(key string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.recs[key]
	return r.at, ok && !r.up
}

// prune drops the records of servers desired no longer forces the same way
// (a fence lifted, a promotion over): the next force starts without one.
func (c *forcedCache) prune(desired []services.Service) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.recs) == 0 {
		return
	}
	keep := make(map[string]forcedRec, len(c.recs))
	for _, d := range desired {
		for _, sv := range d.Servers {
			if !sv.ForceUp && !sv.ForceDown {
				continue
			}
			k := d.Name + "/" + sv.Name
			if r, ok := c.recs[k]; ok && (r.up && sv.ForceUp || !r.up && sv.ForceDown) {
				keep[k] = r
			}
		}
	}
	c.recs = keep
}

// forget drops every record (a reload: the new process's health is not
// what the old one answered).
func (c *forcedCache) forget() {
	c.mu.Lock()
	c.recs = nil
	c.mu.Unlock()
}

// maxSpread is HAProxy's largest spread-checks (percent), assumed when the
// global section was not read.
const maxSpread = 50

// riseBound is the least time HAProxy's checks take to bring a server of
// backend d UP after it was forced DOWN: (rise-1) x fastinter (inter when
// fastinter is unset), less the spread-checks jitter. It is 0 (no record is
// trusted) when the default-server line, as the file has it and as desired,
// does not set rise and an interval, or a server line sets check timings
// or an agent check (which can set a server UP): then the health is read
// at every apply, as before.
func riseBound(sn *snapshot, d services.Service) time.Duration {
	file := boundOf(dsLenient.get(sn.dsText[d.Name], false).params, sn.spread)
	want := boundOf(dsLenient.get(d.DefaultServer, false).params, sn.spread)
	b := min(file, want)
	if b <= 0 {
		return 0
	}
	for _, r := range sn.servers[d.Name] {
		if r == nil || sn.partial[d.Name+"/"+r.name] || timingWords(r.opts) {
			return 0
		}
	}
	return b
}

func boundOf(p models.ServerParams, spread int) time.Duration {
	if p.Rise == nil || *p.Rise < 2 || p.AgentCheck == "enabled" {
		return 0
	}
	var every int64
	switch {
	case p.Fastinter != nil:
		every = *p.Fastinter
	case p.Inter != nil:
		every = *p.Inter
	default:
		return 0
	}
	if spread < 0 || spread > maxSpread {
		spread = maxSpread
	}
	ms := (*p.Rise - 1) * every * int64(100-spread) / 100
	return time.Duration(ms) * time.Millisecond
}

// timingWords reports whether server options set check timings or an
// agent check.
func timingWords(opts string) bool {
	for _, w := range strings.Fields(opts) {
		switch w {
		case "rise", "inter", "fastinter", "downinter", "agent-check", "agent-inter":
			return true
		}
	}
	return false
}

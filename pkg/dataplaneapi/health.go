package dataplaneapi

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// readHealth sets Down (and HoldDown) in st.current on the servers desired
// forces UP or DOWN (live health matters nowhere else): from the answers of
// our own forced PUTs where they still tell (forcedCache, which says why
// that is safe); else, when apply is set and the running process is known
// (twin layout), a held new leader, a new primary not in maint, and a fence
// we forced before are forced blind (one PUT, the cost of one GET of the
// backend, whose answer is the record the next applies use); else (a fence
// never forced: most often a dead old primary its checks have DOWN) from
// one runtime GET per backend, readParallel in flight. (One GET
// /stats/native answers every server of the HAProxy, but at 1,000
// clusters it took 10 s through the API: O(fleet).)
//
// A blind force UP is the first of a promotion in this process (a record
// of it exists after it), so it never goes against a check failure that
// came after an earlier force UP of ours; it is what a read finding the
// server DOWN would have done, and a server already UP stays UP.
func (t *Target) readHealth(ctx context.Context, sn *snapshot, desired []services.Service, st *state, apply bool) error {
	return t.planHealth(sn, desired, st, apply).run(ctx)
}

// healthRead is the part of readHealth that reads: the GETs of the
// backends whose forced servers the records do not tell.
type healthRead struct {
	t        *Target
	st       *state
	apply    bool
	backends []string
	decided  map[string]health
	fences   map[string]bool
	// later: backends whose only read is the re-read of fences read DOWN
	// before, in a backend whose new primary our force UP already has UP
	// (see planHealth); laterFences names those fences.
	later       []string
	laterFences map[string]bool
	// writable: backend -> the Writable servers whose admin state is read
	// (see holdState).
	writable map[string][]string
}

// pending reports whether run will GET anything.
func (h *healthRead) pending() bool { return len(h.backends) > 0 }

// planHealth sets what the records tell (see readHealth) and returns the
// reads left to run.
func (t *Target) planHealth(sn *snapshot, desired []services.Service, st *state, apply bool) *healthRead {
	t.forced.prune(desired)
	now := t.opts.Now()
	blind := apply && st.pid != 0
	var backends []string
	// decided: "backend/server" -> what the records tell.
	decided := map[string]health{}
	// fences: the write fences (not held) whose backend is read.
	fences := map[string]bool{}
	var later []string
	laterFences := map[string]bool{}
	for _, d := range desired {
		if !target.WantsHealth(d) || !st.current.has(d.Name) {
			continue
		}
		bound := riseBound(sn, d)
		known := map[string]health{}
		read := false
		// reread: the fences of d read only because their last read DOWN
		// is past its bound; upLeader: d has a new primary our force UP
		// has UP; unknown: the servers the records do not tell.
		var reread []string
		upLeader, unknown := false, 0
		for _, sv := range d.Servers {
			c, ok := st.current.server(d.Name, sv.Name)
			if !ok || sv.Disabled || !sv.ForceUp && !sv.ForceDown {
				continue
			}
			h := healthUnknown
			if c.Admin != "maint" {
				// (Leaving maint brings a server UP at once, whatever
				// was forced before.)
				h = t.forced.know(d.Name, sv, st.pid, now, bound)
			}
			known[sv.Name] = h
			if h == healthUnknown {
				unknown++
			}
			if sv.ForceUp && !sv.ForceDown && h == healthUp {
				upLeader = true
			}
			if h == healthUnknown && sv.ForceDown && !sv.HoldDown {
				fences[d.Name+"/"+sv.Name] = true
			}
			// Read the backend for a server of unknown health, except a
			// held new leader (forced DOWN again whatever its health)
			// and, when forcing blind, a new primary (forced UP blind)
			// and a fence we forced before (forced DOWN again blind). A
			// fence we never forced is read: most often it is DOWN by
			// its own checks (a dead old primary), and a GET of its
			// backend is cheaper than a forced PUT and reports nothing.
			switch {
			case h != healthUnknown, sv.ForceDown && sv.HoldDown:
			case blind && sv.ForceUp && !sv.ForceDown:
			case blind && sv.ForceDown && t.forced.wasDown(d.Name+"/"+sv.Name):
			default:
				read = true
				if blind && sv.ForceDown && t.forced.readBefore(d.Name+"/"+sv.Name, st.pid) {
					reread = append(reread, sv.Name)
				}
			}
		}
		for _, sv := range d.Servers {
			h, ok := known[sv.Name]
			if !ok {
				continue
			}
			c, _ := st.current.server(d.Name, sv.Name)
			switch h {
			case healthUnknown:
				// What the read does not tell is forced blind.
				if blind && (!read || sv.HoldDown) {
					t.markBlind(st, d.Name, sv, &c)
					st.current.set(d.Name, sv.Name, c)
				}
				continue
			case healthHeld:
				c.Down, c.HoldDown = true, true
			case healthDown:
				c.Down = true
			case healthUp:
				c.Down = false
			}
			st.current.set(d.Name, sv.Name, c)
			decided[d.Name+"/"+sv.Name] = h
		}
		if read && upLeader && unknown == len(reread) && d.Layout != services.LayoutTwins {
			// Nothing but re-reads of fences read DOWN before, and the new
			// primary is UP by our force already: nothing this apply
			// brings UP waits for them (a fence must be read before the
			// force UP of a new primary, not after it). They are read
			// after the apply's other writes, so that in a mass failover
			// whose applies outlast the bound (2 s of Pigsty's checks)
			// the next apply's new primaries and flips do not wait
			// behind a re-read of every fence of the ones before (2,000
			// GETs). A fence read UP then is forced DOWN at once, by the
			// same apply. (By Patroni's rule an old primary's /primary
			// cannot pass while another member holds the leader key: a
			// read UP is an operator's `set server … health up`.)
			for _, name := range reread {
				c, _ := st.current.server(d.Name, name)
				c.Down = true // until read: Diff leaves it to fencesLater
				st.current.set(d.Name, name, c)
				delete(fences, d.Name+"/"+name)
				laterFences[d.Name+"/"+name] = true
			}
			later = append(later, d.Name)
			read = false
		}
		if read {
			backends = append(backends, d.Name)
		}
	}
	writable := t.hold.toCheck(desired)
	for b, names := range writable {
		if sn.be[b] == nil {
			// Not in the running configuration: this process creates
			// it, so no drain can be on it (the server-state file has
			// nothing of a backend the running process lacks). Without
			// this, the first change after a start that created the
			// fleet's backends read every write backend (2,000 GETs in
			// the first switchover at 1,000 clusters).
			for _, n := range names {
				t.hold.seen(b + "/" + n)
			}
			delete(writable, b)
			continue
		}
		// (A backend in later has a new primary to force UP, its one
		// Writable server, which toCheck leaves to the force-up's PUT: it
		// is never read here too.)
		if st.current.has(b) && !slices.Contains(backends, b) {
			backends = append(backends, b)
		}
	}
	return &healthRead{t: t, st: st, apply: apply, backends: backends, decided: decided, fences: fences, writable: writable,
		later: later, laterFences: laterFences}
}

// fencesLater re-reads the fences planHealth left for after the apply's
// other writes (h.later), records those read DOWN and forces DOWN those
// read UP; it returns the changes it made.
func (h *healthRead) fencesLater(ctx context.Context, desired []services.Service) ([]target.Change, error) {
	t, st := h.t, h.st
	if len(h.later) == 0 {
		return nil, nil
	}
	rs, sent, errs := t.runtimeServersAt(ctx, h.later)
	if len(errs) > 0 {
		return nil, fmt.Errorf("re-read the write fences: %s", strings.Join(errs, "; "))
	}
	sub := map[string]*target.Backend{}
	for b, servers := range rs {
		for _, r := range servers {
			k := b + "/" + r.Name
			if !h.laterFences[k] {
				continue
			}
			c, _ := st.current.server(b, r.Name)
			c.Down = r.OperationalState == "down" && r.AdminState != "maint"
			st.current.set(b, r.Name, c)
			if c.Down {
				t.forced.readDown(k, sent[b], st.pid)
			}
		}
		sub[b] = st.current.backend(b)
	}
	var want []services.Service
	for _, d := range desired {
		if sub[d.Name] != nil {
			want = append(want, d)
		}
	}
	var up []target.Change
	for _, c := range target.Diff(sub, want) {
		if c.Kind == target.KindForceDown && h.laterFences[c.Backend+"/"+c.Server] {
			up = append(up, c)
		}
	}
	// (A backend with a fence read here has no new primary to force UP:
	// nothing to hold back; one that does not take fails the apply.)
	guards := &guardBook{}
	if err := t.fence(ctx, up, st.pid, guards); err != nil {
		return up, err
	}
	return up, guards.err(nil)
}

// run GETs the backends left by planHealth, readParallel in flight, and
// sets what they show.
func (h *healthRead) run(ctx context.Context) error {
	t, st, apply, backends, decided, fences := h.t, h.st, h.apply, h.backends, h.decided, h.fences
	if len(backends) == 0 {
		return nil
	}
	start := time.Now()
	rs, sent, errs := t.runtimeServersAt(ctx, backends)
	if len(errs) > 0 {
		return fmt.Errorf("read the health of the backends forcing a server up or down: %s", strings.Join(errs, "; "))
	}
	for b, servers := range rs {
		for _, r := range servers {
			c, ok := st.current.server(b, r.Name)
			if !ok {
				continue
			}
			if slices.Contains(h.writable[b], r.Name) {
				if r.AdminState == holdAdmin {
					if st.found == nil {
						st.found = map[string]bool{}
					}
					st.found[b+"/"+r.Name] = true
				} else {
					t.hold.seen(b + "/" + r.Name)
				}
			}
			down := r.OperationalState == "down" && r.AdminState != "maint"
			switch decided[b+"/"+r.Name] {
			case healthUp:
				continue // our forced UP stands; its checks decide after it
			case healthDown, healthHeld:
				if down {
					continue
				}
				// UP although the bound says it cannot be: an operator,
				// or a bound wrong. Force it DOWN again.
				c.HoldDown = false
			}
			c.Down = down
			st.current.set(b, r.Name, c)
			if down && apply && st.pid != 0 && fences[b+"/"+r.Name] {
				// A fence read DOWN (most often a dead old primary its
				// checks have DOWN) counts as a forced DOWN answered
				// down: the next applies do not read its backend until
				// its checks could have raised it (one GET per bound,
				// not per apply: 2,000 per apply in a mass failover).
				t.forced.readDown(b+"/"+r.Name, sent[b], st.pid)
			}
		}
	}
	if took := time.Since(start); took > time.Second {
		t.log.Info("read the health of the backends forcing a server up or down", zap.Int("backends", len(backends)), zap.Duration("took", took))
	}
	return nil
}

// markBlind sets c (server sv of backend, health unknown) so that Diff
// forces it, and notes why in st.blind (what the change's detail says).
func (t *Target) markBlind(st *state, backend string, sv services.Server, c *services.Server) {
	why := ""
	switch {
	case sv.ForceDown:
		c.Down, c.HoldDown = false, false
		why = "health not read: forced DOWN"
		if at, ok := t.forced.lastDown(backend + "/" + sv.Name); ok {
			why = fmt.Sprintf("forced DOWN again (the last forced DOWN %s ago: its checks could have raised it since)",
				t.opts.Now().Sub(at).Round(time.Millisecond))
		}
	case sv.ForceUp && c.Admin != "maint":
		c.Down = true
		why = "health not read: forced UP once (its checks decide after it)"
	default:
		return
	}
	if st.blind == nil {
		st.blind = map[string]string{}
	}
	st.blind[backend+"/"+sv.Name] = why
}

// blindDetails rewrites the detail of the changes forced blind (Diff's
// says what a read found).
func blindDetails(changes []target.Change, blind map[string]string) {
	if len(blind) == 0 {
		return
	}
	for i, c := range changes {
		if c.Kind != target.KindForceDown && c.Kind != target.KindForceUp {
			continue
		}
		why, ok := blind[c.Backend+"/"+c.Server]
		if !ok {
			continue
		}
		role := "the old primary, fenced from writes"
		switch {
		case c.Kind == target.KindForceUp:
			role = "the new primary, per Patroni"
		case c.Held:
			role = "held: the new leader, not read-write yet"
		}
		changes[i].Detail = why + ": " + role
	}
}

package dataplaneapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haproxytech/client-native/v5/models"
	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// flipParallel is how many runtime PUTs are in flight at once: the API's
// runtime endpoint measured 6,000 flips in 3.4 s with 8 parallel clients.
const flipParallel = 8

// serverName is name, as the string of servers' server so named when there
// is one: the admin cache keeps what waitRuntime reads (every twin
// server: 12,000 at 1,000 clusters), and a name decoded from the API's
// answer is a string of its own, while desired's are shared.
func serverName(servers []services.Server, name string) string {
	for i := range servers {
		if servers[i].Name == name {
			return servers[i].Name
		}
	}
	return name
}

// adminWord is an admin state, as a constant string when it is one of
// HAProxy's three (see serverName).
func adminWord(s string) string {
	switch s {
	case "ready":
		return "ready"
	case "drain":
		return "drain"
	case "maint":
		return "maint"
	}
	return s
}

// waitRuntime waits (bounded by the reload timeout) until the running
// HAProxy has every server of the twin backends in names: after a reload the
// API answers before the new worker serves.
func (t *Target) waitRuntime(ctx context.Context, desired []services.Service, names map[string]bool) error {
	ctx, cancel := context.WithTimeout(ctx, t.opts.ReloadTimeout)
	defer cancel()
	tick := time.NewTicker(t.opts.ReloadPollInterval)
	defer tick.Stop()
	for _, d := range desired {
		if d.Layout != services.LayoutTwins || !names[d.Name] {
			continue
		}
		for {
			rs, err := t.c.GetRuntimeServers(ctx, d.Name)
			last := ""
			have := make(map[string]string, len(rs))
			if err != nil {
				last = err.Error()
			} else {
				for _, r := range rs {
					if r != nil {
						have[serverName(d.Servers, r.Name)] = adminWord(r.AdminState)
					}
				}
				for _, sv := range d.Servers {
					if _, ok := have[sv.Name]; !ok {
						last = "server " + sv.Name + " missing"
						break
					}
				}
			}
			if last == "" {
				// What the new worker runs: the next apply starts from it.
				t.adminKeep(map[string]map[string]string{d.Name: have})
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("after the reload the running HAProxy does not serve %s: %s", d.Name, last)
			case <-tick.C:
			}
		}
	}
	return nil
}

// forcedUp names the servers desired forces UP ("backend/server").
func forcedUp(desired []services.Service) map[string]bool {
	out := map[string]bool{}
	for _, d := range desired {
		for _, sv := range d.Servers {
			if sv.ForceUp {
				out[d.Name+"/"+sv.Name] = true
			}
		}
	}
	return out
}

func splitFlips(changes []target.Change) (flips, rest []target.Change) {
	for _, c := range changes {
		if c.Kind == target.KindSetState {
			flips = append(flips, c)
		} else {
			rest = append(rest, c)
		}
	}
	return flips, rest
}

// applyFlips sets twins' admin states through the runtime endpoint (never a
// configuration PUT: each re-saves the whole file): every activation first,
// then every deactivation, each batch with flipParallel requests in flight.
// The API answers each PUT with the server's state read from the running
// HAProxy after the change (its handler runs `show servers state` again), so
// those answers are the read-back of the servers changed; only a server
// whose answer differs from what was asked is read and set again.
// A server in afterFlip (fenced, and readied here: leaving maint brings it
// UP at once) is forced DOWN right after its own flip, by the same worker,
// so that it is UP for one round trip rather than for the rest of the
// flips. The new primaries of force go UP with the activations (incoming
// before outgoing: one wave, one round trip less than after the flips).
//
// The write fences in fence (old primaries, held new leaders) go first,
// in one wave with the activations of the services that take no writes
// (their flips bring no primary UP: the fence need not precede them), so
// that a mass failover's read services do not wait behind 2,000 fences,
// and with the outgoing twins of role-dependent write services (outgoing
// before incoming there: never two primaries); then the activations of
// the write services and the force-ups; then the
// deactivations of the backends with an activation; last, the
// deactivations of the twins of members the DCS does not report running,
// in services that take no writes (unconfirmedTwins: a crashed old
// primary's active twin in the replica service). Those move no
// traffic while HAProxy's checks have them DOWN, which every role check
// does through a member whose PostgreSQL is not running; in a
// 1,000-cluster mass failover they are 1,000 of the ~6,000 PUTs, and the
// traffic's own flips no longer wait behind them. (A member cut from the
// DCS whose demoted PostgreSQL runs on may pass a read check: its twin
// takes reads that much longer.) It returns when the write fences were in
// place, and, when such deactivations went last, when everything before
// them was (every change that moves traffic made; zero otherwise).
//
// The write guards (the fences, and the outgoing twins of write services:
// see guardBook) are checked as their answers come, and the activations
// and force-ups of a backend whose guard did not take (in the first wave,
// or in guards already: the fences applyChanges sent before a
// configuration write) are not sent, nor the other flips of that backend
// but its guards; the other backends go on, and the error names them.
// guards may be nil (none sent before).
//
// Any other PUT that fails holds back only what depends on it (see
// flipFails: a failed activation, its backend's deactivations that were to
// follow it); every other backend goes on through every wave, and the
// apply fails at the end naming every failed PUT and what was held back
// (the backends of those are read again by the next apply). Only a write
// check that fails, or the end of ctx, stops the waves.
//
// link ties the two runs of an apply whose read services' flips go while
// the forced servers' health is read (flipsBeforeHealth): that run notes
// its activations in link.made as they end, and this apply's main run
// sends a backend's deactivations only after that backend's activations
// there (link.before), and holds them back when one failed.
func (t *Target) applyFlips(ctx context.Context, desired []services.Service, flips, fence, afterFlip, force []target.Change, pid int64,
	guards *guardBook, link flipLink) (time.Time, time.Time, error) {
	if link.made != nil {
		// (An activation not answered by the end was not made.)
		defer link.made.end()
	}
	if guards == nil {
		guards = &guardBook{}
	}
	if len(flips) == 0 {
		// (afterFlip is empty: it is made of flips.)
		if err := t.fence(ctx, fence, pid, guards); err != nil {
			return time.Time{}, time.Time{}, err
		}
		at := time.Now()
		var back []target.Change
		if guards.missedAny() {
			force, back = guards.without(force, guards.held(target.TrackedBy(desired)))
		}
		if err := t.forceUp(ctx, force, pid); err != nil {
			if gerr := guards.err(back); gerr != nil {
				err = fmt.Errorf("%w; %w", err, gerr)
			}
			return at, time.Time{}, err
		}
		return at, time.Time{}, guards.err(back)
	}
	write := map[string]bool{}
	for _, d := range desired {
		write[d.Name] = services.WriteCheck(d.Check)
	}
	guards.write = write
	trackedBy := target.TrackedBy(desired)
	// The backends whose guards sent before did not take: nothing of them
	// but their guards.
	var back, back1 []target.Change
	if held := guards.held(trackedBy); held != nil {
		flips, back = guards.without(flips, held)
		force, back1 = guards.without(force, held)
		afterFlip, _ = guards.without(afterFlip, held)
		back = append(back, back1...)
	}
	fenced := make(map[string]target.Change, len(afterFlip))
	for _, c := range afterFlip {
		fenced[c.Backend+"/"+c.Server] = c
	}
	promoted := forcedUp(desired)
	then := func(c target.Change, rs *models.RuntimeServer) error {
		key := c.Backend + "/" + c.Server
		if f, ok := fenced[key]; ok {
			_, err := t.forceHealth(ctx, f, false, pid)
			return err
		}
		if promoted[key] && rs != nil && rs.AdminState == "ready" {
			if rs.OperationalState == "down" {
				// Readied DOWN: a held twin (kept in maint by the hold,
				// its health forced DOWN) leaves maint DOWN (measured on
				// 2.9.9 and 3.2.0). Force it UP now, the first force UP
				// of this promotion.
				_, err := t.forceHealth(ctx, target.Change{Kind: target.KindForceUp, Backend: c.Backend, Server: c.Server,
					Detail: "health DOWN -> UP: the new primary, per Patroni", Runtime: true}, true, pid)
				return err
			}
			// A new primary readied comes UP at once: as if we had
			// forced it UP (its checks decide after it).
			t.forced.record(key, true, rs.OperationalState, t.opts.Now(), pid)
		}
		return nil
	}
	// Without fences nothing need wait: the activations and force-ups go
	// in the first wave, and so do the deactivations of the backends with
	// no activation (incoming before outgoing is per backend).
	fenced0 := len(fence) > 0
	// An outgoing twin of a write service (a role-dependent one: its
	// member left the primary's role) goes in the first wave too, and the
	// write services' activations and force-ups after it, as after a
	// fence: a write service may be without a server for a round trip,
	// never with two primaries (the old one may still pass /primary for
	// a few checks: a hung Patroni loop).
	writeOut := false
	for _, c := range flips {
		if target.StateOf(c) != "ready" && write[c.Backend] {
			writeOut = true
		}
	}
	wait := fenced0 || writeOut
	early := append([]target.Change(nil), fence...)
	var ups, downs []target.Change
	if wait {
		ups = append(ups, force...)
	} else {
		early = append(early, force...)
	}
	incoming := map[string]bool{}
	for _, c := range flips {
		if target.StateOf(c) == "ready" {
			incoming[c.Backend] = true
		}
	}
	// A force-up brings UP the twins that track its server (a replica
	// service's backup twin of the new primary): their backends'
	// deactivations follow it, as they follow an activation.
	for _, c := range force {
		for _, b := range trackedBy[c.Backend+"/"+c.Server] {
			incoming[b] = true
		}
	}
	unconfirmed := unconfirmedTwins(desired)
	var last []target.Change
	for _, c := range flips {
		switch {
		case goesLast(c, unconfirmed):
			last = append(last, c)
		case target.StateOf(c) != "ready" && write[c.Backend]:
			early = append(early, c)
		case target.StateOf(c) != "ready" && incoming[c.Backend]:
			downs = append(downs, c)
		case target.StateOf(c) != "ready":
			early = append(early, c)
		case write[c.Backend] && wait:
			ups = append(ups, c)
		default:
			early = append(early, c)
		}
	}
	// The deactivations of a backend whose activations go in the first
	// wave (all of them do or none: the write services' wait for the
	// fences) follow its last activation in the same worker, instead of
	// waiting in the third wave for every fence read and force-up of the
	// apply: in a 1,000-cluster mass failover that kept ~3,000 outgoing
	// twins active (their member still taking the traffic of a service it
	// had left) for 5 s more.
	ups1 := map[string]int{}
	for _, c := range early {
		if c.Kind == target.KindSetState && target.StateOf(c) == "ready" {
			ups1[c.Backend]++
		}
		if c.Kind == target.KindForceUp {
			for _, b := range trackedBy[c.Backend+"/"+c.Server] {
				ups1[b]++
			}
		}
	}
	chained := map[string][]target.Change{}
	var downs3 []target.Change
	for _, c := range downs {
		if ups1[c.Backend] > 0 {
			chained[c.Backend] = append(chained[c.Backend], c)
		} else {
			downs3 = append(downs3, c)
		}
	}
	downs = downs3
	answered := &answerBook{m: map[string]map[string]string{}}
	fails := &flipFails{trackedBy: trackedBy, made: link.made, before: link.before}
	var chainMu sync.Mutex
	first := func(c target.Change, rs *models.RuntimeServer) error {
		if err := then(c, rs); err != nil {
			return err
		}
		var brought []string // the backends c brings a server UP in
		switch {
		case c.Kind == target.KindSetState && target.StateOf(c) == "ready":
			brought = []string{c.Backend}
		case c.Kind == target.KindForceUp:
			brought = trackedBy[c.Backend+"/"+c.Server]
		}
		if len(brought) == 0 {
			return nil
		}
		chainMu.Lock()
		var next []target.Change
		for _, b := range brought {
			ups1[b]--
			if ups1[b] == 0 {
				next = append(next, chained[b]...)
				delete(chained, b)
			}
		}
		chainMu.Unlock()
		for _, d := range next {
			// rs answered ready for c: an answer that did not (the
			// repair below reads it) still leaves the backend's other
			// active servers; the deactivation goes as it would have in
			// the third wave. (Its failure is its own: see flipFails.)
			fails.put(d, func() error { return t.putOneState(ctx, d, answered, nil, pid, nil) })
		}
		return nil
	}
	start := time.Now()
	if len(flips) > 100 {
		defer func() {
			t.log.Info("set admin states (read back in the answers)", zap.Int("flips", len(flips)), zap.Duration("took", time.Since(start)))
		}()
	}
	var fencedAt, movedAt time.Time
	batches := [][]target.Change{early, ups, downs, last}
	for i := range batches {
		batch := batches[i]
		after := then
		switch i {
		case 0:
			after = first
		case 2, 3:
			after = nil
		}
		if i == 3 && len(last) > 0 {
			movedAt = time.Now()
		}
		var g *guardBook
		if i == 0 {
			g = guards
		}
		// A PUT that fails holds back what depends on it only (flipFails):
		// the other backends go on through every wave.
		err := t.putWave(ctx, batch, answered, after, pid, g, fails)
		if err == nil && ctx.Err() != nil {
			err = fmt.Errorf("set admin state: %w", ctx.Err())
		}
		if err != nil {
			// (The write check failed, or the apply's context ended:
			// nothing more goes.) What runs in the backends flipped is
			// unknown now.
			var names []string
			for b := range touched(flips) {
				names = append(names, b)
			}
			t.adminForget(names)
			if ferr := fails.err(); ferr != nil {
				err = fmt.Errorf("%w; %w", err, ferr)
			}
			if gerr := guards.err(back); gerr != nil {
				err = fmt.Errorf("%w; %w", err, gerr)
			}
			return fencedAt, time.Time{}, err
		}
		if i == 0 {
			fencedAt = time.Now()
			// The backends whose guard did not take in the first wave:
			// their activations and force-ups, and the deactivations
			// waiting for those, are not sent.
			if held := guards.held(trackedBy); held != nil {
				for j := 1; j < len(batches); j++ {
					var b []target.Change
					batches[j], b = guards.without(batches[j], held)
					back = append(back, b...)
				}
				afterFlip, _ = guards.without(afterFlip, held)
			}
		}
	}
	// The chains whose activations did not all succeed did not run: held
	// back.
	for _, cs := range chained {
		for _, c := range cs {
			fails.holdBack(c)
		}
	}
	t.adminMerge(answered.m)
	// What runs in the backends of a failed PUT is unknown: the next
	// apply reads them (and those held back with them) again. They are
	// neither read nor repaired here: the apply fails, and the
	// controller applies again.
	failedB := fails.backends()
	if len(failedB) > 0 {
		names := make([]string, 0, len(failedB))
		for b := range failedB {
			names = append(names, b)
		}
		t.adminForget(names)
	}
	ferr := fails.err()
	// A backend held back is left as it is: neither its flips not sent
	// nor its guards that did not take are read and repaired here (a
	// repair would ready its incoming twin); the next apply reads the
	// backends of those guards again (a guard whose PUTs failed has no
	// answer).
	held := guards.held(trackedBy)
	if held != nil {
		t.adminForget(guards.backends())
	}
	var wrong []target.Change
	for _, c := range flips {
		if held[c.Backend] || failedB[c.Backend] {
			continue
		}
		if got, ok := answered.m[c.Backend][c.Server]; !ok || (got == "ready") != (target.StateOf(c) == "ready") {
			wrong = append(wrong, c)
		}
	}
	gerr := guards.err(back)
	if ferr != nil {
		if gerr != nil {
			gerr = fmt.Errorf("%w; %w", ferr, gerr)
		} else {
			gerr = ferr
		}
	}
	if len(wrong) == 0 {
		if gerr != nil {
			return fencedAt, time.Time{}, gerr
		}
		return fencedAt, movedAt, nil
	}
	// (A repair moves traffic too: moved is the end.)
	if err := t.verifyFlips(ctx, desired, wrong); err != nil {
		if gerr != nil {
			err = fmt.Errorf("%w; %w", err, gerr)
		}
		return fencedAt, time.Time{}, err
	}
	// A repair may have readied a fenced server again.
	if err := t.forceDown(ctx, afterFlip, pid); err != nil {
		if gerr != nil {
			err = fmt.Errorf("%w; %w", err, gerr)
		}
		return fencedAt, time.Time{}, err
	}
	return fencedAt, time.Time{}, gerr
}

// unconfirmedTwins names the inactive twins of members the DCS does not
// report running ("backend/server"), in the services that take no writes.
// In a role-dependent write service the outgoing twin of an old primary
// the DCS lost (a crash, or a hung Patroni loop whose REST API may still
// pass /primary until HAProxy's checks catch up) keeps its place: its
// deactivation is all that stands between it and the writes.
func unconfirmedTwins(desired []services.Service) map[string]bool {
	out := map[string]bool{}
	for _, d := range desired {
		if services.WriteCheck(d.Check) {
			continue
		}
		for _, sv := range d.Servers {
			if sv.Unconfirmed && sv.Disabled {
				out[d.Name+"/"+sv.Name] = true
			}
		}
	}
	return out
}

// crashedDeferFor is how long applies that bring no primary UP leave out
// the deactivation of an unconfirmed twin (deferCrashed): Patroni elects
// a new leader within a second or two of the old one's key expiring.
const crashedDeferFor = 2 * time.Second

// deferCrashed returns the deactivations of unconfirmed twins
// (unconfirmedTwins: a crashed old primary's active twin in the replica
// service) that this apply leaves out ("backend/server"), and when the
// first of them is due. In a 1,000-cluster mass failover the leader keys
// expire first: the apply of the expiries brings no primary UP, and its
// 1,000 such PUTs (which move no traffic: HAProxy's role checks have those
// members DOWN) made the apply of the new leaders, the one that moves the
// traffic, wait for them. Left out, they go last in that apply (up: it
// brings a primary UP), or, when no new leader came within
// crashedDeferFor of the first apply that left one out, in an apply of
// their own (the caller applies again at RetryIn).
func (t *Target) deferCrashed(desired []services.Service, pre func() []target.Change, up bool) (map[string]bool, time.Duration) {
	if up {
		t.crashedSince = nil
		return nil, 0
	}
	unconfirmed := unconfirmedTwins(desired)
	if len(unconfirmed) == 0 {
		t.crashedSince = nil
		return nil, 0
	}
	now := t.opts.Now()
	since := map[string]time.Time{}
	var skip map[string]bool
	var next time.Duration
	for _, c := range pre() {
		if c.Kind != target.KindSetState || !goesLast(c, unconfirmed) {
			continue
		}
		k := c.Backend + "/" + c.Server
		at, ok := t.crashedSince[k]
		if !ok {
			at = now
		}
		since[k] = at
		left := crashedDeferFor - now.Sub(at)
		if left <= 0 {
			continue
		}
		if skip == nil {
			skip = map[string]bool{}
		}
		skip[k] = true
		if next == 0 || left < next {
			next = left
		}
	}
	t.crashedSince = since
	if len(skip) > 0 {
		t.log.Info("left the deactivations of twins whose member the DCS does not report running for the apply that brings the new primaries UP",
			zap.Int("twins", len(skip)), zap.Duration("at_most_for", next))
	}
	return skip, next
}

// withoutSkipped drops from changes the set_state changes of the servers
// in skip ("backend/server").
func withoutSkipped(changes []target.Change, skip map[string]bool) []target.Change {
	if len(skip) == 0 {
		return changes
	}
	out := changes[:0]
	for _, c := range changes {
		if c.Kind == target.KindSetState && skip[c.Backend+"/"+c.Server] {
			continue
		}
		out = append(out, c)
	}
	return out
}

// goesLast reports whether flip c is the deactivation of one of the
// unconfirmed twins (unconfirmedTwins), sent after everything else.
func goesLast(c target.Change, unconfirmed map[string]bool) bool {
	return target.StateOf(c) != "ready" && unconfirmed[c.Backend+"/"+c.Server]
}

// answerBook is what the runtime PUTs of one apply answered: backend ->
// server -> admin state (the state read from the running HAProxy after
// the change).
type answerBook struct {
	mu sync.Mutex
	m  map[string]map[string]string
}

func (b *answerBook) note(backend, server, admin string) {
	if b == nil || admin == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m[backend] == nil {
		b.m[backend] = map[string]string{}
	}
	b.m[backend][server] = admin
}

// putWave PUTs the admin state of every change in batch (one wave of
// applyFlips, or verifyFlips' repairs), flipParallel in flight, and
// records in answered (when set) what the API answered. then, when set,
// runs right after each change's PUT succeeded, with its answer. A
// force_up or force_down change in batch is forced so (forceHealth, for
// process pid); then runs after a force_up (with no answer: it brings UP
// the twins that track its server, see applyFlips), not after a
// force_down. With guards set, the write guards of batch are checked
// (putGuard). A change's failure (its PUT, or what then does after it) is
// noted in fails, and the changes it holds back are not sent; the other
// changes go. It fails only when the write check does (nothing is sent
// then).
func (t *Target) putWave(ctx context.Context, batch []target.Change, answered *answerBook, then func(target.Change, *models.RuntimeServer) error, pid int64,
	guards *guardBook, fails *flipFails) error {
	if len(batch) == 0 {
		return nil
	}
	if err := target.CheckWrite(ctx); err != nil {
		return err
	}
	eachParallel(batch, flipParallel, func(c target.Change) error {
		fails.put(c, func() error { return t.putOneState(ctx, c, answered, then, pid, guards) })
		return nil
	})
	return nil
}

// flipFails is what failed among the runtime PUTs of one applyFlips, and
// what that held back: failures stay where they start. A failed
// activation of a server in backend B (or a force-up of a server that
// B's twins track: target.TrackedBy) holds back B's deactivations that
// were to follow it (incoming before outgoing: never a backend with zero
// active servers), nothing else; a failed deactivation or forced DOWN
// holds back nothing. The other backends go on through every wave; the
// apply fails at its end naming every failed PUT and what was held back.
// (A write guard never fails here: see guardBook.)
//
// Across the two runs of an apply (see flipLink) the same holds: the
// activations of the run before the health reads are noted in made as
// they end, and the main run's deactivations of their backend wait for
// them (before) and are held back when one failed or was not sent.
type flipFails struct {
	trackedBy map[string][]string
	made      *earlyUps // this run's activations end there (the run before the health reads)
	before    *earlyUps // the activations this run's deactivations wait for (the main run)
	mu        sync.Mutex
	failed    []string        // the errors, each naming its server
	held      map[string]bool // backends whose deactivations are held back
	heldFrom  map[string]bool // backends of the failed PUTs
	back      []target.Change // held back (not sent)
}

// put runs do, c's PUT (and what follows it), unless c is held back;
// a failure is noted.
func (f *flipFails) put(c target.Change, do func() error) {
	if f.holds(c) || f.heldBefore(c) {
		f.holdBack(c)
		return
	}
	err := do()
	if err != nil {
		f.fail(c, err)
	}
	if f.made != nil && c.Kind == target.KindSetState && target.StateOf(c) == "ready" {
		f.made.answered(c.Backend, err != nil)
	}
}

// heldBefore waits, for a deactivation c, for the activations of its
// backend made by the run before the health reads (f.before), and reports
// whether one of them failed (or was not sent): c is held back then, and
// its backend noted as failed (incoming before outgoing across the runs).
func (f *flipFails) heldBefore(c target.Change) bool {
	if f.before == nil || c.Kind != target.KindSetState || target.StateOf(c) == "ready" {
		return false
	}
	if !f.before.wait(c.Backend) {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.heldFrom == nil {
		f.heldFrom, f.held = map[string]bool{}, map[string]bool{}
	}
	if !f.held[c.Backend] {
		f.failed = append(f.failed, c.Backend+": an activation sent before the health reads failed")
	}
	f.held[c.Backend], f.heldFrom[c.Backend] = true, true
	return true
}

// flipLink ties the two applyFlips of an apply whose read services' flips
// go while the forced servers' health is read (flipsBeforeHealth): made in
// that run, before in the main one; zero when there is one run.
type flipLink struct {
	made, before *earlyUps
}

// earlyUps are the activations of the flips made before the health reads,
// per backend: the main run's deactivations of a backend wait for its
// activations there to end (no longer than ordering requires: nothing
// else of that run), and are held back when one failed.
type earlyUps struct {
	mu     sync.Mutex
	left   map[string]int           // backend -> activations not ended
	failed map[string]bool          // backends with an activation failed or not sent
	done   map[string]chan struct{} // closed when left reaches 0
}

// newEarlyUps notes the activations of flips.
func newEarlyUps(flips []target.Change) *earlyUps {
	u := &earlyUps{left: map[string]int{}, failed: map[string]bool{}, done: map[string]chan struct{}{}}
	for _, c := range flips {
		if c.Kind == target.KindSetState && target.StateOf(c) == "ready" {
			if u.left[c.Backend] == 0 {
				u.done[c.Backend] = make(chan struct{})
			}
			u.left[c.Backend]++
		}
	}
	return u
}

// answered notes that an activation in backend b ended (failed, or not).
func (u *earlyUps) answered(b string, failed bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.left[b] == 0 {
		return
	}
	if failed {
		u.failed[b] = true
	}
	if u.left[b]--; u.left[b] == 0 {
		close(u.done[b])
	}
}

// end notes the end of the run: an activation that did not end was not
// sent (a write check failed, or the context ended).
func (u *earlyUps) end() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for b, n := range u.left {
		if n > 0 {
			u.failed[b], u.left[b] = true, 0
			close(u.done[b])
		}
	}
}

// wait waits for the activations in backend b to end (the run always
// ends: see end) and reports whether one failed or was not sent.
func (u *earlyUps) wait(b string) bool {
	u.mu.Lock()
	ch := u.done[b]
	u.mu.Unlock()
	if ch == nil {
		return false
	}
	<-ch
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.failed[b]
}

// holds reports whether c is held back: a deactivation of a backend held.
func (f *flipFails) holds(c target.Change) bool {
	if c.Kind != target.KindSetState || target.StateOf(c) == "ready" {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held[c.Backend]
}

func (f *flipFails) holdBack(c target.Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.back = append(f.back, c)
}

func (f *flipFails) fail(c target.Change, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = append(f.failed, err.Error()) // (it names c's server)
	if f.heldFrom == nil {
		f.heldFrom, f.held = map[string]bool{}, map[string]bool{}
	}
	f.heldFrom[c.Backend] = true
	var brought []string // the backends c was to bring a server UP in
	switch {
	case c.Kind == target.KindSetState && target.StateOf(c) == "ready":
		brought = []string{c.Backend}
	case c.Kind == target.KindForceUp:
		brought = append([]string{c.Backend}, f.trackedBy[c.Backend+"/"+c.Server]...)
	}
	for _, b := range brought {
		f.held[b] = true
	}
}

// backends names the backends whose state is unknown: those of the failed
// PUTs and those held back with them (nil when none failed).
func (f *flipFails) backends() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.failed) == 0 {
		return nil
	}
	out := map[string]bool{}
	for b := range f.heldFrom {
		out[b] = true
	}
	for b := range f.held {
		out[b] = true
	}
	return out
}

// err names every failed PUT and what was held back; nil when none failed.
func (f *flipFails) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.failed) == 0 {
		return nil
	}
	failed := append([]string(nil), f.failed...)
	sort.Strings(failed)
	msg := "set admin state: " + strings.Join(failed, "; ")
	if len(f.back) > 0 {
		var not []string
		for _, c := range f.back {
			not = append(not, c.Kind+" "+c.Backend+"/"+c.Server)
		}
		sort.Strings(not)
		msg += "; held back (not sent): " + strings.Join(not, ", ")
	}
	return fmt.Errorf("%s", msg)
}

// putOneState is one change of putWave.
func (t *Target) putOneState(ctx context.Context, c target.Change, answered *answerBook, then func(target.Change, *models.RuntimeServer) error, pid int64,
	guards *guardBook) error {
	guard := guards != nil && guards.isGuard(c)
	switch c.Kind {
	case target.KindForceUp:
		if _, err := t.forceHealth(ctx, c, true, pid); err != nil || then == nil {
			return err
		}
		return then(c, nil)
	case target.KindForceDown:
		if guard {
			t.putGuard(ctx, c, pid, guards)
			return nil
		}
		_, err := t.forceHealth(ctx, c, false, pid)
		return err
	}
	var rs *models.RuntimeServer
	if guard {
		if rs = t.putGuard(ctx, c, pid, guards); rs == nil {
			return nil // (noted: its backend is held back)
		}
	} else {
		var err error
		if rs, err = t.c.ReplaceRuntimeServer(ctx, c.Backend, c.Server, &models.RuntimeServer{AdminState: target.StateOf(c)}); err != nil {
			return fmt.Errorf("%s/%s: %w", c.Backend, c.Server, err)
		}
	}
	if rs != nil && target.StateOf(c) == "ready" && rs.AdminState == "ready" {
		// A hold's drain lifted (see holdState).
		t.hold.setDrained(c.Backend+"/"+c.Server, false)
		t.hold.seen(c.Backend + "/" + c.Server)
	}
	if rs != nil {
		answered.note(c.Backend, c.Server, rs.AdminState)
	}
	if then != nil {
		return then(c, rs)
	}
	return nil
}

// runtimeMany runs do for every change, flipParallel at once; the errors
// are joined, sorted.
func (t *Target) runtimeMany(ctx context.Context, batch []target.Change, do func(target.Change) error) error {
	if errs := eachParallel(batch, flipParallel, do); len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// eachParallel runs do for every item, n at a time, and returns the
// errors, sorted. n workers take the items in turn (not a goroutine per
// item): each request grows its goroutine's stack through the HTTP client,
// and growing 4,000 fresh stacks was ~10 % of the controller's CPU in a
// 1,000-cluster mass failover.
func eachParallel[T any](items []T, n int, do func(T) error) []string {
	var mu sync.Mutex
	var errs []string
	var wg sync.WaitGroup
	var next atomic.Int64
	for range min(max(n, 1), len(items)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(items) {
					return
				}
				if err := do(items[i]); err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	sort.Strings(errs)
	return errs
}

// verifyFlips reads back the admin states of the twin backends of flips whose
// PUT answer did not show the state asked for (readParallel GETs in flight;
// what is read is what the next applies start from, see adminCache) and
// repairs what differs from desired once; a
// mismatch left after that is an error (status and metrics report it; the
// next resync reads those backends again and tries again). The repair
// activations go before the deactivations; one that fails holds back its
// own backend's deactivations only (flipFails), and the error names both.
func (t *Target) verifyFlips(ctx context.Context, desired []services.Service, flips []target.Change) error {
	touchedB := touched(flips)
	var names []string
	for _, d := range desired {
		if d.Layout == services.LayoutTwins && touchedB[d.Name] {
			names = append(names, d.Name)
		}
	}
	for attempt := 0; ; attempt++ {
		got, err := t.getRuntimeMany(ctx, names)
		if err != nil {
			t.adminForget(names)
			return fmt.Errorf("verify admin states: %w", err)
		}
		t.adminKeep(got)
		var wrong []target.Change
		for _, d := range desired {
			st, ok := got[d.Name]
			if !ok {
				continue
			}
			for _, sv := range d.Servers {
				if sv.ForceDown && sv.HoldDown && !sv.Disabled {
					continue // held: drained by the hold (see holdState)
				}
				if sv.Track != "" {
					continue // never flipped; its admin state includes its tracked server's (diffAdmin)
				}
				want := services.AdminWord(d, sv)
				if (st[sv.Name] == "ready") != (want == "ready") {
					wrong = append(wrong, target.Change{Kind: target.KindSetState, Backend: d.Name, Server: sv.Name,
						Detail: st[sv.Name] + " -> " + want, Runtime: true})
				}
			}
		}
		if len(wrong) == 0 {
			return nil
		}
		if attempt == 1 {
			t.adminForget(names)
			var msgs []string
			for _, c := range wrong {
				msgs = append(msgs, c.Backend+"/"+c.Server+" "+c.Detail)
			}
			return fmt.Errorf("admin states still wrong after repair: %s", strings.Join(msgs, ", "))
		}
		t.log.Warn("admin states differ from what was applied; setting them again", zap.Int("servers", len(wrong)))
		ups, downs := []target.Change{}, []target.Change{}
		for _, c := range wrong {
			if target.StateOf(c) == "ready" {
				ups = append(ups, c)
			} else {
				downs = append(downs, c)
			}
		}
		// Incoming before outgoing, per backend (flipFails): a repair
		// activation that fails holds back its backend's repair
		// deactivations only; the other backends' go.
		fails := &flipFails{}
		for _, b := range [][]target.Change{ups, downs} {
			if err := t.putWave(ctx, b, nil, nil, 0, nil, fails); err != nil {
				t.adminForget(names)
				if ferr := fails.err(); ferr != nil {
					err = fmt.Errorf("%w; %w", err, ferr)
				}
				return err
			}
		}
		if err := fails.err(); err != nil {
			// (What runs in the backends repaired is unknown: the next
			// apply reads them again.)
			t.adminForget(names)
			return err
		}
	}
}

// twinLayout reports whether any desired service is in the twin layout.
func twinLayout(desired []services.Service) bool {
	for _, d := range desired {
		if d.Layout == services.LayoutTwins {
			return true
		}
	}
	return false
}

type headersKey struct{}

// withHeaders makes the requests made with ctx carry h.
func withHeaders(ctx context.Context, h http.Header) context.Context {
	return context.WithValue(ctx, headersKey{}, h)
}

func headersOf(ctx context.Context) http.Header {
	h, _ := ctx.Value(headersKey{}).(http.Header)
	return h
}

// maxRuntimeActions bounds the X-Runtime-Actions header (the API's HTTP
// server takes 1 MiB of headers).
const maxRuntimeActions = 512 << 10

// postRawNoReload writes the whole file without a reload
// (skip_reload=true) and has the API run actions at runtime, in order
// (X-Runtime-Actions, e.g. "SetServerWeight B S 0"): 201, no reload.
func (c *Client) postRawNoReload(ctx context.Context, version int64, text string, actions []string) (Meta, error) {
	q := url.Values{"version": {strconv.FormatInt(version, 10)}, "skip_reload": {"true"}}
	if len(actions) > 0 {
		ctx = withHeaders(ctx, http.Header{"X-Runtime-Actions": {strings.Join(actions, ";")}})
	}
	var out any
	if v, err := c.version(ctx); err == nil && v == 3 {
		out = discardText{}
	}
	return c.do(ctx, http.MethodPost, "/configuration/raw", q, rawBody(text), out)
}

// applyWeightsRaw applies weight-only changes in the twin layout without a
// reload: one raw POST of the file with skip_reload, whose runtime actions
// set the same weights in the running HAProxy. (Per-server configuration
// PUTs re-save the whole file each, ~2 s at 1,000 clusters; a transaction
// or a raw POST with reload is a reload per role change: a mass failover's
// write fences made 2.) If the API wrote the file but a runtime action
// failed, the file is posted again with a reload, which takes the file's
// weights (they differ from those the running worker started with).
func (t *Target) applyWeightsRaw(ctx context.Context, st *state, desired []services.Service, changes []target.Change, res target.Result) (target.Result, bool, error) {
	want := desiredServers(desired)
	actions := make([]string, 0, len(changes))
	size := 0
	for _, c := range changes {
		w, ok := want[c.Backend][c.Server]
		if !ok || strings.ContainsAny(c.Backend+c.Server, " ;") {
			return res, false, nil
		}
		a := fmt.Sprintf("SetServerWeight %s %s %d", c.Backend, c.Server, w.Weight)
		size += len(a) + 1
		actions = append(actions, a)
	}
	if size > maxRuntimeActions {
		return res, false, nil
	}
	text, v := st.fileText(), st.version
	if text == "" {
		var err error
		if text, v, err = t.c.GetRawConfig(ctx); err != nil {
			return res, true, fmt.Errorf("read raw configuration: %w", err)
		}
		if v != st.version {
			return res, true, &APIError{Status: 409, Code: 409, Method: "GET", Path: "/configuration/raw",
				Message: fmt.Sprintf("version moved from %d to %d", st.version, v)}
		}
	}
	out, err := ReplaceSections(text, desired, st.model)
	if err != nil {
		return res, true, err
	}
	start := time.Now()
	m, err := t.c.postRawNoReload(ctx, v, out, actions)
	if err != nil {
		t.keep(nil)
		// The API writes the file before it runs the actions: if the file
		// moved, reload it as it is now, so the running weights follow it.
		if nv, verr := t.c.GetVersion(ctx); verr == nil && nv != v {
			t.log.Warn("weights written to the file but not set at runtime; reloading", zap.Error(err))
			text2, v2, rerr := t.c.GetRawConfig(ctx)
			if rerr == nil {
				var m2 Meta
				if m2, rerr = t.c.PostRawConfig(ctx, v2, text2); rerr == nil {
					res.Version = m2.Version
					if res, rerr = t.followReload(ctx, m2, res); rerr == nil {
						return res, true, fmt.Errorf("set weights at runtime: %w (the file was written; reloaded)", err)
					}
				}
			}
			return res, true, fmt.Errorf("set weights at runtime: %w; reload: %w", err, rerr)
		}
		return res, true, fmt.Errorf("post raw configuration (no reload): %w", err)
	}
	if m.Version > 0 {
		res.Version = m.Version
		sn := parseSnapshot(out, m.Version)
		sn.readAt = st.readAt
		t.keep(sn)
	} else {
		res.Version = v + 1
		t.keep(nil)
	}
	t.log.Info("applied weights at runtime and in the file, no reload", zap.Int("changes", len(changes)), zap.Int64("version", res.Version),
		zap.Duration("took", time.Since(start)))
	return res, true, nil
}

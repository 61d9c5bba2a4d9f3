package dataplaneapi

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/haproxytech/client-native/v5/models"
	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// TargetOptions tune a Target; zero values take the defaults.
type TargetOptions struct {
	// RawThreshold: above this many write calls, one POST of the whole
	// configuration replaces the per-object transaction (default 50).
	RawThreshold int
	// RuntimeMax: up to this many weight-only changes are applied one
	// server PUT each without reload (each PUT still re-saves the whole
	// file); more go into one transaction with one reload (default 8).
	RuntimeMax int
	// MaxRetries bounds replans after 409/406/429 (default 3).
	MaxRetries int
	// ReloadTimeout bounds the wait for a scheduled reload (default 30s; the
	// API delays reloads by reload_delay, 5 s by default).
	ReloadTimeout time.Duration
	// ReloadPollInterval is the reload poll period (default 250ms).
	ReloadPollInterval time.Duration
	// Backoff is the first wait after a 429, doubled per retry (default 500ms).
	Backoff time.Duration
	// FullReadEvery bounds how long a parsed configuration is reused while
	// the API's version stays the same: after this, the next read GETs the
	// whole file again even though nothing seems to have changed (default
	// 10m; the controller's own writes keep the copy in step in between).
	FullReadEvery time.Duration
	// AdminReadEvery bounds how long the twin layout's runtime admin
	// states are taken from what the controller last set and read back:
	// after this, the next read GETs every twin backend's runtime servers,
	// which finds an operator's `set server` (default 10m; a reload or
	// restart of HAProxy is found at once, by its pid).
	AdminReadEvery time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

func (o *TargetOptions) defaults() {
	if o.RawThreshold <= 0 {
		o.RawThreshold = 50
	}
	if o.RuntimeMax <= 0 {
		o.RuntimeMax = 8
	}
	if o.MaxRetries <= 0 {
		o.MaxRetries = 3
	}
	if o.ReloadTimeout <= 0 {
		o.ReloadTimeout = 30 * time.Second
	}
	if o.ReloadPollInterval <= 0 {
		o.ReloadPollInterval = 250 * time.Millisecond
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	if o.FullReadEvery <= 0 {
		o.FullReadEvery = 10 * time.Minute
	}
	if o.AdminReadEvery <= 0 {
		o.AdminReadEvery = 10 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Target keeps one HAProxy in step through its Data Plane API. It implements
// target.Target.
type Target struct {
	c    *Client
	log  *zap.Logger
	opts TargetOptions
	// mu makes sure this process never holds two transactions open on one
	// HAProxy, even if a caller breaks the one-goroutine contract.
	mu sync.Mutex
	// snapMu guards snap, the last configuration read (or written) and
	// parsed; see snapshot.
	snapMu sync.Mutex
	snap   *snapshot
	reads  ReadStats
	// stale: see cleanStale.
	stale staleState
	// running: see confirmRunning.
	running runningState
	// noCut: the default-server line and check of every service
	// warnNoCut warned about, by name.
	noCut map[string][2]string
	// admin: the twin layout's runtime admin states (see adminCache).
	admin adminCache
	// forced: the answers of our own forced health PUTs (see forcedCache).
	forced forcedCache
	// hold: the drains of held new leaders (see holdState).
	hold       holdState
	adminReads AdminReads
	// synced: what the last successful apply left in sync (nil after a
	// failed one); syncPrev is it as the current Apply began; applyPID is
	// the pid the current apply read. See cleanServices.
	synced, syncPrev *syncState
	applyPID         int64
	// validated: the last desired that passed validate (see validate).
	validated []services.Service
	// crashedSince: "backend/server" -> when an apply first left out the
	// deactivation of that unconfirmed twin (see deferCrashed).
	crashedSince map[string]time.Time
	// pendingTrackers: "backend/server" of the trackers a configuration
	// write made, or a read found out of step, and no resync has put in
	// step yet (see resyncTrackers); foundTrackers: those of them only a
	// read found (read again before their resync).
	pendingTrackers, foundTrackers map[string]bool
}

var _ target.Target = (*Target)(nil)

// NewTarget returns a Target applying through c.
func NewTarget(c *Client, log *zap.Logger, opts TargetOptions) *Target {
	opts.defaults()
	if log == nil {
		log = zap.NewNop()
	}
	return &Target{c: c, log: log.With(zap.String("target", c.Name())), opts: opts}
}

// BatchBursts: yes (target.Batcher). An apply of a 1,000-cluster mass
// failover is ~6,000 runtime PUTs, 3–5 s of the API's time; a burst split
// in two by an apply that began in its middle cost its last clusters that
// long again (5.4–5.6 s to live instead of 4.0 s).
func (t *Target) BatchBursts() bool { return true }

// Name is the API URL without the password.
func (t *Target) Name() string { return t.c.Name() }

// state is what one read of the API found: the parsed configuration and,
// for the desired services, the diff's view of it.
type state struct {
	*snapshot
	// current is the diff's view of the desired backends found (see
	// curView).
	current curView
	// ds is diffSet's answer for dsFor (the same slice).
	dsFor, ds []services.Service
	// statePreserved is nil when it could not be told.
	statePreserved *bool
	// pid is the running HAProxy's pid as this read found it (0: not read).
	pid int64
	// blind: "backend/server" -> why a forced server's health was not read
	// (it is forced blind; see readHealth).
	blind map[string]string
	// found: "backend/server" of Writable servers read in drain (see
	// holdState): the apply lifts it.
	found map[string]bool
	// skip marks (by index in desired) the services left out of this
	// read and its diff: in sync since the last apply (cleanServices).
	skip []bool
}

// diffSet is desired without the services st left out.
func (st *state) diffSet(desired []services.Service) []services.Service {
	if st.skip == nil {
		return desired
	}
	// Made once per read for the desired it was made for (an apply asks
	// for it up to ten times: ~1 MB each at 1,000 clusters). Callers only
	// read it.
	if st.ds != nil && len(desired) > 0 && len(st.dsFor) == len(desired) && &st.dsFor[0] == &desired[0] {
		return st.ds
	}
	out := make([]services.Service, 0, len(desired))
	for i, d := range desired {
		if !st.skip[i] {
			out = append(out, d)
		}
	}
	st.dsFor, st.ds = desired, out
	return out
}

// read returns the configuration for desired: the parsed copy when the
// API's version has not moved since it was read or written (one GET), else
// one GET of the raw file; plus the live health of the servers a new
// primary may be forced UP in (a few backends at most) and, in the twin
// layout, the runtime admin states (readAdmins: one GET of the running
// process's pid, and the backends not cached).
// apply says the read is an apply's, which may force servers blind
// (readHealth).
func (t *Target) read(ctx context.Context, desired []services.Service, apply bool) (*state, error) {
	st, hr, err := t.readDeferred(ctx, desired, apply)
	if err != nil {
		return nil, err
	}
	if err := hr.run(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

// readDeferred is read without the GETs of the forced servers' health,
// which it returns to be run (see flipsBeforeHealth).
func (t *Target) readDeferred(ctx context.Context, desired []services.Service, apply bool) (*state, *healthRead, error) {
	var pidGET <-chan pidAnswer
	if twinLayout(desired) {
		pidGET = t.c.pidAsync(ctx)
	}
	sn, err := t.snapshotNow(ctx)
	if err != nil {
		if pidGET != nil {
			<-pidGET
		}
		return nil, nil, err
	}
	sp := sn.statePreserved
	st := &state{snapshot: sn, statePreserved: &sp}
	now := t.opts.Now().UnixNano()
	if pidGET != nil {
		// The pid before the view: whether services in sync since the
		// last apply can be left out depends on it (cleanServices).
		pa := <-pidGET
		again := make(chan pidAnswer, 1)
		again <- pa
		pidGET = again
		st.skip = t.cleanServices(sn, desired, pa, apply, now)
	}
	n := 0
	for i, d := range desired {
		if (st.skip == nil || !st.skip[i]) && sn.be[d.Name] != nil {
			n++
		}
	}
	st.current = make(curView, n)
	for i, d := range desired {
		if st.skip != nil && st.skip[i] {
			continue
		}
		if sn.be[d.Name] == nil {
			continue
		}
		st.current[d.Name] = newCurBack(sn, d)
	}
	// The pid first: the forced servers' health records count only for
	// the process they were made in.
	if st.pid, err = t.readAdmins(ctx, desired, st.current, pidGET, now); err != nil {
		return nil, nil, err
	}
	return st, t.planHealth(sn, desired, st, apply), nil
}

// ReadStats counts how a Target read the configuration.
type ReadStats struct {
	// Reused: reads answered from the parsed copy (one GET of the version).
	Reused int64
	// Full: reads that GET the whole file (first read, version moved by
	// another writer, after an error, or FullReadEvery elapsed).
	Full int64
}

// Reads returns the read counters.
func (t *Target) Reads() ReadStats {
	t.snapMu.Lock()
	defer t.snapMu.Unlock()
	return t.reads
}

func (t *Target) snapshotNow(ctx context.Context) (*snapshot, error) {
	v, err := t.c.GetVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("read version: %w", err)
	}
	t.snapMu.Lock()
	sn := t.snap
	if sn != nil && sn.version == v && t.opts.Now().Sub(sn.readAt) < t.opts.FullReadEvery {
		t.reads.Reused++
		t.snapMu.Unlock()
		return sn, nil
	}
	t.snapMu.Unlock()
	if sn != nil && sn.version != v {
		t.log.Info("configuration version moved (another writer, or a restored file); reading it whole",
			zap.Int64("had", sn.version), zap.Int64("now", v))
	}
	text, rv, err := t.c.GetRawConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	if rv == 0 {
		rv = v
	}
	sn = parseSnapshot(text, rv)
	sn.readAt = t.opts.Now()
	t.snapMu.Lock()
	t.snap = sn
	t.reads.Full++
	t.snapMu.Unlock()
	return sn, nil
}

// keep records the configuration after the controller's own write; a nil
// snapshot (or an unknown version) makes the next read a full one.
func (t *Target) keep(sn *snapshot) {
	t.snapMu.Lock()
	defer t.snapMu.Unlock()
	if sn == nil || sn.version <= 0 {
		t.snap = nil
		return
	}
	t.snap = sn
}

// Diff reads the HAProxy and returns the changes Apply would make now.
func (t *Target) Diff(ctx context.Context, desired []services.Service) ([]target.Change, error) {
	if err := validate(desired, nil); err != nil {
		return nil, err
	}
	st, err := t.read(ctx, desired, false)
	if err != nil {
		return nil, err
	}
	changes := t.holdChanges(st.current.diff(desired), desired, st.found)
	if len(changes) > 0 {
		return changes, nil
	}
	// The file is right: whether the running HAProxy serves it is the
	// rest of the question (a reload that failed or was lost leaves the
	// file right and HAProxy on the old one). Known after an apply of
	// this process confirmed it; a one-shot diff or a dry run reads it.
	t.mu.Lock()
	confirmed := t.running.confirmed
	t.mu.Unlock()
	if confirmed {
		return changes, nil
	}
	return t.runningChanges(ctx, desired)
}

// runningChanges is what Apply would do about the running HAProxy when the
// file is right: reload it when it does not serve desired
// (KindReloadRunning), resync the trackers out of step with the servers
// they track. An API without native stats has nothing to read (none).
func (t *Target) runningChanges(ctx context.Context, desired []services.Service) ([]target.Change, error) {
	stats, err := t.c.runningStats(ctx)
	if s := statusOf(err); s == 404 || s == 501 { // no native stats (a test double)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("diff %s: read the running HAProxy: %w", t.Name(), err)
	}
	if diff := runningMismatch(stats, desired); diff != "" {
		return []target.Change{{Kind: target.KindReloadRunning,
			Detail: "the running HAProxy does not serve its configuration (a reload failed or was lost): " + diff}}, nil
	}
	var changes []target.Change
	for _, bs := range trackersOutOfStep(stats, desired) {
		b, s, _ := strings.Cut(bs, "/")
		changes = append(changes, target.Change{Kind: target.KindResyncTracker, Backend: b, Server: s, Runtime: true,
			Detail: "out of step with the server it tracks"})
	}
	return changes, nil
}

// validate checks desired. prev is a list that passed it before (nil:
// none): the services equal to prev's at the same index are not checked one
// by one again (4,000 services per apply at 1,000 clusters, ~5 ms), only
// whether a name repeats.
func validate(desired, prev []services.Service) error {
	if prev == nil {
		if err := services.Validate(desired); err != nil {
			return err
		}
	}
	seen := make(map[string]bool, len(desired))
	for i, d := range desired {
		if d.Name == "" {
			return fmt.Errorf("service #%d: empty name", i)
		}
		if seen[d.Name] {
			return fmt.Errorf("service %s: listed twice", d.Name)
		}
		seen[d.Name] = true
		if prev != nil {
			if i < len(prev) && services.Equal(&prev[i], &desired[i]) {
				continue
			}
			if err := services.ValidateService(&desired[i]); err != nil {
				return err
			}
		}
		if d.Port <= 0 || d.Port > 65535 {
			return fmt.Errorf("service %s: port %d out of range", d.Name, d.Port)
		}
		if _, err := defaultServerOf(d); err != nil {
			return err
		}
		names := map[string]bool{}
		for _, s := range d.Servers {
			if s.Name == "" || s.Address == "" || s.Port <= 0 || s.Port > 65535 {
				return fmt.Errorf("service %s: server %q: needs a name, an address and a port", d.Name, s.Name)
			}
			if names[s.Name] {
				return fmt.Errorf("service %s: server %s listed twice", d.Name, s.Name)
			}
			names[s.Name] = true
		}
	}
	return nil
}

// Apply makes the HAProxy serve exactly desired (see target.Target).
func (t *Target) Apply(ctx context.Context, desired []services.Service) (target.Result, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	start := t.opts.Now()
	if err := validate(desired, t.validated); err != nil {
		return target.Result{}, err
	}
	t.validated = desired
	t.warnNoCut(desired)
	t.syncPrev, t.synced = t.synced, nil
	t.running.waited = nil
	backoff := t.opts.Backoff
	for attempt := 0; ; attempt++ {
		res, err := t.applyOnce(ctx, desired)
		res.Duration = t.opts.Now().Sub(start)
		if err == nil {
			t.cleanStale(ctx, res.Version)
			if t.admin.outsideChange() {
				// A process this controller did not start may have loaded
				// a server-state file dumped before its trackers existed
				// (the one the reload that made them dumped): read it
				// once (confirmRunning), which finds trackers out of
				// step with the servers they track.
				t.running.confirmed = false
			}
			res, err = t.confirmRunning(ctx, desired, res)
			if err == nil {
				// The running HAProxy serves desired: the trackers a
				// reload left unresynced (still in progress at
				// ReloadTimeout, or a resync that failed) are due.
				var resynced []target.Change
				resynced, err = t.resyncTrackers(ctx, desired)
				res.Changes = append(res.Changes, resynced...)
				if err != nil {
					err = fmt.Errorf("apply %s: %w", t.Name(), err)
				}
			}
			if err == nil && res.Deferred == 0 {
				// (Services with deferred flips are not in sync: the
				// next apply must diff them.)
				t.keepSynced(desired)
			}
			return res, err
		}
		last := attempt >= t.opts.MaxRetries
		switch {
		case (IsConflict(err) || IsOutdated(err)) && !last:
			t.log.Info("configuration changed under us; re-reading and replanning", zap.Int("attempt", attempt+1), zap.Error(err))
			continue
		case IsTooMany(err) && !last:
			// Transactions left open by killed controllers may be what
			// fills the API's limit: delete the outdated ones first.
			if n := t.cleanStaleNow(ctx); n > 0 {
				t.log.Info("deleted outdated transactions after a 429; retrying", zap.Int("deleted", n))
				continue
			}
			t.log.Warn("too many open transactions; backing off", zap.Duration("wait", backoff), zap.Error(err))
			timer := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				timer.Stop()
				return res, fmt.Errorf("apply %s: %w", t.Name(), ctx.Err())
			case <-timer.C:
			}
			backoff *= 2
			continue
		}
		t.applyFailed(res, err)
		err = fmt.Errorf("apply %s: %w", t.Name(), err)
		if errors.Is(err, ErrReloadFailed) || (errors.Is(err, ErrNotRunning) && res.Reloaded) {
			// A failed reload, or (the twin layout: waitRuntime) a
			// reload that succeeded and a running HAProxy that never
			// came to serve the file.
			return t.refused(ctx, desired, res, err)
		}
		return res, err
	}
}

func (t *Target) applyOnce(ctx context.Context, desired []services.Service) (target.Result, error) {
	st, hr, err := t.readDeferred(ctx, desired, true)
	if err != nil {
		return target.Result{}, err
	}
	t.applyPID = st.pid
	// The diff before the health reads, made once for the two that need
	// it (none in most applies). Its set_state changes depend on no
	// health, so they are those of applyChanges' diff after the reads.
	pre := sync.OnceValue(func() []target.Change { return st.current.diff(st.diffSet(desired)) })
	up := bringsUp(desired, hr.decided)
	skip, retryIn := t.deferCrashed(desired, pre, up)
	early, ups, flipped, err := t.flipsBeforeHealth(ctx, desired, st, hr, pre, up, skip)
	if err != nil {
		if _, ferr := flipped(); ferr != nil {
			err = fmt.Errorf("%w; %w", err, ferr)
		}
		return target.Result{Changes: early}, err
	}
	// The rest goes while the early flips may still be going: it touches
	// other servers (the write services'), and a new primary's force-up
	// need not wait for 4,000 read-service flips; a backend's deactivations
	// there wait for its activations among the early flips only (ups).
	res, err := t.applyChanges(ctx, desired, st, early, ups, skip)
	res.Deferred, res.RetryIn = len(skip), retryIn
	earlyAt, ferr := flipped()
	if !res.MovedAt.IsZero() && earlyAt.After(res.MovedAt) {
		// The flips made beside the rest moved traffic until they ended.
		res.MovedAt = earlyAt
	}
	if ferr != nil {
		if err == nil {
			err = ferr
		} else {
			err = fmt.Errorf("%w; %w", err, ferr)
		}
	}
	if len(early) > 0 {
		res.Changes = append(early, res.Changes...)
	}
	if err != nil {
		return res, err
	}
	late, err := hr.fencesLater(ctx, desired)
	if len(late) > 0 {
		res.MovedAt = time.Time{} // a fence forced DOWN at the end moved traffic
		res.Changes = append(res.Changes, late...)
		if res.ForcedDown.IsZero() {
			res.ForcedDown = time.Now()
		}
	}
	return res, err
}

// applyChanges applies what differs from desired in st, but the flips of
// early (applied, or being applied; ups are their activations, nil when
// none) and of skip (deferCrashed).
func (t *Target) applyChanges(ctx context.Context, desired []services.Service, st *state, early []target.Change, ups *earlyUps,
	skip map[string]bool) (target.Result, error) {
	changes := withoutFlips(withoutSkipped(st.current.diff(st.diffSet(desired)), skip), early)
	blindDetails(changes, st.blind)
	changes = t.holdChanges(changes, st.diffSet(desired), st.found)
	res := target.Result{Version: st.version, StatePreserved: st.statePreserved}
	if len(changes) == 0 {
		return res, nil
	}
	res.Changes = changes
	fence, force, rest := target.SplitForce(changes)
	flips, rest := splitFlips(rest)
	// A fenced server a flip readies in this apply (a held new leader's
	// active twin) comes out of maint UP at once: it is forced DOWN right
	// after its own flip (afterFlip), not before.
	fence, afterFlip := splitReadied(fence, flips)
	// The write fence first, before any configuration write or reload (the
	// reload script's state dump then carries it to the new worker) and
	// before any flip brings a new primary UP. Without a configuration
	// write, the flips do it (applyFlips: with the activations in services
	// that take no writes).
	// A fence that does not take holds back its backend's force-ups and
	// activations only (see guardBook); the apply then fails at its end.
	guards := &guardBook{}
	withGuards := func(err error) error {
		if gerr := guards.err(nil); gerr != nil {
			return fmt.Errorf("%w; %w", err, gerr)
		}
		return err
	}
	if len(rest) > 0 || len(flips) == 0 {
		if err := t.fence(ctx, fence, st.pid, guards); err != nil {
			return res, err
		}
		if len(fence) > 0 {
			res.ForcedDown = time.Now()
		}
		fence = nil
	}
	if len(rest) > 0 {
		t.noteTrackers(desired, rest)
		// The process a reload of this write must replace (rememberRunning
		// sets running.pid on the writes it precedes).
		t.running.pid, t.running.pidBefore, t.running.waited = 0, st.pid, nil
		var err error
		res, err = t.applyConfig(ctx, st, desired, rest, res)
		res.Changes = changes
		if err != nil {
			// Whatever happened, read the whole file next time.
			t.keep(nil)
			return res, withGuards(err)
		}
	}
	pid := st.pid // the process the runtime changes go to
	if res.Reloaded {
		all := touched(changes)
		if twinLayout(desired) {
			t.adminReloaded(all)
		}
		// No runtime change before the new process serves the write.
		var served bool
		if pid, served = t.awaitReload(ctx, desired, res); !served {
			// confirmRunning says what follows (the file put back, or an
			// error and a retry). A write guard that did not take is
			// still reported.
			return res, guards.err(nil)
		}
		if twinLayout(desired) {
			if err := t.waitRuntime(ctx, desired, all); err != nil {
				if ctx.Err() == nil && res.ReloadResult == "succeeded" {
					// The reload command succeeded and a new process
					// serves, but it still lacks servers of the file after
					// ReloadTimeout: as confirmRunning's read-back, the
					// file may be one HAProxy refuses, which Apply puts
					// back (refused).
					err = fmt.Errorf("reload %s: %w: %w", res.ReloadID, ErrNotRunning, err)
				}
				return res, withGuards(err)
			}
			resynced, err := t.resyncTrackers(ctx, desired)
			res.Changes = append(res.Changes, resynced...)
			if err != nil {
				return res, withGuards(err)
			}
		}
	}
	fencedAt, movedAt, err := t.applyFlips(ctx, desired, flips, fence, afterFlip, force, pid, guards, flipLink{before: ups})
	if err != nil {
		return res, err
	}
	res.MovedAt = movedAt
	if res.ForcedDown.IsZero() && len(fence)+len(afterFlip) > 0 {
		res.ForcedDown = fencedAt
	}
	if len(force) > 0 {
		res.ForcedUp = time.Now()
	}
	return res, nil
}

// flipsBeforeHealth runs the GETs of the forced servers' health left by
// the read (hr: one per backend whose fence the records do not tell, 2,000
// in a 1,000-cluster mass failover) and, meanwhile, applies the admin-state
// flips of the services that take no writes: those depend on no health and
// bring no primary UP, so no fence need precede them, and a mass failover's
// read services no longer wait behind the reads (but the deactivations of
// members the DCS does not report running: they go last, see applyFlips).
// Only when the apply makes
// no configuration change (the flips follow a configuration write) and
// something is read (else they go with the rest, in fewer round trips). It
// returns, once the health is read, the flips under way, their
// activations as they end (which the rest's deactivations of the same
// backend wait for: incoming before outgoing across the two runs) and a
// function that waits for them to end (and says whether they failed).
func (t *Target) flipsBeforeHealth(ctx context.Context, desired []services.Service, st *state, hr *healthRead,
	pre func() []target.Change, up bool, skip map[string]bool) ([]target.Change, *earlyUps, func() (time.Time, error), error) {
	none := func() (time.Time, error) { return time.Time{}, nil }
	if !hr.pending() || st.pid == 0 {
		return nil, nil, none, hr.run(ctx)
	}
	write := map[string]bool{}
	for _, d := range desired {
		write[d.Name] = services.WriteCheck(d.Check)
	}
	// A deactivation of a member the DCS does not report running goes
	// after everything else (applyFlips) when this apply brings a primary
	// UP; else (the leader keys expired, no new one yet) it is left for
	// the next apply (skip, see deferCrashed), and once it is due nothing
	// waits for the reads but it: it goes meanwhile.
	var unconfirmed map[string]bool
	if up {
		unconfirmed = unconfirmedTwins(desired)
	}
	var early []target.Change
	var tracking map[string]bool // backends with a tracking twin, set at the first deactivation
	for _, c := range pre() {
		switch c.Kind {
		case target.KindSetState:
			if target.StateOf(c) != "ready" && tracking == nil {
				tracking = target.TrackingBackends(desired)
			}
			// The deactivations of a backend whose incoming server may be
			// a tracker go after the force-up that brings it UP
			// (applyFlips), not before the health is read.
			if target.StateOf(c) != "ready" && tracking[c.Backend] {
				continue
			}
			if !write[c.Backend] && !goesLast(c, unconfirmed) && !skip[c.Backend+"/"+c.Server] {
				early = append(early, c)
			}
		case target.KindForceDown, target.KindForceUp:
		default:
			return nil, nil, none, hr.run(ctx)
		}
	}
	if len(early) == 0 {
		return nil, nil, none, hr.run(ctx)
	}
	ups := newEarlyUps(early)
	type end struct {
		at  time.Time
		err error
	}
	done := make(chan end, 1)
	go func() {
		_, _, err := t.applyFlips(ctx, desired, early, nil, nil, nil, st.pid, nil, flipLink{made: ups})
		done <- end{time.Now(), err}
	}()
	var e end
	var once sync.Once
	flipped := func() (time.Time, error) {
		once.Do(func() { e = <-done })
		return e.at, e.err
	}
	return early, ups, flipped, hr.run(ctx)
}

// bringsUp reports whether desired has a new primary to force UP that the
// records do not tell UP already (decided: see planHealth).
func bringsUp(desired []services.Service, decided map[string]health) bool {
	for _, d := range desired {
		for _, sv := range d.Servers {
			if sv.ForceUp && !sv.Disabled && decided[d.Name+"/"+sv.Name] != healthUp {
				return true
			}
		}
	}
	return false
}

// withoutFlips drops from changes the set_state changes of done's servers.
func withoutFlips(changes, done []target.Change) []target.Change {
	if len(done) == 0 {
		return changes
	}
	skip := make(map[[2]string]bool, len(done))
	for _, c := range done {
		skip[[2]string{c.Backend, c.Server}] = true
	}
	out := changes[:0]
	for _, c := range changes {
		if c.Kind == target.KindSetState && skip[[2]string{c.Backend, c.Server}] {
			continue
		}
		out = append(out, c)
	}
	return out
}

// splitReadied separates the fences of servers that flips set ready.
func splitReadied(fence, flips []target.Change) (first, afterFlip []target.Change) {
	readied := map[string]bool{}
	for _, c := range flips {
		if target.StateOf(c) == "ready" {
			readied[c.Backend+"/"+c.Server] = true
		}
	}
	for _, c := range fence {
		if readied[c.Backend+"/"+c.Server] {
			afterFlip = append(afterFlip, c)
		} else {
			first = append(first, c)
		}
	}
	return first, afterFlip
}

// touched names the services a set of changes writes.
func touched(changes []target.Change) map[string]bool {
	out := map[string]bool{}
	for _, c := range changes {
		out[c.Backend] = true
	}
	return out
}

// applyConfig applies configuration changes: weight-only ones as server
// PUTs without reload when few, else one transaction (or one raw POST).
func (t *Target) applyConfig(ctx context.Context, st *state, desired []services.Service, changes []target.Change, res target.Result) (target.Result, error) {
	if twinLayout(desired) && target.RuntimeOnly(changes) && !t.running.rawNext {
		// Twins: weights without a reload (applyWeightsRaw).
		if res, done, err := t.applyWeightsRaw(ctx, st, desired, changes, res); done || err != nil {
			return res, err
		}
	}
	if target.RuntimeOnly(changes) && len(changes) <= t.opts.RuntimeMax {
		return t.applyRuntime(ctx, st, desired, changes, res)
	}
	// all names every service written (the parsed copy follows them all).
	all := changes
	if weights, rest := splitWeights(changes); len(weights) > 0 && len(weights) <= t.opts.RuntimeMax {
		// A weight change must not ride on a reload: the reload script
		// saves the running weights into the server-state file and the new
		// worker takes them back from it whenever the server's weight in
		// the old worker's file is what the new file says, so a lifted
		// write fence (0 -> 100) would stay at 0 in the running HAProxy
		// while the file says 100. Apply the weights at runtime first,
		// then the rest in one transaction on the version that left.
		var err error
		if res, err = t.applyRuntime(ctx, st, desired, weights, res); err != nil {
			return res, err
		}
		moved := *st.snapshot
		moved.version, moved.packed = res.Version, nil
		st = &state{snapshot: &moved, current: st.current, statePreserved: st.statePreserved}
		changes = rest
	}
	// Twins: the file is written whole (one raw POST) so every `disabled`
	// keyword is in step with the live roles, not only the servers changed.
	// Then no write call is planned: the calls of a first sync (a model of
	// ~2 KB per server, held in its call: ~50 MB at 1,000 clusters) were
	// built only to be counted, and were the controller's largest heap.
	// ReplaceSections checks every service as planOps would.
	// Elsewhere the calls are planned up to the threshold only: past it the
	// raw POST follows (a Pigsty-layout first sync plans ~28,000).
	raw := t.running.rawNext || twinLayout(desired)
	var ops []op
	if !raw {
		var err error
		if ops, raw, err = planOps(st, desired, changes, t.opts.RawThreshold); err != nil {
			return res, err
		}
		if raw {
			ops = nil // (not the count of every call: unknown, not logged)
		}
	}
	// The file the running HAProxy serves, to put back if HAProxy refuses
	// what this write makes of it.
	t.rememberRunning(ctx, st)
	if raw {
		return t.applyRaw(ctx, st, desired, all, len(ops), res)
	}
	return t.applyTxn(ctx, st, desired, ops, all, res)
}

// splitWeights separates the weight-only changes.
func splitWeights(changes []target.Change) (weights, rest []target.Change) {
	for _, c := range changes {
		if c.Kind == target.KindSetWeight {
			weights = append(weights, c)
		} else {
			rest = append(rest, c)
		}
	}
	return weights, rest
}

// warnNoCut warns, once per service and default-server line, about a
// write service whose default-server lacks `on-marked-down
// shutdown-sessions`: through the API the write fence marks the old
// primary DOWN, but its established sessions are not cut (measured on
// HAProxy 2.6: neither `health down` nor `state maint` cuts them without
// the option), so a session its pgbouncer queued may still run on the
// restarted standby (25006). The direct driver cuts them itself.
//
// Only the services it warned about are remembered (a pair that warns
// never equals one that does not, so remembering the others changed
// nothing): with every service remembered the map was ~0.45 MB at 1,000
// clusters, kept between applies.
func (t *Target) warnNoCut(desired []services.Service) {
	for _, d := range desired {
		if !services.WriteCheck(d.Check) || services.ShutsSessionsDown(d.DefaultServer) {
			delete(t.noCut, d.Name)
			continue
		}
		seen := [2]string{d.DefaultServer, d.Check}
		if was, ok := t.noCut[d.Name]; ok && was == seen {
			continue // seen as it is
		}
		if t.noCut == nil {
			t.noCut = map[string][2]string{}
		}
		t.noCut[d.Name] = seen
		t.log.Warn("write service without on-marked-down shutdown-sessions: through the Data Plane API the write fence forces the old primary DOWN but cannot cut its established sessions",
			zap.String("service", d.Name), zap.String("default_server", d.DefaultServer))
	}
}

// forceDown fences old primaries from write services through the runtime
// API (operational_state down: `set server B/S health down`), never a
// configuration write; flipParallel requests in flight. HAProxy cuts the
// server's established sessions only where the service's default-server
// has `on-marked-down shutdown-sessions` (Pigsty's default; the API has no
// `shutdown sessions`): WarnNoShutdownSessions says where it does not.
func (t *Target) forceDown(ctx context.Context, changes []target.Change, pid int64) error {
	return t.runtimeMany(ctx, changes, func(c target.Change) error {
		_, err := t.forceHealth(ctx, c, false, pid)
		return err
	})
}

// fence is forceDown of write guards (see guardBook): each answer is
// checked, a fence that did not take is forced again at once and noted in
// g when it still does not. It fails only when the write check does (a
// fence that does not take holds back its backend only).
func (t *Target) fence(ctx context.Context, changes []target.Change, pid int64, g *guardBook) error {
	if len(changes) == 0 {
		return nil
	}
	if err := target.CheckWrite(ctx); err != nil {
		return err
	}
	eachParallel(changes, flipParallel, func(c target.Change) error {
		t.putGuard(ctx, c, pid, g)
		return nil
	})
	return nil
}

// forceUp marks new primaries UP at once through the runtime API
// (operational_state up) after any reload; HAProxy's next checks still run.
// flipParallel requests in flight (a mass failover forces 2 per cluster).
func (t *Target) forceUp(ctx context.Context, changes []target.Change, pid int64) error {
	return t.runtimeMany(ctx, changes, func(c target.Change) error {
		_, err := t.forceHealth(ctx, c, true, pid)
		return err
	})
}

// forceHealth forces one server's health and keeps what the answer says
// (the API reads the server back after the change) for the next applies
// of HAProxy process pid (see forcedCache); it returns the last answer.
//
// A held new leader is also drained (one PUT: operational state, then
// admin state), and a server forced UP that this process drained is
// readied by the same PUT; one found drained otherwise (a new primary: the
// controller owns drain on a write service's leader) is readied by a
// second (see holdState).
func (t *Target) forceHealth(ctx context.Context, c target.Change, up bool, pid int64) (*models.RuntimeServer, error) {
	word := "down"
	if up {
		word = "up"
	}
	key := c.Backend + "/" + c.Server
	want := &models.RuntimeServer{OperationalState: word}
	hold := !up && isHold(c)
	switch {
	case hold:
		want.AdminState = holdAdmin
	case up && t.hold.isDrained(key):
		want.AdminState = "ready"
	}
	at := t.opts.Now()
	rs, err := t.c.ReplaceRuntimeServer(ctx, c.Backend, c.Server, want)
	if err != nil {
		return nil, fmt.Errorf("force %s %s/%s: %w", word, c.Backend, c.Server, err)
	}
	if rs != nil && (hold || want.AdminState != "") {
		t.hold.setDrained(key, rs.AdminState == holdAdmin)
		t.adminMerge(map[string]map[string]string{c.Backend: {c.Server: rs.AdminState}})
	}
	if up && rs != nil && rs.AdminState == holdAdmin {
		// A drain this process did not set, on the new primary.
		if rs, err = t.c.ReplaceRuntimeServer(ctx, c.Backend, c.Server, &models.RuntimeServer{AdminState: "ready"}); err != nil {
			return nil, fmt.Errorf("ready %s/%s (drained, forced up): %w", c.Backend, c.Server, err)
		}
		t.adminMerge(map[string]map[string]string{c.Backend: {c.Server: rs.AdminState}})
	}
	if up && rs != nil && rs.AdminState != holdAdmin {
		t.hold.seen(key)
	}
	// A server in maint answers down, and leaving maint brings it UP at
	// once: no record of it.
	if rs != nil && rs.AdminState != "maint" {
		t.forced.record(c.Backend+"/"+c.Server, up, rs.OperationalState, at, pid)
	}
	return rs, nil
}

// applyRuntime applies weight-only changes as direct server PUTs, which the
// API applies through the runtime socket without a reload (200).
func (t *Target) applyRuntime(ctx context.Context, st *state, desired []services.Service, changes []target.Change, res target.Result) (target.Result, error) {
	want := desiredServers(desired)
	v := st.version
	known := true
	for _, c := range changes {
		w, ok := want[c.Backend][c.Server]
		if st.servers[c.Backend][c.Server] == nil || !ok {
			return res, fmt.Errorf("set weight %s/%s: server not read", c.Backend, c.Server)
		}
		base, err := wholeServer(ctx, t.c, st, c.Backend, c.Server)
		if err != nil {
			return res, fmt.Errorf("set weight %s/%s: %w", c.Backend, c.Server, err)
		}
		m, err := t.c.ReplaceServer(ctx, c.Backend, serverModel(w, base), AtVersion(v))
		if err != nil {
			return res, fmt.Errorf("set weight %s/%s: %w", c.Backend, c.Server, err)
		}
		if m.Version > 0 {
			v = m.Version
		} else {
			v++
			known = false
		}
		if m.Reloaded() {
			// The API decided this needs a reload after all; follow it.
			res.Reloaded, res.ReloadID = true, m.ReloadID
			r, err := t.waitReload(ctx, m.ReloadID)
			res.ReloadResult = r
			if err != nil {
				res.Version = v
				return res, err
			}
		}
	}
	res.Version = v
	if known {
		t.keep(st.patched(desired, touched(changes), v))
	} else {
		t.keep(nil)
	}
	t.log.Info("applied at runtime", zap.Int("changes", len(changes)), zap.Int64("version", v))
	return res, nil
}

// wholeServer is the server a whole-object PUT is built on: the parsed one,
// or, when its line had options the parser does not know, the API's.
func wholeServer(ctx context.Context, cl *Client, st *state, backend, name string) (*models.Server, error) {
	if !st.partial[backend+"/"+name] {
		return st.model(backend, name), nil
	}
	s, _, err := cl.GetServer(ctx, backend, name)
	if err != nil {
		return nil, fmt.Errorf("read server: %w", err)
	}
	return s, nil
}

// op is one write call, done inside a transaction.
type op struct {
	what string
	do   func(ctx context.Context, c *Client, w Write) (Meta, error)
}

func desiredServers(desired []services.Service) map[string]map[string]services.Server {
	out := map[string]map[string]services.Server{}
	for _, d := range desired {
		m := map[string]services.Server{}
		for _, s := range d.Servers {
			m[s.Name] = s
		}
		out[d.Name] = m
	}
	return out
}

// planOps turns the changes into write calls, in an order the API accepts
// (backend before its servers and before the frontend that uses it).
func planOps(st *state, desired []services.Service, changes []target.Change, limit int) (ops []op, over bool, err error) {
	byName := map[string]services.Service{}
	for _, d := range desired {
		byName[d.Name] = d
	}
	want := desiredServers(desired)
	for _, c := range changes {
		// The count only grows (dedupe keeps the first of repeated
		// replaces, whenever it runs): past limit the answer is known.
		if limit > 0 {
			if ops = dedupe(ops); len(ops) > limit {
				return ops, true, nil
			}
		}
		d := byName[c.Backend]
		name := d.Name
		switch c.Kind {
		case target.KindCreateService:
			if st.be[name] == nil {
				be, err := backendModel(d, nil)
				if err != nil {
					return nil, false, err
				}
				ops = append(ops, op{"create backend " + name, func(ctx context.Context, cl *Client, w Write) (Meta, error) {
					return cl.CreateBackend(ctx, be, w)
				}})
				for _, hc := range httpChecksOf(d) {
					ops = append(ops, op{"create http-check " + name, func(ctx context.Context, cl *Client, w Write) (Meta, error) {
						return cl.CreateHTTPCheck(ctx, name, hc, w)
					}})
				}
				srv := append([]services.Server(nil), d.Servers...)
				sort.Slice(srv, func(i, j int) bool { return srv[i].Name < srv[j].Name })
				for _, s := range srv {
					m := serverModel(s, nil)
					ops = append(ops, op{"create server " + name + "/" + s.Name, func(ctx context.Context, cl *Client, w Write) (Meta, error) {
						return cl.CreateServer(ctx, name, m, w)
					}})
				}
			}
			if fe := st.fe[name]; fe == nil {
				f, b := frontendModel(d, nil), bindModel(d, nil)
				ops = append(ops,
					op{"create frontend " + name, func(ctx context.Context, cl *Client, w Write) (Meta, error) { return cl.CreateFrontend(ctx, f, w) }},
					op{"create bind " + name, func(ctx context.Context, cl *Client, w Write) (Meta, error) { return cl.CreateBind(ctx, name, b, w) }})
			} else {
				ops = append(ops, frontendOps(st, d)...)
			}
		case target.KindUpdateService:
			if _, err := backendModel(d, nil); err != nil {
				return nil, false, err
			}
			ops = append(ops, op{"replace backend " + name, func(ctx context.Context, cl *Client, w Write) (Meta, error) {
				// A whole-object PUT: built on the API's own backend, so
				// options the controller does not manage survive.
				base, _, err := cl.GetBackend(ctx, name)
				if err != nil {
					return Meta{}, fmt.Errorf("read backend: %w", err)
				}
				be, err := backendModel(d, base)
				if err != nil {
					return Meta{}, err
				}
				return cl.ReplaceBackend(ctx, be, w)
			}})
			cur := st.checks[name]
			if got := checkOf(st.be[name].advCheck, cur); got != d.Check || d.Check == "" {
				// Remove from the end so indexes stay valid, then add ours.
				for i := len(cur) - 1; i >= 0; i-- {
					idx := int64(i)
					ops = append(ops, op{"delete http-check " + name, func(ctx context.Context, cl *Client, w Write) (Meta, error) {
						return cl.DeleteHTTPCheck(ctx, name, idx, w)
					}})
				}
				for _, hc := range httpChecksOf(d) {
					ops = append(ops, op{"create http-check " + name, func(ctx context.Context, cl *Client, w Write) (Meta, error) {
						return cl.CreateHTTPCheck(ctx, name, hc, w)
					}})
				}
			}
			if st.fe[name] != nil {
				ops = append(ops, frontendOps(st, d)...)
			}
		case target.KindAddServer:
			m := serverModel(want[name][c.Server], nil)
			ops = append(ops, op{"create server " + name + "/" + c.Server, func(ctx context.Context, cl *Client, w Write) (Meta, error) {
				return cl.CreateServer(ctx, name, m, w)
			}})
		case target.KindUpdateServer, target.KindSetWeight:
			// Whole-object PUT built on the server as the file has it (or as
			// the API answers it, when the line had options the parser does
			// not know), so fields the controller does not manage survive.
			srv, ws := c.Server, want[name][c.Server]
			ops = append(ops, op{"replace server " + name + "/" + srv, func(ctx context.Context, cl *Client, w Write) (Meta, error) {
				base, err := wholeServer(ctx, cl, st, name, srv)
				if err != nil {
					return Meta{}, err
				}
				return cl.ReplaceServer(ctx, name, serverModel(ws, base), w)
			}})
		case target.KindRemoveServer:
			srv := c.Server
			ops = append(ops, op{"delete server " + name + "/" + srv, func(ctx context.Context, cl *Client, w Write) (Meta, error) {
				return cl.DeleteServer(ctx, name, srv, w)
			}})
		default:
			return nil, false, fmt.Errorf("unknown change kind %q", c.Kind)
		}
	}
	ops = dedupe(ops)
	return ops, limit > 0 && len(ops) > limit, nil
}

// frontendOps replaces an existing frontend and its bind with the wanted
// ones (create_service + update_service may both ask: dedupe keeps one).
func frontendOps(st *state, d services.Service) []op {
	name := d.Name
	ops := []op{{"replace frontend " + name, func(ctx context.Context, cl *Client, w Write) (Meta, error) {
		// Built on the API's own frontend: unmanaged options survive.
		base, _, err := cl.GetFrontend(ctx, name)
		if err != nil {
			return Meta{}, fmt.Errorf("read frontend: %w", err)
		}
		return cl.ReplaceFrontend(ctx, frontendModel(d, base), w)
	}}}
	if cur := st.bind[name].toModel(); cur != nil {
		bindName := cur.Name
		ops = append(ops, op{"replace bind " + name, func(ctx context.Context, cl *Client, w Write) (Meta, error) {
			binds, _, err := cl.GetBinds(ctx, name)
			if err != nil {
				return Meta{}, fmt.Errorf("read binds: %w", err)
			}
			base := cur
			for _, b := range binds {
				if b != nil && b.Name == bindName {
					base = b
				}
			}
			return cl.ReplaceBind(ctx, name, bindModel(d, base), w)
		}})
	} else {
		b := bindModel(d, nil)
		ops = append(ops, op{"create bind " + name, func(ctx context.Context, cl *Client, w Write) (Meta, error) { return cl.CreateBind(ctx, name, b, w) }})
	}
	return ops
}

func dedupe(ops []op) []op {
	seen := map[string]bool{}
	out := ops[:0]
	for _, o := range ops {
		if seen[o.what] && strings.HasPrefix(o.what, "replace") {
			continue
		}
		seen[o.what] = true
		out = append(out, o)
	}
	return out
}

// applyTxn runs every op in one transaction and commits it (one reload). On
// any failure the transaction is deleted: nothing is half-applied.
func (t *Target) applyTxn(ctx context.Context, st *state, desired []services.Service, ops []op, changes []target.Change, res target.Result) (target.Result, error) {
	txn, err := t.c.StartTransaction(ctx, st.version)
	if err != nil {
		return res, fmt.Errorf("start transaction at version %d: %w", st.version, err)
	}
	committed := false
	defer func() {
		if committed {
			return
		}
		// Clean up even when ctx is cancelled: an open transaction costs the
		// API memory and counts against its limit of 20.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.c.timeout)
		defer cancel()
		if err := t.c.DeleteTransaction(dctx, txn.ID); err != nil && !IsNotFound(err) {
			t.log.Warn("could not delete transaction", zap.String("transaction", txn.ID), zap.Error(err))
		}
	}()
	w := InTxn(txn.ID)
	for _, o := range ops {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if _, err := o.do(ctx, t.c, w); err != nil {
			return res, fmt.Errorf("%s: %w", o.what, err)
		}
	}
	_, m, err := t.c.CommitTransaction(ctx, txn.ID)
	if err != nil {
		return res, fmt.Errorf("commit transaction: %w", err)
	}
	committed = true
	if m.Version > 0 {
		res.Version = m.Version
		t.keep(st.patched(desired, touched(changes), m.Version))
	} else {
		res.Version = st.version + 1
		t.keep(nil)
	}
	t.log.Info("committed transaction", zap.Int("changes", len(changes)), zap.Int("calls", len(ops)),
		zap.String("reload_id", m.ReloadID), zap.Int64("version", res.Version))
	return t.followReload(ctx, m, res)
}

func (t *Target) followReload(ctx context.Context, m Meta, res target.Result) (target.Result, error) {
	if m.ReloadID == "" {
		// 200 (force_reload) or an API that reloaded synchronously.
		res.Reloaded = m.Status == 200 || m.Status == 202
		if res.Reloaded {
			res.ReloadResult = "succeeded"
		}
		return res, nil
	}
	res.Reloaded, res.ReloadID = true, m.ReloadID
	r, err := t.waitReload(ctx, m.ReloadID)
	res.ReloadResult = r
	return res, err
}

// waitReload polls GET /reloads/{id} until the reload succeeded or failed,
// at most ReloadTimeout. A reload still running then is reported as
// "in_progress" without error: the change is committed and the next apply
// sees whether it stuck.
func (t *Target) waitReload(ctx context.Context, id string) (string, error) {
	deadline := time.NewTimer(t.opts.ReloadTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(t.opts.ReloadPollInterval)
	defer tick.Stop()
	for {
		r, err := t.c.GetReload(ctx, id)
		switch {
		case err != nil && !Retryable(err):
			return "", fmt.Errorf("poll reload %s: %w", id, err)
		case err != nil:
			t.log.Debug("reload poll failed; retrying", zap.String("reload_id", id), zap.Error(err))
		case r.Status == "succeeded":
			return r.Status, nil
		case r.Status == "failed":
			return r.Status, fmt.Errorf("%w: reload %s: %s", ErrReloadFailed, id, strings.TrimSpace(r.Response))
		}
		select {
		case <-ctx.Done():
			return "in_progress", ctx.Err()
		case <-deadline.C:
			t.log.Warn("reload still in progress after timeout", zap.String("reload_id", id), zap.Duration("timeout", t.opts.ReloadTimeout))
			return "in_progress", nil
		case <-tick.C:
		}
	}
}

// applyRaw replaces the desired frontend/backend sections in the raw file
// and posts it in one call: cheaper than many per-object writes, because
// each of those re-saves the whole transaction file.
func (t *Target) applyRaw(ctx context.Context, st *state, desired []services.Service, changes []target.Change, calls int, res target.Result) (target.Result, error) {
	// rememberRunning, called right before with st, has the file at
	// st.version already (unpacked, or read when the parsed copy had
	// none): unpacking or reading it again doubled the work of a write.
	text, v := t.running.before, st.version
	if text == "" {
		text = st.fileText()
	}
	if text == "" {
		// The parsed copy was patched after a per-object write (and
		// rememberRunning could not read it): read the file itself once.
		var err error
		if text, v, err = t.c.GetRawConfig(ctx); err != nil {
			return res, fmt.Errorf("read raw configuration: %w", err)
		}
	}
	if v != st.version {
		return res, &APIError{Status: 409, Code: 409, Method: "GET", Path: "/configuration/raw",
			Message: fmt.Sprintf("version moved from %d to %d", st.version, v)}
	}
	out, err := ReplaceSections(text, desired, st.model)
	if err != nil {
		return res, err
	}
	m, err := t.c.PostRawConfig(ctx, v, out)
	if err != nil {
		return res, fmt.Errorf("post raw configuration: %w", err)
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
	fields := []zap.Field{zap.Int("changes", len(changes))}
	if calls > 0 { // (0: not counted: the twin layout, or past the raw threshold)
		fields = append(fields, zap.Int("calls_avoided", calls))
	}
	t.log.Info("posted raw configuration", append(fields,
		zap.String("reload_id", m.ReloadID), zap.Int64("version", res.Version))...)
	return t.followReload(ctx, m, res)
}

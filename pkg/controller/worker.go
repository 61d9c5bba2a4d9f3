package controller

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// job is what the reconcile hands to a target worker: the latest wins.
type job struct {
	// desired is state's services, set by the worker that takes the job
	// (jobs made by hand set it directly and have no state).
	desired []services.Service
	state   *desiredState
	force   bool
	// reassert: apply again if desired has a write fence (ForceDown), even
	// unchanged (see Controller.reconcile).
	reassert bool
	eventAt  time.Time // first DCS event this job answers (convergence latency)
	decision int64
	revision int64
	// term is the election term the job was planned under: it is written
	// only while this instance still leads in that term.
	term int64
	// burst: planned in a burst (see burstClusters); kept when a newer job
	// replaces a pending one.
	burst bool
}

// TargetStatus is one HAProxy target's convergence, as status shows it.
type TargetStatus struct {
	Name string `json:"name"`
	// State is "in_sync", "pending" (nothing applied yet), "applying",
	// "deferring" (the last apply left changes for a moment later, see
	// Deferred), "partial" (clusters held back), "failing", "standby" (not
	// the elected controller) or "dry_run".
	State        string    `json:"state"`
	InSync       bool      `json:"in_sync"`
	LastAttempt  time.Time `json:"last_attempt,omitempty"`
	LastApplied  time.Time `json:"last_applied,omitempty"`
	LastDecision int64     `json:"last_decision"`
	// AppliedRevision is the DCS revision of the last applied plan.
	AppliedRevision int64           `json:"applied_revision"`
	Version         int64           `json:"version,omitempty"`
	ReloadID        string          `json:"reload_id,omitempty"`
	ReloadResult    string          `json:"reload_result,omitempty"`
	LastChanges     []target.Change `json:"last_changes,omitempty"`
	// PendingChanges are what a dry run would do now.
	PendingChanges  []target.Change `json:"pending_changes,omitempty"`
	LastError       string          `json:"last_error,omitempty"`
	Failures        int             `json:"consecutive_failures"`
	StatePreserved  *bool           `json:"state_preserved,omitempty"`
	StateWarning    string          `json:"state_warning,omitempty"`
	ApplyDurationMS float64         `json:"last_apply_ms"`
	// HeldBack are clusters this HAProxy refused: their last good state is
	// kept here while the others are applied (state "partial").
	HeldBack []HeldCluster `json:"held_back,omitempty"`
	// Deferred is how many changes the last apply left out on purpose
	// (state "deferring": the deactivations of a crashed old primary's
	// twins, left for the apply that brings the new primary UP); they are
	// applied by DeferredUntil at the latest.
	Deferred      int       `json:"deferred,omitempty"`
	DeferredUntil time.Time `json:"deferred_until,omitempty"`
}

type worker struct {
	t      target.Target
	opts   *Options
	log    *zap.Logger
	record func(name string, j job, res target.Result, err error, dur time.Duration)
	notify chan struct{}
	// heldEvent, when set, is told about every cluster held back.
	heldEvent func(target, cluster string, err error)
	// burstGoing, set for a target.Batcher, reports whether DCS events of
	// a burst are still coming (see burstClusters); burstMax is
	// burstMaxWait (tests).
	burstGoing func() bool
	burstMax   time.Duration
	// caughtUp (set with burstGoing) returns true once the plan has
	// caught up with etcd's revision at the call (Controller.dcsCaughtUp).
	caughtUp func(context.Context) bool

	// mu guards the fields below. It is taken under the controller's c.mu
	// (quiet, from a reconcile) and must never be held while calling into
	// the controller (record, heldEvent take c.mu): see Controller.mu.
	mu      sync.Mutex
	pending *job
	applied []services.Service // last desired applied successfully, nil from the start of an apply until it succeeds
	// appliedTerm is the election term applied was written in: a job of
	// another term never finds it unchanged (another instance may have
	// driven the target in between).
	appliedTerm int64
	status      TargetStatus
	held        map[string]*HeldCluster // clusters this HAProxy refused, by name
	// reloadedAt is when the last apply that reloaded HAProxy ended.
	reloadedAt time.Time
	// deferUntil is when the changes the last apply deferred on purpose
	// (target.Result.Deferred) are due (zero: none).
	deferUntil time.Time
}

func newWorker(t target.Target, opts *Options, record func(string, job, target.Result, error, time.Duration)) *worker {
	return &worker{
		t: t, opts: opts, record: record,
		log:    opts.Log.With(zap.String("target", t.Name())),
		notify: make(chan struct{}, 1),
		status: TargetStatus{Name: t.Name(), State: "pending"},
	}
}

// submit replaces the worker's pending job; it never blocks.
func (w *worker) submit(j job) {
	w.mu.Lock()
	if w.pending != nil && w.pending.force {
		j.force = true // a resync must not be lost by a newer event
	}
	if w.pending != nil && w.pending.reassert {
		j.reassert = true
	}
	if w.pending != nil && w.pending.burst {
		j.burst = true
	}
	if w.pending != nil && !w.pending.eventAt.IsZero() && w.pending.eventAt.Before(j.eventAt) {
		j.eventAt = w.pending.eventAt
	}
	w.pending = &j
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// quiet reports whether the worker has nothing pending or in progress, and
// when its last reload ended.
func (w *worker) quiet() (bool, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending == nil && w.status.State != "applying", w.reloadedAt
}

func (w *worker) snapshot() TargetStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.status
	return s
}

// run applies jobs until ctx is done. A failed job is retried with capped
// exponential backoff, always with the newest desired state.
func (w *worker) run(ctx context.Context) {
	var retry <-chan time.Time
	var current *job
	failing := false // current failed and waits for its backoff
	for {
		fired := false
		select {
		case <-ctx.Done():
			return
		case <-w.notify:
		case <-retry:
			fired = true
		}
		// (Compared once taken, outside w.mu: nothing that can panic runs
		// under w.mu, which a reconcile waits for under c.mu.)
		w.mu.Lock()
		p := w.pending
		w.pending = nil
		w.mu.Unlock()
		if p != nil {
			if failing && !fired && retry != nil && p.term == current.term && sameDesired(p.services(), current.services()) {
				// The same work that keeps failing, during its backoff (a
				// resync, DCS churn that changes nothing here): wait for
				// the backoff instead of retrying at every event.
				continue
			}
			current = p
		}
		retry = nil
		failing = false
		if current == nil {
			continue
		}
		if current.burst && w.burstGoing != nil {
			var err error
			if current, err = w.waitBurst(ctx, current); err != nil {
				return
			}
		}
		if ok := w.handle(ctx, current); ok {
			d := w.heldRetryIn()
			if r := w.deferredRetryIn(); r > 0 && (d == 0 || r < d) {
				d = r
			}
			if d > 0 {
				// Some cluster is held back, or the apply deferred
				// changes: try again when due, with the newest desired
				// state.
				again := *current
				again.force = true
				current = &again
				retry = time.After(d)
				continue
			}
			current = nil
			continue
		}
		if ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		delay := backoff(w.opts.RetryMin, w.opts.RetryMax, w.status.Failures)
		w.mu.Unlock()
		retry = time.After(delay)
		failing = true
	}
}

// services sets and returns j.desired: its state's services, concatenated
// now if no worker did yet.
func (j *job) services() []services.Service {
	if j.desired == nil && j.state != nil {
		j.desired = j.state.services()
	}
	return j.desired
}

// desiredState is one reconcile's desired services as the parts (each
// cluster's services, in plan order) they are the concatenation of. The
// concatenation is made once, when first needed: by the first worker that
// applies it. A mass failover at 1,000 clusters makes ~150 desired states
// of which the workers apply ~20 (the others are replaced while pending),
// and concatenating each at its reconcile was ~1 MB of garbage a time. A
// reconcile whose parts did not change hands on the same state, so the
// workers get the very same slice.
type desiredState struct {
	parts [][]services.Service
	once  sync.Once
	all   []services.Service
}

// services is the concatenation of the parts (nil when there are no
// services: nothing to apply yet). A nil state has none.
func (d *desiredState) services() []services.Service {
	if d == nil {
		return nil
	}
	d.once.Do(func() { d.all = concatParts(d.parts) })
	return d.all
}

// empty reports whether the state has no services, without concatenating.
func (d *desiredState) empty() bool {
	if d == nil {
		return true
	}
	for _, p := range d.parts {
		if len(p) > 0 {
			return false
		}
	}
	return true
}

func backoff(min, max time.Duration, failures int) time.Duration {
	d := min
	for i := 1; i < failures && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// handle applies one job; it reports whether the job is done (no retry).
func (w *worker) handle(ctx context.Context, j *job) bool {
	j.services()
	w.mu.Lock()
	applied := w.applied // (never modified once handed on: compared outside w.mu)
	appliedTerm := w.appliedTerm
	w.mu.Unlock()
	// Leadership first: a job that changes nothing here must not keep an
	// instance that no longer leads reporting its targets in sync.
	leads := w.opts.termOK(j.term)
	unchanged := applied != nil && appliedTerm == j.term && sameDesired(applied, j.desired)
	if leads && unchanged && !j.force && !(j.reassert && hasForceDown(j.desired)) {
		return true
	}
	if !leads {
		w.mu.Lock()
		w.standbyLocked()
		w.mu.Unlock()
		return true
	}
	actx, cancel := context.WithTimeout(ctx, w.opts.ApplyTimeout)
	defer cancel()
	start := w.opts.Now()
	if w.opts.DryRun {
		changes, err := w.t.Diff(actx, j.desired)
		w.mu.Lock()
		w.status.State = "dry_run"
		w.status.LastAttempt = start
		w.status.PendingChanges = changes
		w.status.InSync = err == nil && len(changes) == 0
		if err != nil {
			w.status.LastError = err.Error()
		} else {
			w.status.LastError = ""
		}
		w.mu.Unlock()
		if err == nil && len(changes) > 0 {
			w.log.Info("dry run: would change", append([]zap.Field{zap.Int64("decision", j.decision)}, changeFields("changes", changes)...)...)
		}
		return err == nil
	}
	w.mu.Lock()
	if !unchanged || !w.status.InSync {
		// A resync of what is already applied keeps the target in sync (and
		// the controller ready) while it checks; only a failure or a change
		// of the desired state takes that away.
		w.status.State = "applying"
		w.status.InSync = false
	}
	w.status.LastAttempt = start
	// What was applied last counts no more: an apply that fails may have
	// changed part of the target (runtime flips are not transactional),
	// so the next job is applied even if it equals the state before it
	// (a switchover undone while the apply failed). Dropped before the
	// apply, the last desired state (and its plans' servers: ~3 MB at
	// 1,000 clusters) is not kept through it.
	w.applied = nil
	w.mu.Unlock()
	res, err := w.applyIsolated(actx, j)
	dur := w.opts.Now().Sub(start)
	if isDropped(err) {
		// Leadership ended (or moved to a newer term) during the apply:
		// nothing more was written; the work is someone else's now.
		w.log.Warn("apply dropped: this instance no longer leads in the term it planned under", zap.Int64("decision", j.decision))
		w.mu.Lock()
		w.standbyLocked()
		w.mu.Unlock()
		return true
	}
	w.record(w.t.Name(), *j, res, err, dur)

	w.mu.Lock()
	defer w.mu.Unlock()
	w.status.LastAttempt = start
	w.status.ApplyDurationMS = float64(dur.Microseconds()) / 1000
	if err != nil {
		prevErr := w.status.LastError
		w.status.Failures++
		w.status.LastError = err.Error()
		w.status.State = "failing"
		w.status.InSync = false
		if prevErr != err.Error() {
			w.log.Error("apply failed; will retry", zap.Error(err), zap.Int("failures", w.status.Failures))
		}
		return false
	}
	if w.status.Failures > 0 {
		w.log.Info("apply recovered", zap.Int("after_failures", w.status.Failures))
	}
	w.applied, w.appliedTerm = j.desired, j.term
	if res.Reloaded {
		w.reloadedAt = w.opts.Now()
	}
	w.status.Failures = 0
	w.status.LastError = ""
	w.status.State = "in_sync"
	w.status.InSync = true
	w.status.Deferred, w.status.DeferredUntil, w.deferUntil = 0, time.Time{}, time.Time{}
	if res.Deferred > 0 && res.RetryIn > 0 {
		w.deferUntil = w.opts.Now().Add(res.RetryIn)
		w.status.State = "deferring"
		w.status.InSync = false
		w.status.Deferred, w.status.DeferredUntil = res.Deferred, w.deferUntil
	}
	if len(w.held) > 0 {
		w.status.State = "partial"
		w.status.InSync = false
	}
	w.status.LastApplied = w.opts.Now()
	w.status.LastDecision = j.decision
	w.status.AppliedRevision = j.revision
	if res.Version != 0 {
		w.status.Version = res.Version
	}
	if res.ReloadID != "" {
		w.status.ReloadID = res.ReloadID
		w.status.ReloadResult = res.ReloadResult
	}
	if len(res.Changes) > 0 {
		w.status.LastChanges = res.Changes
	}
	if res.StatePreserved != nil {
		w.status.StatePreserved = res.StatePreserved
		if !*res.StatePreserved {
			w.status.StateWarning = "this HAProxy does not keep server state across reloads (no server-state-file / load-server-state-from-file): after every reload all servers start UP until their first check, and writes can reach replicas"
		} else {
			w.status.StateWarning = ""
		}
	}
	return true
}

// standbyLocked puts the worker in standby: another instance drives the
// target. Nothing is held back or deferred here any more (the elected
// instance decides that), and everything is re-checked once this one
// leads again. Call with w.mu held.
func (w *worker) standbyLocked() {
	w.status.State = "standby"
	w.status.InSync = false
	w.status.Failures = 0 // (LastError stays: the last one seen)
	w.applied = nil
	w.held = nil
	w.status.HeldBack = nil
	w.status.Deferred, w.status.DeferredUntil, w.deferUntil = 0, time.Time{}, time.Time{}
}

// waitBurst waits, at most burstMaxWait, while the DCS events of the burst
// j answers are still coming (burstGoing), and returns the newest job
// (the pending one, with j's flags and first event, when one came). It
// returns an error only when ctx is done.
//
// A pause in the events is no end of the burst by itself: under load etcd
// hands a watch a burst's events up to half a second after they were
// written (a mass failover's new leaders, written in 0.25 s, came in two
// halves 0.3 s apart, and the first half was applied alone: 4 s, then the
// second 2.7 s). So once quiet, the wait goes on until the plan has caught
// up with etcd's revision (caughtUp), and again while what that brought
// keeps changing the plan.
func (w *worker) waitBurst(ctx context.Context, j *job) (*job, error) {
	start := time.Now()
	waited, caught := false, false
	for {
		for w.burstGoing() && time.Since(start) < w.burstMax {
			waited = true
			if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
				return j, err
			}
		}
		if w.caughtUp == nil || time.Since(start) >= w.burstMax {
			break
		}
		asked := time.Now()
		cctx, cancel := context.WithDeadline(ctx, start.Add(w.burstMax))
		caught = w.caughtUp(cctx)
		cancel()
		// (A catch-up that found the plan current at once, one etcd read,
		// is no wait worth a log line.)
		waited = waited || time.Since(asked) > 10*time.Millisecond
		if err := ctx.Err(); err != nil {
			return j, err
		}
		if !caught || !w.burstGoing() {
			break
		}
	}
	j.burst = false
	w.mu.Lock()
	p := w.pending
	w.pending = nil
	w.mu.Unlock()
	if waited {
		w.log.Info("waited for a burst of DCS events to end before applying it", zap.Duration("waited", time.Since(start)),
			zap.Bool("newer_plan", p != nil), zap.Bool("caught_up_with_etcd", caught))
	}
	if p == nil {
		return j, nil
	}
	p.force = p.force || j.force
	p.reassert = p.reassert || j.reassert
	p.burst = false
	if !j.eventAt.IsZero() && (p.eventAt.IsZero() || j.eventAt.Before(p.eventAt)) {
		p.eventAt = j.eventAt
	}
	return p, nil
}

// deferredRetryIn is how long until the changes the last apply deferred
// are due (0: none).
func (w *worker) deferredRetryIn() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.deferUntil.IsZero() {
		return 0
	}
	return max(w.deferUntil.Sub(w.opts.Now()), time.Millisecond)
}

// hasForceDown reports whether desired fences a server (ForceDown).
func hasForceDown(desired []services.Service) bool {
	for i := range desired {
		for j := range desired[i].Servers {
			if desired[i].Servers[j].ForceDown {
				return true
			}
		}
	}
	return false
}

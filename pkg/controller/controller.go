// Package controller is pgsvc's reconcile loop: DCS snapshots mark the view
// dirty; a reconcile computes the whole plan from the inventory and the live
// Patroni state, applies the safety policies, and hands the desired services
// to one worker per HAProxy target, which applies them (one unit per target)
// with its own retries and backoff.
//
// Data flow: Observe (etcd snapshot) -> ReconcileOnce (plan.Compute + policy)
// -> worker.submit -> target.Apply -> status.
package controller

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// Options tune the controller. Zero values take the defaults in brackets.
type Options struct {
	Log *zap.Logger
	// Now is the clock (time.Now).
	Now func() time.Time
	// Debounce is the least time between the starts of two reconciles woken
	// by DCS events (50ms): the first event after a quiet spell is
	// reconciled at once (a leader key moving must reach HAProxy without
	// delay), the rest of a burst together once Debounce has passed.
	Debounce time.Duration
	// ResyncInterval forces a full re-apply to every target, repairing drift (30s).
	ResyncInterval time.Duration
	// StaleAfter is how long without contact with etcd makes the view stale
	// (10s). A stale view is frozen: nothing is applied from it. Its
	// clusters keep their last good services; only a switchover or
	// failover in flight goes on, from the clock and the answers of the
	// members' Patroni REST APIs (not etcd), so the write path's temporary
	// flags (a new primary forced UP or held DOWN, the old one fenced) end
	// as they would have, at the latest when PromoteWindow ends; none
	// starts from a stale view. Other namespaces are not affected.
	StaleAfter time.Duration
	// RetryMin and RetryMax bound a failing target's backoff (500ms, 30s).
	RetryMin, RetryMax time.Duration
	// ApplyTimeout bounds one Apply call (60s).
	ApplyTimeout time.Duration
	// FenceHold is how long a primary that released the leader key stays
	// fenced from write services after a new leader took the key (5s):
	// about inter + (fall-1) x fastinter of the health checks, the time
	// HAProxy needs to see it fail /primary.
	FenceHold time.Duration
	// PromoteWindow is how long after a member took the leader key write
	// services may force it UP (once Patroni reports it running as
	// primary) rather than wait for its health checks (15s).
	PromoteWindow time.Duration
	// ProbeInterval is how often, during a transition only, the members
	// concerned are asked for /primary through their Patroni REST API (20ms).
	ProbeInterval time.Duration
	// PatroniCAFile verifies Patroni REST APIs served over https
	// (patroni.DefaultCAFile, Pigsty's CA).
	PatroniCAFile string
	// Prober, when set, replaces the REST prober (tests).
	Prober Prober
	// IncludeUnknown serves members Patroni reports that the inventory lacks.
	IncludeUnknown bool
	// DryRun computes and diffs but never changes a target.
	DryRun bool
	// HistorySize is how many decisions status keeps (100).
	HistorySize int
	// Gate, when set, must return true for this instance to apply changes
	// (controller HA: only the elected leader applies).
	Gate func() bool
	// Term, when set, returns the election term and whether this instance
	// leads (election.Elector.Term); it supersedes Gate: work is written
	// only in the term it was planned in, and the lease is re-checked right
	// before every write inside an apply.
	Term func() (int64, bool)
	// Metrics, when set, receives counters and latencies.
	Metrics Metrics
	// LeaderInfo, when set, says which controller instance applies (HA).
	LeaderInfo func() *LeaderStatus
	// RuntimeRoles says every target applies a role change at runtime (the
	// twins layout, docs/twins.md): a cluster's role changes are then not
	// held back while its new primary comes on (holdRoles), as that hold
	// only keeps a reload from delaying the new primary's force-up. A mass
	// failover's role flips no longer wait for 1,000 new primaries to be
	// confirmed (up to maxRoleHold each).
	RuntimeRoles bool
}

func (o *Options) defaults() {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Debounce == 0 {
		o.Debounce = 50 * time.Millisecond
	}
	if o.ResyncInterval == 0 {
		o.ResyncInterval = 30 * time.Second
	}
	if o.StaleAfter == 0 {
		o.StaleAfter = 10 * time.Second
	}
	if o.RetryMin == 0 {
		o.RetryMin = 500 * time.Millisecond
	}
	if o.RetryMax == 0 {
		o.RetryMax = 30 * time.Second
	}
	if o.ApplyTimeout == 0 {
		o.ApplyTimeout = 60 * time.Second
	}
	if o.FenceHold == 0 {
		o.FenceHold = 5 * time.Second
	}
	if o.PromoteWindow == 0 {
		o.PromoteWindow = 15 * time.Second
	}
	if o.ProbeInterval == 0 {
		o.ProbeInterval = 20 * time.Millisecond
	}
	if o.HistorySize <= 0 {
		o.HistorySize = 100
	}
	if o.Metrics == nil {
		o.Metrics = nopMetrics{}
	}
}

// HealthFunc reports the health of the etcd watch of one namespace.
type HealthFunc func() patroni.WatchStatus

// CatchUpFunc returns once the etcd watch of one namespace has handed out
// every event up to etcd's revision at the call, with the revision of the
// last snapshot it sent (patroni.Watcher.CatchUp).
type CatchUpFunc func(context.Context) (int64, error)

// Controller keeps every target in step with the plan. Create it with New.
type Controller struct {
	opts Options
	log  *zap.Logger

	dirty chan struct{} // 1-buffered: a pending reconcile
	// changedAt is when a reconcile last changed some cluster's services
	// (unix ns), and reconciling is set during every reconcile (see
	// burstGoing).
	changedAt   atomic.Int64
	reconciling atomic.Bool
	// burstAt is when a reconcile last changed burstClusters clusters or
	// more (unix ns).
	burstAt atomic.Int64

	// inbox holds the DCS snapshots Observe received since the last
	// takeInbox (by namespace, the newest), and inboxAt the time of each
	// namespace's first event among them; under inboxMu, not mu.
	inboxMu sync.Mutex
	inbox   map[string]patroni.Snapshot
	inboxAt map[string]time.Time

	// catchUp: per namespace, its watcher's CatchUp (SetCatchUp); planned:
	// per namespace, the revision of the snapshot the last finished
	// reconcile planned from. Both under plannedMu (see dcsCaughtUp).
	plannedMu sync.Mutex
	catchUp   map[string]CatchUpFunc
	planned   map[string]int64

	// mu guards the fields below. Lock order: c.mu may be held while a
	// worker's w.mu is taken (a reconcile asks the workers whether they are
	// quiet: targetsQuiet), and while tx.boxMu, inboxMu or plannedMu are
	// taken; never the other way round: nothing that holds w.mu (or those)
	// may take c.mu. Worker callbacks into the controller (record,
	// heldEvent: addEvent, noteApplied) are called without w.mu.
	mu          sync.Mutex
	inv         *topology.Inventory
	snaps       map[string]patroni.Snapshot // by namespace
	eventAt     map[string]time.Time        // first unreconciled event per namespace
	health      map[string]HealthFunc
	lastLeaders map[string]string             // cluster -> last leader seen in DCS
	released    map[string]*release           // cluster -> member fenced from write services
	promoted    map[string]*promotion         // cluster -> member to force UP in write services
	tx          transitions                   // switchovers and failovers in flight (transition.go)
	lastGood    map[string][]services.Service // cluster -> services last computed from a fresh view
	plan        *plan.Plan
	frozen      map[string]string             // cluster -> why its services are frozen
	planErrs    map[string]string             // cluster -> why its plan failed (last reconcile)
	staleNS     map[string]string             // namespace -> why its view is stale (last reconcile)
	desired     *desiredState                 // what the workers were last handed
	desiredBy   map[string][]services.Service // cluster -> its part of desired
	// desiredParts are the parts desired was concatenated from (clusters in
	// plan order).
	desiredParts [][]services.Service
	decision     int64
	history      []Event
	workers      []*worker
	guard        *panicGuard
	lastState    map[string]*patroni.ClusterState // cluster -> last DCS state seen (kept if all its keys vanish)
	plans        planCache                        // each cluster's plan while its inputs stay the same
	dcsBuf       map[string]*patroni.ClusterState // the merged DCS view of the reconcile in progress
	// fullPlan makes every reconcile plan every cluster (tests compare).
	fullPlan bool
	// checkEvery is how often staleness and due transition steps are
	// checked without an event (1s; tests).
	checkEvery time.Duration
}

// New returns a controller for inv that keeps targets in step.
func New(inv *topology.Inventory, targets []target.Target, opts Options) *Controller {
	opts.defaults()
	c := &Controller{
		opts:        opts,
		log:         opts.Log,
		dirty:       make(chan struct{}, 1),
		inv:         inv,
		snaps:       map[string]patroni.Snapshot{},
		eventAt:     map[string]time.Time{},
		health:      map[string]HealthFunc{},
		lastLeaders: map[string]string{},
		released:    map[string]*release{},
		promoted:    map[string]*promotion{},
		lastGood:    map[string][]services.Service{},
		frozen:      map[string]string{},
		staleNS:     map[string]string{},
		guard:       newPanicGuard(),
		lastState:   map[string]*patroni.ClusterState{},
	}
	c.tx.init(&c.opts)
	for _, t := range targets {
		w := newWorker(t, &c.opts, c.recordApply)
		w.heldEvent = c.recordHeld
		if target.BatchesBursts(t) {
			w.burstGoing, w.burstMax, w.caughtUp = c.burstGoing, burstMaxWait, c.dcsCaughtUp
		}
		c.workers = append(c.workers, w)
	}
	return c
}

// Namespaces returns the DCS namespaces the inventory's clusters live in.
func Namespaces(inv *topology.Inventory) []string {
	seen := map[string]bool{}
	var out []string
	for _, cl := range inv.Clusters {
		if !seen[cl.Namespace] {
			seen[cl.Namespace] = true
			out = append(out, cl.Namespace)
		}
	}
	sort.Strings(out)
	return out
}

// SetCatchUp registers the catch-up of namespace ns's etcd watch: a burst
// is applied once the plan has caught up with etcd (see dcsCaughtUp).
func (c *Controller) SetCatchUp(ns string, f CatchUpFunc) {
	c.plannedMu.Lock()
	if c.catchUp == nil {
		c.catchUp = map[string]CatchUpFunc{}
	}
	c.catchUp[ns] = f
	c.plannedMu.Unlock()
}

// dcsCaughtUp returns true once every namespace's watch has handed out
// every event up to etcd's revision at the call (CatchUpFunc) and a
// reconcile has planned from it and ended; false when a namespace has no
// catch-up, when one fails (etcd unreachable: nothing to wait for) or
// when ctx ends first.
func (c *Controller) dcsCaughtUp(ctx context.Context) bool {
	c.plannedMu.Lock()
	fns := maps.Clone(c.catchUp)
	c.plannedMu.Unlock()
	if len(fns) == 0 {
		return false
	}
	for ns, f := range fns {
		rev, err := f(ctx)
		if err != nil {
			return false
		}
		for {
			c.plannedMu.Lock()
			done := c.planned[ns] >= rev
			c.plannedMu.Unlock()
			if done {
				break
			}
			if sleepCtx(ctx, 5*time.Millisecond) != nil {
				return false
			}
		}
	}
	return true
}

// SetHealth registers the watch health of namespace ns. A namespace without
// a health function is considered connected whenever it has a snapshot.
func (c *Controller) SetHealth(ns string, f HealthFunc) {
	c.mu.Lock()
	c.health[ns] = f
	c.mu.Unlock()
}

// Observe records a complete DCS snapshot of one namespace and marks the
// view dirty. It never blocks.
//
// It does not wait for c.mu: a reconcile holds that for tens of ms at 1,000
// clusters, and a watcher whose snapshots wait behind each one hands the
// controller one etcd revision per reconcile (a mass failover's 40
// revisions, written in 0.5 s, were seen over 1.5 s). The snapshot waits
// in inbox until the next reconcile (or status, or staleness check) takes
// it under c.mu: the newest of a namespace replaces the older ones.
func (c *Controller) Observe(s patroni.Snapshot) {
	c.inboxMu.Lock()
	if c.inbox == nil {
		c.inbox = map[string]patroni.Snapshot{}
		c.inboxAt = map[string]time.Time{}
	}
	c.inbox[s.Namespace] = s
	if _, ok := c.inboxAt[s.Namespace]; !ok {
		at := s.At
		if at.IsZero() {
			at = c.opts.Now()
		}
		c.inboxAt[s.Namespace] = at
	}
	c.inboxMu.Unlock()
	c.opts.Metrics.DCSSnapshot(s.Namespace)
	c.markDirty()
}

// takeInbox moves the snapshots Observe received into c.snaps, and the
// time of each namespace's first event not reconciled yet into c.eventAt
// (what Observe did under c.mu before). Call with c.mu held.
func (c *Controller) takeInbox() {
	c.inboxMu.Lock()
	defer c.inboxMu.Unlock()
	for ns, s := range c.inbox {
		c.snaps[ns] = s
		delete(c.inbox, ns)
	}
	for ns, at := range c.inboxAt {
		if _, ok := c.eventAt[ns]; !ok {
			c.eventAt[ns] = at
		}
		delete(c.inboxAt, ns)
	}
}

// SetInventory replaces the inventory (SIGHUP reload). The caller validated
// it; the next reconcile uses it.
func (c *Controller) SetInventory(inv *topology.Inventory) {
	c.mu.Lock()
	c.inv = inv
	c.mu.Unlock()
	c.log.Info("inventory replaced", zap.String("file", inv.File), zap.Int("clusters", len(inv.Clusters)))
	c.markDirty()
}

// Inventory returns the inventory in use.
func (c *Controller) Inventory() *topology.Inventory {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inv
}

// Trigger asks for a reconcile soon (e.g. after leadership was gained).
func (c *Controller) Trigger() { c.markDirty() }

func (c *Controller) markDirty() {
	select {
	case c.dirty <- struct{}{}:
	default:
	}
}

// Run reconciles until ctx is done: after each burst of DCS events, on every
// resync tick and on a periodic staleness check. It starts the target
// workers and waits for them before returning ctx.Err().
func (c *Controller) Run(parent context.Context) (err error) {
	ctx, cancel := context.WithCancel(parent)
	var wg sync.WaitGroup
	for _, w := range c.workers {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			defer c.recoverPanic("target worker " + w.t.Name())
			w.run(ctx)
		}(w)
	}
	defer func() {
		cancel()
		// The probes end with ctx; stopProbing waits for them. After a
		// panic both waits are bounded (waitAfter): the controller stops
		// and says why rather than hang on state the panic left behind.
		c.waitAfter(func() {
			c.stopProbing()
			wg.Wait()
		})
		if f := c.Failed(); f != "" {
			err = fmt.Errorf("controller stopped: %s", f)
		}
	}()
	// Deferred last, run first: a panic of the loop (a reconcile's, under
	// c.mu, released by its own deferred unlock) is recorded before
	// anything else that stops the controller runs, so Failed and /healthz
	// report it and Run returns its error.
	defer c.recoverPanic("reconcile loop")
	c.startProbing(ctx)

	resync := time.NewTicker(c.opts.ResyncInterval)
	defer resync.Stop()
	checkEvery := c.checkEvery
	if checkEvery == 0 {
		checkEvery = time.Second
	}
	check := time.NewTicker(checkEvery)
	defer check.Stop()
	// due fires when a transition has something due by the clock (a role
	// hold ending, a fence to lift): at that time rather than at the next
	// tick of check, up to a second later.
	due := time.NewTimer(time.Hour)
	due.Stop()
	defer due.Stop()
	var wakes pacer
	var lastDCS time.Time // when the last DCS-woken reconcile started
	// dcsReconcile reconciles a DCS event (c.dirty taken).
	dcsReconcile := func() error {
		if d := debounceWait(time.Now(), lastDCS, c.opts.Debounce); d > 0 {
			if err := sleepCtx(ctx, d); err != nil {
				return err
			}
			// Drain what arrived meanwhile: one reconcile covers it.
			select {
			case <-c.dirty:
			default:
			}
		}
		lastDCS = time.Now()
		c.ReconcileOnce(false)
		return nil
	}
	for {
		c.armDue(due)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.guard.done:
			return nil // a worker panicked: the deferred check reports it
		case <-c.dirty:
			if err := dcsReconcile(); err != nil {
				return err
			}
		case <-c.tx.wake:
			// A REST probe saw a transition move: no debounce for a lone
			// one, the write path waits on this. In a storm (a mass
			// failover wakes the loop once per cluster) the pacer spaces
			// them so that each covers every answer that came meanwhile.
			// A DCS event ends that wait: it is reconciled as it would
			// have been without the probe's (debounced, not paced), and
			// that reconcile covers the answers too. (The wait held the
			// DCS events back: a mass failover's last leader keys were
			// planned ~200 ms late, behind a paced probe wake.)
			started := time.Now()
			dcs, err := pacedWait(ctx, wakes.wait(started), c.dirty)
			if err != nil {
				return err
			}
			select {
			case <-c.tx.wake:
			default:
			}
			started = time.Now()
			if dcs {
				if err := dcsReconcile(); err != nil {
					return err
				}
			} else {
				c.ReconcileOnce(false)
			}
			wakes.done(started, time.Now())
		case <-resync.C:
			c.ReconcileOnce(true)
		case <-check.C:
			c.checkStale(true)
		case <-due.C:
			c.checkStale(false)
		}
	}
}

// debounceWait is how long a DCS event at now waits before its reconcile
// when the last DCS-woken one started at last: nothing after a quiet spell
// (leading edge: the 50 ms a trailing debounce cost were half of a
// switchover's time to live at 1,000 clusters), else the rest of every.
func debounceWait(now, last time.Time, every time.Duration) time.Duration {
	return max(every-now.Sub(last), 0)
}

// pacedWait waits d (nothing when d <= 0) unless a DCS event comes first
// on dirty (taken: dcs true), or ctx ends (its error).
func pacedWait(ctx context.Context, d time.Duration, dirty <-chan struct{}) (dcs bool, err error) {
	if d <= 0 {
		return false, nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-dirty:
		return true, nil
	case <-t.C:
		return false, nil
	}
}

// sleepCtx waits d (nothing when d <= 0) or until ctx is done (its error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// pacer spaces the reconciles woken by REST probe answers: one starts at
// once when the previous ended at least as long ago as it took, else when
// that time has passed (at most maxPace). A lone answer is reconciled
// without delay; a storm of them (1,000 clusters failing over at once woke
// ~1,000 reconciles, each walking the whole fleet) gets at most half of the
// loop's time, and each reconcile covers the answers that came meanwhile.
type pacer struct {
	end  time.Time     // when the last paced reconcile ended
	took time.Duration // how long it took
}

// maxPace bounds the wait before a probe-woken reconcile.
const maxPace = 200 * time.Millisecond

// wait is how long to wait at now before the next paced reconcile.
func (p *pacer) wait(now time.Time) time.Duration {
	d := min(p.took, maxPace) - now.Sub(p.end)
	if d < 0 {
		return 0
	}
	return d
}

// done records a paced reconcile that ran from start to end.
func (p *pacer) done(start, end time.Time) { p.end, p.took = end, end.Sub(start) }

// armDue sets timer to fire when the next transition step is due by the
// clock (nextDue), or stops it when none is.
func (c *Controller) armDue(timer *time.Timer) {
	now, at := c.nextDueLocked()
	if at.IsZero() {
		timer.Stop()
		return
	}
	// A millisecond late, so that the step is due when checked.
	timer.Reset(at.Sub(now) + time.Millisecond)
}

// nextDueLocked is nextDue at the clock's now, under c.mu.
func (c *Controller) nextDueLocked() (now, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now = c.opts.Now()
	return now, c.nextDue(now)
}

// checkStale re-evaluates staleness without waiting for an event, so a lost
// etcd shows up in status (and freezes) even when nothing is written. On
// the periodic tick (tick), a write fence in place is re-asserted.
func (c *Controller) checkStale(tick bool) {
	if changed, fencing := c.staleChecks(tick); changed || fencing {
		c.reconcile(false, fencing)
	}
}

// staleChecks is checkStale's look at the view, under c.mu: whether
// staleness or a transition step changed (a reconcile is due), and whether
// a write fence is to be re-asserted.
func (c *Controller) staleChecks(tick bool) (changed, fencing bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.takeInbox()
	now := c.opts.Now()
	// (also lifts write fences whose hold has passed)
	for _, ns := range Namespaces(c.inv) {
		if (c.staleReason(ns, now) != "") != (c.staleNS[ns] != "") {
			changed = true
		}
	}
	if c.fenceExpired(now) {
		changed = true
	}
	// While a write fence lasts (an old primary, or a new leader not
	// read-write yet), every check re-asserts it (reads the fenced
	// servers' health; forces DOWN again the ones found UP, and a rising
	// new leader in any case). (Not when a transition step falls due: that
	// is when a fence is lifted, FenceHold after the last reload.)
	fencing = tick && (len(c.released) > 0 || c.anyPending())
	return changed, fencing
}

// staleReason says why the view of namespace ns cannot be trusted now, or "".
// Call with c.mu held.
func (c *Controller) staleReason(ns string, now time.Time) string {
	if _, ok := c.snaps[ns]; !ok {
		return "stale: no DCS snapshot of " + ns + " yet"
	}
	// The reason is the same for the whole outage (it is also the frozen
	// reason of the namespace's clusters, logged when it changes): since
	// when, not for how long; the watch's last error is beside it in
	// status (last_error, not_ready).
	if h := c.health[ns]; h != nil {
		st := h()
		if !st.Connected {
			msg := "stale: etcd unreachable"
			since := st.LastContact
			if since.IsZero() {
				since = c.snaps[ns].At
			}
			if !since.IsZero() {
				msg += " since " + since.UTC().Format(time.RFC3339)
			}
			return msg
		}
		if !st.LastContact.IsZero() && now.Sub(st.LastContact) > c.opts.StaleAfter {
			return fmt.Sprintf("stale: no contact with etcd since %s (stale after %s)", st.LastContact.UTC().Format(time.RFC3339), c.opts.StaleAfter)
		}
	}
	return ""
}

// ReconcileOnce computes the plan from the current view and hands the desired
// services to every target worker. force makes the workers re-apply even
// when nothing changed (resync). It never blocks on a target.
func (c *Controller) ReconcileOnce(force bool) { c.reconcile(force, false) }

// reconcile is ReconcileOnce; reassert makes the workers apply again a
// desired state with a write fence in it even when it did not change, so a
// fenced old primary that something brought UP (its checks, an operator's
// `set server`) is forced DOWN again.
func (c *Controller) reconcile(force, reassert bool) {
	c.reconciling.Store(true)
	defer c.reconciling.Store(false)
	start := c.opts.Now()
	r := c.planLocked(force)
	defer func() {
		// What this reconcile planned from, once its plan is handed to
		// the workers (dcsCaughtUp).
		c.plannedMu.Lock()
		if c.planned == nil {
			c.planned = map[string]int64{}
		}
		maps.Copy(c.planned, r.revs)
		c.plannedMu.Unlock()
	}()
	p, planEvents, decision, revision := r.plan, r.planEvents, r.decision, r.revision
	prev, prevBy, desired, byCluster := r.prev, r.prevBy, r.desired, r.byCluster
	frozen, prevFrozen, eventAt, incomplete := r.frozen, r.prevFrozen, r.eventAt, r.incomplete
	c.flushTransitions()

	for _, e := range planEvents {
		e.At, e.Decision, e.Revision = start, decision, revision
		c.addEvent(e)
	}
	c.opts.Metrics.Reconcile(force)
	var changes []target.Change
	var changed int
	if c.fullPlan {
		changes = desiredChanges(prev.services(), desired.services())
	} else {
		changes, changed = clusterChanges(p, prevBy, byCluster)
	}
	// A job planned during a burst is part of it (a probe-woken or a
	// resync reconcile takes the burst's snapshots too): it waits with it.
	at := time.Now().UnixNano()
	if changed > 0 {
		c.changedAt.Store(at)
	}
	if changed >= burstClusters {
		c.burstAt.Store(at)
	}
	burst := at-c.burstAt.Load() < int64(burstMaxWait)
	if len(changes) > 0 || prev.empty() {
		ev := Event{At: start, Kind: "plan_changed", Decision: decision, Revision: revision, Changes: changes,
			Frozen: frozen, Duration: c.opts.Now().Sub(start)}
		c.addEvent(ev)
		c.log.Info("desired services changed", append([]zap.Field{zap.Int64("decision", decision), zap.Int64("dcs_revision", revision),
			zap.Int("changes", len(changes)), zap.Duration("took", ev.Duration)}, changeFields("detail", changes)...)...)
	}
	c.logFrozen(frozen, prevFrozen)
	if eventAt.IsZero() {
		eventAt = start
	}
	if incomplete {
		// A partial view (some namespace never listed yet) is never applied:
		// for the direct driver a missing service would mean a removed one.
		c.log.Info("waiting for the first DCS snapshot of every namespace; nothing applied")
		return
	}
	if desired.empty() && prev.empty() {
		// No service of any cluster to apply yet (each frozen with nothing
		// to keep, as a leaderless cluster whose member keys contradict its
		// inventory roles): no apply of nothing.
		return
	}
	for _, w := range c.workers {
		w.submit(job{state: desired, force: force, reassert: reassert, eventAt: eventAt, decision: decision, revision: revision,
			term: c.opts.currentTerm(), burst: burst})
	}
}

// planned is what planLocked hands back to reconcile.
type planned struct {
	revs               map[string]int64 // per namespace, the revision planned from
	plan               *plan.Plan
	planEvents         []Event
	decision, revision int64
	prev, desired      *desiredState
	prevBy, byCluster  map[string][]services.Service
	frozen, prevFrozen map[string]string
	eventAt            time.Time
	incomplete         bool
}

// planLocked is the part of reconcile done under c.mu: it takes the
// inbox, tracks transitions, plans, applies the safety policies and
// records the new desired state. c.mu is released by a deferred call, so
// that a panic anywhere in it leaves c.mu free for Run to stop (and report
// it) rather than hang on it.
func (c *Controller) planLocked(force bool) planned {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.takeInbox()
	revs := make(map[string]int64, len(c.snaps))
	for ns, s := range c.snaps {
		revs[ns] = s.Revision
	}
	inv := c.inv
	now := c.opts.Now()

	// The merged DCS view, per cluster, from the namespace snapshots. (One
	// map kept between reconciles, used only while c.mu is held: a mass
	// failover makes hundreds of reconciles of 1,000 clusters.)
	if c.dcsBuf == nil {
		c.dcsBuf = make(map[string]*patroni.ClusterState, len(inv.Clusters))
	}
	dcs := c.dcsBuf
	clear(dcs)
	staleNS := map[string]string{}
	vanished := map[string]bool{}
	var staleCl map[string]bool // clusters of a stale namespace (frozen)
	var revision int64
	var eventAt time.Time
	incomplete := false
	for _, ns := range Namespaces(inv) {
		if r := c.staleReason(ns, now); r != "" {
			staleNS[ns] = r
		}
		s, ok := c.snaps[ns]
		if !ok {
			incomplete = true
			continue
		}
		if s.Revision > revision {
			revision = s.Revision
		}
		if at, ok := c.eventAt[ns]; ok && (eventAt.IsZero() || at.Before(eventAt)) {
			eventAt = at
		}
		for _, cl := range inv.Clusters {
			if cl.Namespace != ns {
				continue
			}
			if staleNS[ns] != "" {
				if staleCl == nil {
					staleCl = map[string]bool{}
				}
				staleCl[cl.Name] = true
			}
			if st := s.Clusters[cl.DCSKey]; st != nil {
				dcs[cl.Name] = st
				c.lastState[cl.Name] = st
			} else if last := c.lastState[cl.Name]; last != nil {
				// Every key of a cluster that had live state is gone
				// (etcdctl del --prefix, a restored etcd): keep the last
				// known roles, frozen and reported stale, rather than fall
				// back to the inventory's roles and undo a switchover.
				dcs[cl.Name] = last
				vanished[cl.Name] = true
			}
		}
	}
	c.eventAt = map[string]time.Time{}

	// Transitions go on while a namespace is stale: those in flight in it
	// advance from the clock and the REST probes' answers (Patroni's API,
	// not etcd) over its last DCS view, so their temporary force-UP, hold
	// DOWN and fence end as they would have (none starts from that view);
	// a stale namespace freezes nothing in the others.
	c.trackTransitions(dcs, staleCl, now)
	// Each cluster's options, read from the controller's own maps while
	// c.mu is held (no copy of them per reconcile: a mass failover makes
	// ~60 reconciles while ~1,000 clusters are in transition).
	optsOf := func(name string) plan.ClusterOptions {
		co := plan.ClusterOptions{IncludeUnknown: c.opts.IncludeUnknown, LastKnownLeader: c.lastLeaders[name]}
		if r, ok := c.released[name]; ok {
			co.Released = r.member
		}
		if p, ok := c.promoted[name]; ok {
			co.Promoted, co.PromotedConfirmed, co.PromotedPending = p.member, p.confirmed, p.pending
		}
		return co
	}
	// A cluster whose plan fails keeps its last good services (below); the
	// others go on.
	var p *plan.Plan
	var planErrs map[string]error
	if c.fullPlan {
		p, planErrs = computeIsolated(inv, dcs, c.planOptions(), c.plan)
	} else {
		// Only the clusters whose inputs changed are planned again; a
		// resync plans them all.
		p, planErrs = c.plans.compute(inv, dcs, optsOf, c.plan, force, c.log)
	}
	planEvents := c.notePlanErrors(planErrs)

	frozen := map[string]string{}
	// parts: each cluster's services, in plan order; desired is their
	// concatenation, built again only when a part changed.
	parts := make([][]services.Service, 0, len(p.Clusters))
	// by cluster: the services each cluster adds to desired (changes are
	// described only for the clusters whose services changed).
	byCluster := make(map[string][]services.Service, len(p.Clusters))
	for i, cl := range p.Clusters {
		invCl := inv.Clusters[i]
		computed := cl.Services
		reason := ""
		inventoryRoles := false // (leaderless, never led: see below)
		switch {
		case planErrs[cl.Name] != nil:
			reason = "plan failed: " + planErrs[cl.Name].Error() + "; keeping its last good services"
		case staleNS[invCl.Namespace] != "":
			reason = staleNS[invCl.Namespace]
		case vanished[cl.Name]:
			reason = reasonVanished
		case cl.Leaderless && c.lastLeaders[cl.Name] == "": // (updated below, after this check)
			// Its plan has the inventory's roles (no leader to take them
			// from): after a restart in a switchover's gap, or while
			// Patroni runs leaderless under failsafe_mode. They are
			// applied only when Patroni's member keys do not contradict
			// them (what Pigsty renders, and the only services a first
			// start with an empty HAProxy can have); else nothing is
			// applied for the cluster (its sections on the HAProxies stay
			// as they are: a target never deletes what it is not given).
			if why := rolesContradict(cl, dcs[cl.Name]); why != "" {
				frozen[cl.Name] = reasonLeaderlessContradicts + why + ")"
				continue
			}
			reason, inventoryRoles = reasonLeaderlessInventory, true
		}
		if reason != "" {
			frozen[cl.Name] = reason
		}
		if reason != "" && !inventoryRoles {
			if prev, ok := c.lastGood[cl.Name]; ok {
				// Its last good services, with the write path's temporary
				// flags as its transition now has them (see keepFrozen).
				kept := c.keepFrozen(cl.Name, prev, computed, planErrs[cl.Name] == nil)
				parts = append(parts, kept)
				byCluster[cl.Name] = kept
				continue
			}
			if staleNS[invCl.Namespace] != "" || planErrs[cl.Name] != nil {
				// Never seen a fresh view (or a good plan) of this
				// cluster: apply nothing for it.
				continue
			}
		}
		computed = c.guardEmpty(cl, computed)
		if cl.Leader != "" {
			c.lastLeaders[cl.Name] = cl.Leader
		}
		c.lastGood[cl.Name] = computed
		held := c.holdRoles(cl.Name, computed, now)
		parts = append(parts, held)
		byCluster[cl.Name] = held
	}

	desired := c.desired
	if desired == nil || !sameParts(parts, c.desiredParts) {
		desired = &desiredState{parts: parts}
	}
	prev, prevBy := c.desired, c.desiredBy
	prevFrozen := c.frozen
	c.logNewWarnings(c.plan, p)
	c.plan = p
	c.frozen = frozen
	c.staleNS = staleNS
	c.desired = desired
	c.desiredBy = byCluster
	c.desiredParts = parts
	c.decision++
	return planned{revs: revs, plan: p, planEvents: planEvents, decision: c.decision, revision: revision,
		prev: prev, desired: desired, prevBy: prevBy, byCluster: byCluster, frozen: frozen, prevFrozen: prevFrozen,
		eventAt: eventAt, incomplete: incomplete}
}

// switchoverDue reports whether a switchover request is to happen now: it
// has no scheduled time, or that time has come. An unreadable time is not
// due (the release of the leader key still fences).
func switchoverDue(fo *patroni.Failover, now time.Time) bool {
	if fo.ScheduledAt == "" {
		return true
	}
	at, err := time.Parse(time.RFC3339Nano, fo.ScheduledAt)
	return err == nil && !now.Before(at)
}

// guardEmpty keeps a service's previous servers when the new plan would leave
// it with none because DCS data is missing (a member not reported, a key that
// failed to decode, no live data at all). A backend is never emptied by
// absence of information. Call with c.mu held.
func (c *Controller) guardEmpty(cl plan.Cluster, svcs []services.Service) []services.Service {
	prev := c.lastGood[cl.Name]
	if prev == nil {
		return svcs
	}
	missing := !cl.Live
	for _, m := range cl.Members {
		if m.Known && m.PatroniRole == "" {
			missing = true
		}
	}
	if !missing {
		return svcs
	}
	var out []services.Service // a copy, made only when a service is kept
	for i, s := range svcs {
		if len(s.Servers) > 0 {
			continue
		}
		for _, p := range prev {
			if p.Name == s.Name && len(p.Servers) > 0 {
				c.log.Warn("keeping the last servers of a backend that missing DCS data would empty",
					zap.String("service", s.Name))
				if out == nil {
					out = make([]services.Service, len(svcs))
					copy(out, svcs)
				}
				out[i] = p
			}
		}
	}
	if out == nil {
		return svcs
	}
	return out
}

// The frozen reasons of a leaderless cluster that never had a leader.
const (
	reasonLeaderlessContradicts = "no leader key in DCS and no leader seen yet, and Patroni's member keys contradict its inventory roles: nothing applied for it (its services on the HAProxies left as they are) until a leader key appears ("
	reasonLeaderlessInventory   = "no leader key in DCS and no leader seen yet: its inventory roles applied (Patroni's member keys do not contradict them) until a leader key appears"
)

// rolesContradict says how the live roles of cl's members (their member
// keys in st) contradict the roles of cl's plan ("" when they do not): a member
// Patroni reports as primary (or standby leader, or promoted) that the
// plan does not serve as primary, or the plan's primary reported as a
// replica (or demoted). Members Patroni does not report, or reports with
// no role, contradict nothing.
func rolesContradict(cl plan.Cluster, st *patroni.ClusterState) string {
	if st == nil {
		return ""
	}
	var out []string
	for _, m := range cl.Members {
		live := st.Members[m.Name]
		if live == nil {
			continue
		}
		switch role := live.Role; role { // (normalised: "master" is primary)
		case "master", patroni.RolePrimary, patroni.RoleStandbyLeader, patroni.RolePromoted:
			if m.Role != "primary" {
				inv := "the inventory says " + m.InventoryRole
				if !m.Known {
					inv = "the inventory lacks it"
				}
				out = append(out, fmt.Sprintf("%s reports %s, %s", m.Name, role, inv))
			}
		case patroni.RoleReplica, patroni.RoleDemoted:
			if m.Role == "primary" {
				out = append(out, fmt.Sprintf("%s reports %s, the inventory says primary", m.Name, role))
			}
		}
	}
	return strings.Join(out, "; ")
}

// keepFrozen returns the services to hand the targets for frozen cluster
// name: its last good services prev (servers, backup flags, weights kept
// as they were), with the transient flags of the write path (ForceUp,
// ForceDown, HoldDown: a transition's force-UP of a new primary, hold
// DOWN of a new leader not read-write yet, fence of the old primary) as
// they are now. computed is this reconcile's plan of the cluster, from
// its last DCS view and the transition state as it is now (planned: the
// plan did not fail): its flags are taken. A failed plan has none: prev's
// flags are kept while the cluster has a release or promotion in effect,
// and cleared once it has none. So a frozen cluster never re-asserts a
// force-UP or a hold DOWN past the transition that set it (a stale view
// once kept a new primary forced UP, or held DOWN, for a whole etcd
// outage). Call with c.mu held.
func (c *Controller) keepFrozen(name string, prev, computed []services.Service, planned bool) []services.Service {
	var flags func(svc, server string) (up, down, hold bool, reason string, ok bool)
	if planned {
		flags = func(svc, server string) (bool, bool, bool, string, bool) {
			for i := range computed {
				if computed[i].Name != svc {
					continue
				}
				for _, sv := range computed[i].Servers {
					if sv.Name == server {
						return sv.ForceUp, sv.ForceDown, sv.HoldDown, sv.Reason, true
					}
				}
			}
			return false, false, false, "", false
		}
	} else {
		if c.released[name] != nil || c.promoted[name] != nil {
			return prev
		}
		flags = func(string, string) (bool, bool, bool, string, bool) { return false, false, false, "", false }
	}
	var out []services.Service // a copy, made only when a flag changes
	for i, s := range prev {
		var servers []services.Server
		for j, sv := range s.Servers {
			up, down, hold, reason, ok := flags(s.Name, sv.Name)
			if up == sv.ForceUp && down == sv.ForceDown && hold == sv.HoldDown {
				continue
			}
			if !ok {
				// Not in the plan (or no plan): no flag backs it any more.
				reason = sv.Reason
			}
			if out == nil {
				out = make([]services.Service, len(prev))
				copy(out, prev)
			}
			if servers == nil {
				servers = make([]services.Server, len(s.Servers))
				copy(servers, s.Servers)
				out[i].Servers = servers
			}
			servers[j].ForceUp, servers[j].ForceDown, servers[j].HoldDown, servers[j].Reason = up, down, hold, reason
		}
	}
	if out == nil {
		return prev
	}
	if last := c.desiredBy[name]; sameDesired(out, last) {
		return last // (the same slice as the last reconcile's: no change)
	}
	return out
}

// desiredChanges describes how desired differs from prev, in target.Change
// terms (as if prev were what HAProxy has).
func desiredChanges(prev, desired []services.Service) []target.Change {
	var sc changeScratch
	return sc.changes(prev, desired)
}

// changeScratch holds the backends desiredChanges builds from prev, kept
// between calls: a mass failover describes the changes of 1,000 clusters
// in each of its ~60 reconciles, and a new map of servers per service was
// ~2.4 MB of garbage a time. Diff only reads them, and its changes keep no
// pointer into them.
type changeScratch struct {
	cur      map[string]*target.Backend
	backends []*target.Backend
	settings []target.Settings
}

// changes is desiredChanges(prev, desired), in the scratch's maps.
func (sc *changeScratch) changes(prev, desired []services.Service) []target.Change {
	if sc.cur == nil {
		sc.cur = make(map[string]*target.Backend, len(prev))
	}
	clear(sc.cur)
	for len(sc.backends) < len(prev) {
		sc.backends = append(sc.backends, &target.Backend{Servers: map[string]services.Server{}})
		sc.settings = append(sc.settings, target.Settings{})
	}
	for i, s := range prev {
		sc.settings[i] = target.SettingsOf(s)
		b := sc.backends[i]
		clear(b.Servers)
		b.Name, b.HasFrontend, b.Settings = s.Name, true, &sc.settings[i]
		for _, sv := range s.Servers {
			// A server prev forced DOWN is DOWN as far as prev goes: a
			// fence that goes on is no change.
			sv.Down = sv.ForceDown
			b.Servers[sv.Name] = sv
		}
		sc.cur[s.Name] = b
	}
	out := target.Diff(sc.cur, desired)
	for i := range prev {
		clear(sc.backends[i].Servers) // (no strings kept alive between reconciles)
	}
	return out
}

// clusterChanges is desiredChanges(prev, desired) computed only for the
// clusters whose services are not the very same slice as in the previous
// reconcile (a cluster whose plan was kept hands on the same slice): Diff
// describes each service of desired on its own, in desired's order, so the
// changes of the other clusters are none.
func clusterChanges(p *plan.Plan, prev, next map[string][]services.Service) (out []target.Change, clusters int) {
	var sc changeScratch
	for _, cl := range p.Clusters {
		a, b := prev[cl.Name], next[cl.Name]
		if len(b) == 0 || sameSlice(a, b) || sameDesired(a, b) {
			// sameDesired compares every field Diff does (and more).
			continue
		}
		out = append(out, sc.changes(a, b)...)
		clusters++
	}
	return out, clusters
}

// A burst: a reconcile that changed at least burstClusters clusters' services
// (a mass failover's leader keys, written over ~150 ms in 40 etcd
// transactions, or expiring together), and any reconcile within
// burstMaxWait after it. An apply of it on a target.Batcher
// waits, at most burstMaxWait, until no reconcile changed anything for
// burstQuiet (two 50 ms debounce periods) and none is running
// (burstGoing), and then applies the newest desired state: the whole
// burst in one apply, rather than its first half now and the rest after
// seconds of API requests. A failover storm spread over Patroni's TTL
// (each leader key expires on its own) changes a few clusters per
// reconcile, and a switchover one: they never wait. Snapshots that change
// nothing (a fleet's Patroni members rewrite their keys every loop_wait:
// ~300 a second at 3,000 members) do not keep a burst waiting. Under
// load a burst's reconciles take up to 0.2 s each: the benchmark's
// mass failover, written in 150 ms, was reconciled whole 0.6 s after its
// first event (300 ms was too short a bound).
const (
	burstClusters = 32
	burstQuiet    = 100 * time.Millisecond
	burstMaxWait  = time.Second
)

// burstGoing reports whether a burst may still be changing the plan: a
// reconcile changed some cluster within burstQuiet, or one is running
// (under load one can take longer than that).
func (c *Controller) burstGoing() bool {
	return c.reconciling.Load() || time.Now().UnixNano()-c.changedAt.Load() < int64(burstQuiet)
}

// sameParts reports whether a and b are the same slices in the same order
// (the same services: slices handed on are never modified).
func sameParts(a, b [][]services.Service) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameSlice(a[i], b[i]) {
			return false
		}
	}
	return true
}

// sameSlice reports whether a and b are the very same slice.
func sameSlice(a, b []services.Service) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// concatParts is the parts one after the other; nil when there are no
// services (nothing to apply yet: the next plan is reported as a first one).
func concatParts(parts [][]services.Service) []services.Service {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n == 0 {
		return nil
	}
	out := make([]services.Service, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// sameDesired reports whether a and b ask HAProxy for the same thing (the
// human reasons may differ).
func sameDesired(a, b []services.Service) bool {
	if len(a) != len(b) {
		return false
	}
	if sameSlice(a, b) {
		return true
	}
	for i := range a {
		x, y := a[i], b[i]
		if target.SettingsOf(x) != target.SettingsOf(y) || x.Name != y.Name || len(x.Servers) != len(y.Servers) {
			return false
		}
		for j := range x.Servers {
			p, q := x.Servers[j], y.Servers[j]
			p.Reason, q.Reason = "", ""
			if p != q {
				return false
			}
		}
	}
	return true
}

// anyPending reports whether some new leader is held DOWN until it is
// read-write (promotion.pending). Call with c.mu held.
func (c *Controller) anyPending() bool {
	for _, p := range c.promoted {
		if p.pending {
			return true
		}
	}
	return false
}

// logFrozen logs the clusters newly frozen, one line per reason, and the
// clusters no longer frozen, one line: a stale namespace freezes every
// cluster in it, and a line per cluster was 1,000 warnings at once when
// etcd went away (1,000 more when it came back). A line names the first
// logChangesMax clusters and counts them all.
func (c *Controller) logFrozen(frozen, prevFrozen map[string]string) {
	byReason := map[string][]string{}
	for cl, r := range frozen {
		if prevFrozen[cl] != r {
			byReason[r] = append(byReason[r], cl)
		}
	}
	reasons := make([]string, 0, len(byReason))
	for r := range byReason {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		c.log.Warn("clusters frozen", append([]zap.Field{zap.String("reason", r)}, clusterFields(byReason[r])...)...)
	}
	var thawed []string
	for cl := range prevFrozen {
		if frozen[cl] == "" {
			thawed = append(thawed, cl)
		}
	}
	if len(thawed) > 0 {
		c.log.Info("clusters no longer frozen", clusterFields(thawed)...)
	}
}

// clusterFields are the log fields of a list of clusters (sorted here):
// the first logChangesMax, and how many in all.
func clusterFields(names []string) []zap.Field {
	sort.Strings(names)
	listed := names
	if len(listed) > logChangesMax {
		listed = listed[:logChangesMax]
	}
	return []zap.Field{zap.Strings("clusters", listed), zap.Int("clusters_total", len(names))}
}

package controller

import (
	"maps"
	"reflect"
	"sort"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// computeIsolated computes the plan of every cluster of inv so that one
// cluster whose plan fails (a selector on a live field that errors on some
// DCS state) never blocks the others: it returns a plan with one entry per
// inventory cluster, in order, and the error of each cluster that failed.
// A failed cluster's entry is prev's entry for it when there is one (its
// last good plan), else a stub with its name and namespace; the caller keeps
// that cluster's last good services.
func computeIsolated(inv *topology.Inventory, dcs map[string]*patroni.ClusterState, opts plan.Options,
	prev *plan.Plan) (*plan.Plan, map[string]error) {
	p, err := plan.Compute(inv, dcs, opts)
	if err == nil {
		return p, nil
	}
	// Some cluster failed: compute them one by one to find which.
	last := map[string]plan.Cluster{}
	if prev != nil {
		for _, cl := range prev.Clusters {
			last[cl.Name] = cl
		}
	}
	errs := map[string]error{}
	p = &plan.Plan{Clusters: make([]plan.Cluster, 0, len(inv.Clusters))}
	for _, cl := range inv.Clusters {
		one := &topology.Inventory{File: inv.File, Clusters: []*topology.Cluster{cl}}
		cp, err := plan.Compute(one, dcs, opts)
		if err == nil && len(cp.Clusters) == 1 {
			p.Clusters = append(p.Clusters, cp.Clusters[0])
			continue
		}
		if err == nil {
			err = errUnexpectedPlan
		}
		errs[cl.Name] = err
		stub, ok := last[cl.Name]
		if !ok {
			stub = plan.Cluster{Name: cl.Name, Namespace: cl.Namespace}
		}
		p.Clusters = append(p.Clusters, stub)
	}
	return p, errs
}

// planEntry is one cluster's plan and the inputs it was computed from.
type planEntry struct {
	cl   *topology.Cluster // the inventory's (a reloaded inventory has new ones)
	file string
	st   *patroni.ClusterState // decoded states are never modified (patroni.Snapshot)
	opts plan.ClusterOptions
	res  plan.Cluster
	err  error
	gen  uint64 // the last compute that used it
}

// planCache keeps each cluster's plan while its inputs stay the same, so a
// DCS event re-plans only the clusters whose keys (or transition state)
// changed. plan.ComputeCluster is pure and depends only on these inputs,
// so the result is the one a full plan gives (TestIncrementalPlanIsFullPlan).
type planCache struct {
	entries map[string]*planEntry // by cluster name
	// computed counts the clusters planned by the last compute (tests).
	computed int
	gen      uint64 // counts computes
	// checkEvery: a resync plans from scratch the clusters i of the
	// inventory with i % checkEvery == checks % checkEvery, so every
	// cluster is checked once per checkEvery resyncs (0: checkShare).
	checkEvery int
	checks     int // counts resyncs
}

// checkShare: a resync plans a tenth of the clusters again from scratch,
// each cluster once per 10 resyncs (5 minutes at the default 30 s). All of
// them at every resync was ~14 MB of garbage every 30 s at 1,000 clusters:
// the idle controller's RSS rose from ~82 to ~101 MB at each resync and
// stayed there until the releaser's next quiet look.
const checkShare = 10

// compute is computeIsolated, planning only the clusters whose inputs
// changed since the last call; full (the periodic resync) also plans a
// rotating share of the others from scratch (checkEvery): a safety net that
// does not trust the cache. dcs must not be nil; optsOf gives a cluster's
// options (plan.ClusterOptionsOf of the reconcile's options).
func (pc *planCache) compute(inv *topology.Inventory, dcs map[string]*patroni.ClusterState, optsOf func(cluster string) plan.ClusterOptions,
	prev *plan.Plan, full bool, log *zap.Logger) (*plan.Plan, map[string]error) {
	if pc.entries == nil {
		pc.entries = make(map[string]*planEntry, len(inv.Clusters))
	}
	every := pc.checkEvery
	if every <= 0 {
		every = checkShare
	}
	turn := -1 // no cluster is checked
	if full {
		turn = pc.checks % every
		pc.checks++
	}
	// The entries are updated in place (not a new map per reconcile); gen
	// marks those of this inventory, the others are dropped at the end.
	pc.gen++
	p := &plan.Plan{Clusters: make([]plan.Cluster, 0, len(inv.Clusters))}
	var errs map[string]error
	var last map[string]int
	pc.computed = 0
	for i, cl := range inv.Clusters {
		st := dcs[cl.Name]
		co := optsOf(cl.Name)
		e := pc.entries[cl.Name]
		changed := e == nil || e.cl != cl || e.file != inv.File || e.st != st || e.opts != co
		check := i%every == turn // planned from scratch to check the cache
		if changed || check {
			res, err := plan.ComputeCluster(inv.File, cl, st, true, co)
			pc.computed++
			switch {
			case changed:
				if e != nil && e.err == nil && err == nil && sameServices(e.res.Services, res.Services) {
					// New inputs, the same services (a member key
					// rewritten with what the leader key already said):
					// the cached ones are kept, so the desired state and
					// the targets' layouts keep theirs, and the fresh ones
					// are garbage at once instead of a second copy kept
					// alive by whatever still holds the first.
					res.Services = e.res.Services
				}
				e = &planEntry{cl: cl, file: inv.File, st: st, opts: co, res: res, err: err}
				pc.entries[cl.Name] = e
			case !samePlanResult(e.res, e.err, res, err):
				// The cache would have kept a result its inputs no longer
				// give: a decoded state was modified in place. Never expected;
				// the fresh result is used.
				log.Error("cached plan of a cluster differed from a fresh one; using the fresh one", zap.String("cluster", cl.Name))
				e.res, e.err = res, err
			}
			// Else the resync's fresh result equals the cached one, which
			// is kept: the fresh one is garbage at once, and the plan, the
			// desired state and the targets' layouts keep the objects they
			// had (a resync replacing them all every 30 s scattered the
			// long-lived plan among the garbage of the idle fleet's heap,
			// and handed every target a new desired state to lay out).
		}
		e.gen = pc.gen
		if e.err == nil {
			p.Clusters = append(p.Clusters, e.res)
			continue
		}
		if errs == nil {
			errs = map[string]error{}
		}
		errs[cl.Name] = e.err
		if last == nil && prev != nil {
			last = make(map[string]int, len(prev.Clusters))
			for i, pcl := range prev.Clusters {
				last[pcl.Name] = i
			}
		}
		stub := plan.Cluster{Name: cl.Name, Namespace: cl.Namespace}
		if i, ok := last[cl.Name]; ok {
			stub = prev.Clusters[i]
		}
		p.Clusters = append(p.Clusters, stub)
	}
	if len(pc.entries) > len(inv.Clusters) {
		for name, e := range pc.entries {
			if e.gen != pc.gen {
				delete(pc.entries, name)
			}
		}
	}
	return p, errs
}

// sameServices reports whether a and b are services.Equal one by one.
func sameServices(a, b []services.Service) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !services.Equal(&a[i], &b[i]) {
			return false
		}
	}
	return true
}

// samePlanResult reports whether two results of one cluster's plan are the same.
func samePlanResult(a plan.Cluster, aerr error, b plan.Cluster, berr error) bool {
	if (aerr == nil) != (berr == nil) || aerr != nil && aerr.Error() != berr.Error() {
		return false
	}
	return reflect.DeepEqual(a, b)
}

type planError string

func (e planError) Error() string { return string(e) }

const errUnexpectedPlan = planError("plan of one cluster did not return one cluster")

// notePlanErrors records the clusters whose plan failed in this reconcile,
// logs each new or changed failure and each recovery, and returns the
// history events to add (At, Decision and Revision are filled by the
// caller). Call with c.mu held.
func (c *Controller) notePlanErrors(errs map[string]error) []Event {
	now := make(map[string]string, len(errs))
	var evs []Event
	for cl, err := range errs {
		now[cl] = err.Error()
		if c.planErrs[cl] != err.Error() {
			c.log.Error("plan of one cluster failed; keeping its last good services, the others go on",
				zap.String("cluster", cl), zap.Error(err))
			evs = append(evs, Event{Kind: "plan_error", Cluster: cl, Error: err.Error()})
		}
	}
	for cl := range c.planErrs {
		if now[cl] == "" {
			c.log.Info("plan of the cluster computes again", zap.String("cluster", cl))
		}
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].Cluster < evs[j].Cluster })
	c.planErrs = now
	return evs
}

// planOptions is what reconcile's optsOf gives each cluster, as the maps
// of plan.Options (for the full plan, c.fullPlan, that tests compare the
// cached one with). Call with c.mu held.
func (c *Controller) planOptions() plan.Options {
	o := plan.Options{IncludeUnknown: c.opts.IncludeUnknown, LastKnownLeaders: maps.Clone(c.lastLeaders),
		Released: map[string]string{}, Promoted: map[string]string{},
		PromotedConfirmed: map[string]bool{}, PromotedPending: map[string]bool{}}
	for k, v := range c.released {
		o.Released[k] = v.member
	}
	for k, v := range c.promoted {
		o.Promoted[k], o.PromotedConfirmed[k], o.PromotedPending[k] = v.member, v.confirmed, v.pending
	}
	return o
}

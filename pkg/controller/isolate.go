package controller

import (
	"sort"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/plan"
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

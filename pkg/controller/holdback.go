package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// HeldCluster is a cluster whose services one HAProxy refused (a config
// `haproxy -c` rejects, a bind that fails, an API 400): its last good state
// stays on that HAProxy while the other clusters' changes are applied, and
// it is retried with backoff, or at once when its desired services change.
type HeldCluster struct {
	Cluster  string    `json:"cluster"`
	Services []string  `json:"services"`
	Error    string    `json:"error"`
	Since    time.Time `json:"since"`
	Failures int       `json:"failures"`
	NextTry  time.Time `json:"next_try"`
	desired  []services.Service
}

// termOK reports whether work planned under term may still be written: this
// instance leads, in that same term. Without election it is always true.
func (o *Options) termOK(term int64) bool {
	if o.Term != nil {
		t, ok := o.Term()
		return ok && t == term
	}
	return o.Gate == nil || o.Gate()
}

// leads reports whether this instance applies changes now (elected, or
// no election).
func (o *Options) leads() bool {
	if o.Term != nil {
		_, ok := o.Term()
		return ok
	}
	return o.Gate == nil || o.Gate()
}

// currentTerm is the term a reconcile plans under (0 without election).
func (o *Options) currentTerm() int64 {
	if o.Term == nil {
		return 0
	}
	t, _ := o.Term()
	return t
}

// apply is one Apply of desired, with the lease re-checked right before
// it and (through the context) right before every write inside it.
func (w *worker) apply(ctx context.Context, j *job, desired []services.Service) (target.Result, error) {
	if !w.opts.termOK(j.term) {
		return target.Result{}, target.ErrNotLeader
	}
	ctx = target.WithWriteCheck(ctx, func() error {
		if !w.opts.termOK(j.term) {
			return target.ErrNotLeader
		}
		return nil
	})
	return w.t.Apply(ctx, desired)
}

// clusterServices returns the services of cluster in desired.
func clusterServices(desired []services.Service, cluster string) []services.Service {
	var out []services.Service
	for _, s := range desired {
		if s.Cluster == cluster {
			out = append(out, s)
		}
	}
	return out
}

// keepClusters returns the services of desired whose cluster keep accepts.
func keepClusters(desired []services.Service, keep func(string) bool) []services.Service {
	out := make([]services.Service, 0, len(desired))
	for _, s := range desired {
		if keep(s.Cluster) {
			out = append(out, s)
		}
	}
	return out
}

// clusterOrder lists the clusters of desired in order of appearance.
func clusterOrder(desired []services.Service) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range desired {
		if !seen[s.Cluster] {
			seen[s.Cluster] = true
			out = append(out, s.Cluster)
		}
	}
	return out
}

// applyIsolated applies desired so that one cluster the HAProxy refuses
// never blocks the others. Clusters held back earlier are left out (their
// last good state stays) until their retry time, or until their desired
// services change. When the HAProxy refuses the change set (a rejection,
// not an unreachable HAProxy), the clusters are bisected: each half is
// applied with the clusters already known good, a refused single cluster
// is held back. When every cluster is refused on its own, the problem is
// not one cluster's and the error is returned as is.
func (w *worker) applyIsolated(ctx context.Context, j *job) (target.Result, error) {
	now := w.opts.Now()
	excluded := map[string]bool{}
	var retrying []string
	func() {
		w.mu.Lock()
		defer w.mu.Unlock() // (a panic here must not leave w.mu held: see Controller.mu)
		for name, h := range w.held {
			cur := clusterServices(j.desired, name)
			switch {
			case len(cur) == 0:
				delete(w.held, name) // gone from this target
			case now.Before(h.NextTry) && sameDesired(cur, h.desired):
				excluded[name] = true
			default:
				retrying = append(retrying, name)
			}
		}
	}()
	sort.Strings(retrying)

	desired := j.desired // (a copy only when some cluster is left out)
	if len(excluded) > 0 {
		desired = keepClusters(j.desired, func(c string) bool { return !excluded[c] })
	}
	res, err := w.apply(ctx, j, desired)
	if err == nil {
		w.released(retrying)
		w.syncHeldStatus()
		return res, nil
	}
	if !target.IsRejected(err) {
		return res, err
	}
	clusters := clusterOrder(desired)
	if len(clusters) <= 1 {
		return res, err
	}

	// Bisect: find the clusters the HAProxy refuses on their own.
	var good []string
	bad := map[string]error{}
	var acc target.Result
	var abort error
	var split func(group []string, refused error)
	// try applies group on top of the clusters found good. failed is the
	// error of an apply of exactly that set when one was already refused
	// (the first half of a refused set applied cleanly, so the second half
	// with it is the refused set again): it is not sent again, which on a
	// Data Plane API saves a commit and two reloads per refused cluster.
	var try func(group []string, failed error)
	try = func(group []string, failed error) {
		if abort != nil || len(group) == 0 {
			return
		}
		e := failed
		if e == nil {
			set := map[string]bool{}
			for _, c := range append(append([]string(nil), good...), group...) {
				set[c] = true
			}
			var r target.Result
			r, e = w.apply(ctx, j, keepClusters(desired, func(c string) bool { return set[c] }))
			if e == nil {
				good = append(good, group...)
				acc = mergeResults(acc, r)
				return
			}
		}
		switch {
		case !target.IsRejected(e):
			abort = e
		case len(group) == 1:
			bad[group[0]] = e
		default:
			split(group, e)
		}
	}
	split = func(group []string, e error) {
		h := len(group) / 2
		goodBefore := len(good)
		try(group[:h], nil)
		if abort == nil && len(good)-goodBefore == h {
			try(group[h:], e) // the first half is good: the rest is what was refused
			return
		}
		try(group[h:], nil)
	}
	split(clusters, err)
	if abort != nil {
		return acc, abort
	}
	if len(bad) == len(clusters) {
		return res, err // not one cluster's problem
	}
	w.holdBack(j.desired, bad, now)
	var goodSet []string
	for _, c := range clusters {
		if bad[c] == nil {
			goodSet = append(goodSet, c)
		}
	}
	w.released(intersect(retrying, goodSet))
	w.syncHeldStatus()
	return acc, nil
}

func intersect(a, b []string) []string {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if in[x] {
			out = append(out, x)
		}
	}
	return out
}

// holdBack records the refused clusters, with backoff. heldEvent is told
// after w.mu is released: it takes c.mu, and a reconcile holding c.mu asks
// the workers whether they are quiet (w.mu): see the lock order at
// Controller.mu.
func (w *worker) holdBack(desired []services.Service, bad map[string]error, now time.Time) {
	type heldNote struct {
		cluster string
		err     error
	}
	var notes []heldNote
	// (Runs after the deferred unlock below: deferred calls run last in,
	// first out.)
	defer func() {
		if w.heldEvent == nil {
			return
		}
		for _, n := range notes {
			w.heldEvent(w.t.Name(), n.cluster, n.err)
		}
	}()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.held == nil {
		w.held = map[string]*HeldCluster{}
	}
	names := make([]string, 0, len(bad))
	for c := range bad {
		names = append(names, c)
	}
	sort.Strings(names)
	for _, c := range names {
		e := bad[c]
		svcs := clusterServices(desired, c)
		h := w.held[c]
		if h == nil {
			h = &HeldCluster{Cluster: c, Since: now}
			w.held[c] = h
		}
		h.Failures++
		h.Error = e.Error()
		h.desired = svcs
		h.Services = h.Services[:0]
		for _, s := range svcs {
			h.Services = append(h.Services, s.Name)
		}
		h.NextTry = now.Add(backoff(w.opts.RetryMin, w.opts.RetryMax, h.Failures))
		w.log.Error("cluster held back on this HAProxy: its new services are refused; its last good state is kept, the other clusters applied",
			zap.String("cluster", c), zap.Strings("services", h.Services), zap.Error(e),
			zap.Int("failures", h.Failures), zap.Time("next_try", h.NextTry))
		notes = append(notes, heldNote{c, fmt.Errorf("cluster %s (services %s) held back: %w", c, strings.Join(h.Services, ", "), e)})
	}
}

// released forgets held clusters that were just applied.
func (w *worker) released(clusters []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range clusters {
		if h := w.held[c]; h != nil {
			w.log.Info("held-back cluster applied", zap.String("cluster", c), zap.Int("after_failures", h.Failures))
			delete(w.held, c)
		}
	}
}

// syncHeldStatus copies the held clusters into the status.
func (w *worker) syncHeldStatus() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.status.HeldBack = nil
	for _, h := range w.held {
		hc := *h
		hc.Services = append([]string(nil), h.Services...)
		hc.desired = nil
		w.status.HeldBack = append(w.status.HeldBack, hc)
	}
	sort.Slice(w.status.HeldBack, func(i, j int) bool { return w.status.HeldBack[i].Cluster < w.status.HeldBack[j].Cluster })
}

// heldRetryIn is how long until the first held cluster is due (0: none).
func (w *worker) heldRetryIn() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var next time.Time
	for _, h := range w.held {
		if next.IsZero() || h.NextTry.Before(next) {
			next = h.NextTry
		}
	}
	if next.IsZero() {
		return 0
	}
	return max(next.Sub(w.opts.Now()), time.Millisecond)
}

// mergeResults adds what a later partial apply did to acc.
func mergeResults(acc, r target.Result) target.Result {
	acc.Changes = append(acc.Changes, r.Changes...)
	if r.Reloaded {
		acc.Reloaded = true
		acc.ReloadID = r.ReloadID
		acc.ReloadResult = r.ReloadResult
	}
	if r.Version != 0 {
		acc.Version = r.Version
	}
	if r.StatePreserved != nil {
		acc.StatePreserved = r.StatePreserved
	}
	acc.Duration += r.Duration
	// (Each apply covers every cluster found good so far: the last one's
	// deferred changes are what is left.)
	acc.Deferred, acc.RetryIn = r.Deferred, r.RetryIn
	return acc
}

// isDropped reports an apply given up because leadership moved.
func isDropped(err error) bool { return errors.Is(err, target.ErrNotLeader) }

// recordHeld is told by a worker about a cluster it held back.
func (c *Controller) recordHeld(targetName, cluster string, err error) {
	c.opts.Metrics.ApplyFailed(targetName, err)
	c.addEvent(Event{At: c.opts.Now(), Kind: "held_back", Target: targetName, Cluster: cluster, Error: err.Error()})
}

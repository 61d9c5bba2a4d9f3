package controller

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// Metrics receives the controller's counters. Implementations must be safe
// for concurrent use; pkg/metrics provides the Prometheus one.
type Metrics interface {
	DCSSnapshot(namespace string)
	Reconcile(forced bool)
	Applied(target string, changes []target.Change, reloaded bool, convergence time.Duration)
	ApplyFailed(target string, err error)
}

type nopMetrics struct{}

func (nopMetrics) DCSSnapshot(string)                                   {}
func (nopMetrics) Reconcile(bool)                                       {}
func (nopMetrics) Applied(string, []target.Change, bool, time.Duration) {}
func (nopMetrics) ApplyFailed(string, error)                            {}

// Event is one decision of the controller, kept in the status history.
type Event struct {
	At       time.Time         `json:"at"`
	Kind     string            `json:"kind"` // plan_changed, applied, apply_failed, held_back, plan_error, transition
	Decision int64             `json:"decision,omitempty"`
	Revision int64             `json:"dcs_revision,omitempty"`
	Target   string            `json:"target,omitempty"`
	Cluster  string            `json:"cluster,omitempty"`
	Changes  []target.Change   `json:"changes,omitempty"`
	Frozen   map[string]string `json:"frozen,omitempty"`
	Reloaded bool              `json:"reloaded,omitempty"`
	ReloadID string            `json:"reload_id,omitempty"`
	Error    string            `json:"error,omitempty"`
	// Duration is how long the decision or the apply took.
	Duration time.Duration `json:"duration_ns"`
	// Convergence is the time from the first DCS event to the apply's end.
	Convergence time.Duration `json:"convergence_ns,omitempty"`
	// Transition is the timeline of a switchover or failover (kind
	// transition).
	Transition *TransitionTimeline `json:"transition,omitempty"`
}

func (c *Controller) addEvent(e Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.history = append(c.history, e)
	// Trimmed when twice as long as kept, not at every event: a mass
	// failover ends 1,000 transitions, one event each, and copying the
	// whole history for each made ~6 MB of garbage per second.
	if len(c.history) >= 2*c.opts.HistorySize {
		c.history = append([]Event(nil), c.lastEvents()...)
	}
}

// lastEvents is the history status shows: the last HistorySize events.
// Call with c.mu held.
func (c *Controller) lastEvents() []Event {
	if over := len(c.history) - c.opts.HistorySize; over > 0 {
		return c.history[over:]
	}
	return c.history
}

// recordApply is called by the workers after every Apply.
func (c *Controller) recordApply(name string, j job, res target.Result, err error, dur time.Duration) {
	if err != nil {
		c.opts.Metrics.ApplyFailed(name, err)
		c.addEvent(Event{At: c.opts.Now(), Kind: "apply_failed", Decision: j.decision, Revision: j.revision,
			Target: name, Error: err.Error(), Duration: dur})
		return
	}
	if len(res.Changes) == 0 && !res.Reloaded {
		return
	}
	// (A reload without changes is a repair: the file was right, the
	// running HAProxy did not serve it; it is recorded as any apply.)
	c.noteApplied(res, c.opts.Now())
	conv := c.opts.Now().Sub(j.eventAt)
	c.opts.Metrics.Applied(name, res.Changes, res.Reloaded, conv)
	c.addEvent(Event{At: c.opts.Now(), Kind: "applied", Decision: j.decision, Revision: j.revision, Target: name,
		Changes: res.Changes, Reloaded: res.Reloaded, ReloadID: res.ReloadID, Duration: dur, Convergence: conv})
	fields := []zap.Field{zap.String("target", name), zap.Int64("decision", j.decision),
		zap.Int64("dcs_revision", j.revision), zap.Bool("reloaded", res.Reloaded), zap.String("reload_id", res.ReloadID),
		zap.Duration("took", dur), zap.Duration("convergence", conv)}
	if !res.MovedAt.IsZero() {
		// The changes that move traffic were all made by then; the rest
		// (a crashed member's twins, DOWN by HAProxy's checks) after.
		fields = append(fields, zap.Time("traffic_moved_at", res.MovedAt))
	}
	c.log.Info("applied", append(fields, changeFields("changes", res.Changes)...)...)
}

// logChangesMax is how many changes one log line lists: a 1,000-cluster
// mass failover's plan and apply are ~5,000 changes each, 0.5-0.65 MB of
// JSON on one line, which log shippers split or drop (Docker's json-file
// splits lines at 16 KB, journald at 48 KB by default). The whole list is in
// the status history (`controller status`, /status).
const logChangesMax = 32

// changeFields are the log fields of a list of changes: key lists the
// first logChangesMax; changes_total and changes_by_kind (a count per kind)
// describe all of them, changes_omitted says how many key leaves out.
func changeFields(key string, changes []target.Change) []zap.Field {
	byKind := map[string]int{}
	for _, ch := range changes {
		byKind[ch.Kind]++
	}
	listed := changes
	if len(listed) > logChangesMax {
		listed = listed[:logChangesMax]
	}
	fs := []zap.Field{zap.Any(key, listed), zap.Int("changes_total", len(changes)), zap.Any("changes_by_kind", byKind)}
	if n := len(changes) - len(listed); n > 0 {
		fs = append(fs, zap.Int("changes_omitted", n))
	}
	return fs
}

// NamespaceStatus is the health of the DCS view of one namespace.
type NamespaceStatus struct {
	Namespace  string    `json:"namespace"`
	Revision   int64     `json:"revision"`
	SnapshotAt time.Time `json:"snapshot_at,omitempty"`
	// AgeSeconds is the time since the view was last confirmed (last contact with etcd).
	AgeSeconds float64 `json:"age_seconds"`
	Connected  bool    `json:"connected"`
	Stale      string  `json:"stale,omitempty"`
	LastError  string  `json:"last_error,omitempty"`
	Restarts   int     `json:"watch_restarts"`
	Resyncs    int     `json:"resyncs"`
}

// ClusterStatus is one cluster in the status document.
type ClusterStatus struct {
	plan.Cluster
	Revision int64 `json:"dcs_revision"`
	// Frozen says why this cluster's services are held as they were.
	Frozen string `json:"frozen,omitempty"`
	// PlanError says why this cluster's plan failed (its last good
	// services are kept; the other clusters go on).
	PlanError string `json:"plan_error,omitempty"`
	// Transition, while a switchover or failover of the cluster is
	// followed, says which (cause, since when, from and to which member);
	// its timeline is a transition event in the history once it ends.
	Transition string `json:"transition,omitempty"`
}

// Status is the document GET /status serves.
type Status struct {
	Now      time.Time     `json:"now"`
	Ready    bool          `json:"ready"`
	NotReady []string      `json:"not_ready,omitempty"`
	DryRun   bool          `json:"dry_run,omitempty"`
	Leader   *LeaderStatus `json:"controller_leader,omitempty"`
	// TransitionsInFlight is how many clusters' switchovers or failovers
	// are being followed now (each cluster's transition says which).
	TransitionsInFlight int               `json:"transitions_in_flight"`
	Inventory           string            `json:"inventory"`
	DCS                 []NamespaceStatus `json:"dcs"`
	Clusters            []ClusterStatus   `json:"clusters"`
	Targets             []TargetStatus    `json:"targets"`
	History             []Event           `json:"history"`
}

// LeaderStatus says which controller instance applies changes (HA).
type LeaderStatus struct {
	Identity string `json:"identity"`
	IsLeader bool   `json:"is_leader"`
	Leader   string `json:"leader"`
	// LeaderlessSeconds, when set, is how long this instance has seen no
	// leader (none elected, or etcd unanswered), past the limit after which
	// it is not ready: no instance may be applying changes.
	LeaderlessSeconds float64 `json:"leaderless_seconds,omitempty"`
}

// Status returns the current status document.
func (c *Controller) Status() Status { return c.status(true) }

// status is Status; without full, it leaves out the per-cluster list and
// the history (what /readyz needs is Ready and NotReady, and it is polled:
// 1,000 clusters' status per poll was ~3 % of a mass failover's garbage).
func (c *Controller) status(full bool) Status {
	var leader *LeaderStatus
	if c.opts.LeaderInfo != nil {
		leader = c.opts.LeaderInfo() // outside c.mu: it may be slow
	}
	st := c.statusLocked(full, leader)
	if leader != nil && leader.LeaderlessSeconds > 0 {
		st.NotReady = append(st.NotReady, fmt.Sprintf("controller election: no leader seen for %.0fs", leader.LeaderlessSeconds))
	}

	leads := c.opts.leads()
	for _, w := range c.workers {
		ts := w.snapshot()
		switch {
		case !leads && ts.State != "standby":
			// This instance stopped leading and no job told the worker
			// yet: another instance drives the target now.
			ts.State, ts.InSync = "standby", false
			ts.HeldBack, ts.Deferred, ts.DeferredUntil, ts.Failures = nil, 0, time.Time{}, 0
		case leads && ts.State == "standby":
			// Leading again: nothing is re-checked until the worker's
			// next apply (the election's change triggers a reconcile).
			ts.State = "pending"
		}
		if !ts.InSync && ts.State != "standby" && !(c.opts.DryRun && ts.LastError == "") {
			st.NotReady = append(st.NotReady, ts.Name+": "+ts.State)
		}
		for _, h := range ts.HeldBack {
			st.NotReady = append(st.NotReady, ts.Name+": cluster "+h.Cluster+" held back: "+h.Error)
		}
		st.Targets = append(st.Targets, ts)
	}
	if f := c.Failed(); f != "" {
		st.NotReady = append(st.NotReady, "controller stopped: "+f)
	}
	st.Ready = len(st.NotReady) == 0
	return st
}

// statusLocked is the part of status read under c.mu (released by a
// deferred call, so that a panic in it cannot leave c.mu held).
func (c *Controller) statusLocked(full bool, leader *LeaderStatus) (st Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.takeInbox()
	now := c.opts.Now()
	st = Status{Now: now, DryRun: c.opts.DryRun, Inventory: c.inv.File, Leader: leader}
	for _, ns := range Namespaces(c.inv) {
		n := NamespaceStatus{Namespace: ns, Stale: c.staleReason(ns, now)}
		if s, ok := c.snaps[ns]; ok {
			n.Revision = s.Revision
			n.SnapshotAt = s.At
			n.AgeSeconds = now.Sub(s.At).Seconds()
			n.Connected = true
		}
		if h := c.health[ns]; h != nil {
			ws := h()
			n.Connected = ws.Connected
			n.LastError = ws.LastError
			n.Restarts = ws.Restarts
			n.Resyncs = ws.Resyncs
			if !ws.LastContact.IsZero() {
				n.AgeSeconds = now.Sub(ws.LastContact).Seconds()
			}
		}
		if n.Stale != "" {
			r := ns + ": " + n.Stale
			if n.LastError != "" {
				r += " (" + n.LastError + ")"
			}
			st.NotReady = append(st.NotReady, r)
		}
		st.DCS = append(st.DCS, n)
	}
	st.TransitionsInFlight = len(c.tx.active)
	if c.plan != nil {
		if full && len(c.plan.Clusters) > 0 {
			st.Clusters = make([]ClusterStatus, 0, len(c.plan.Clusters))
		}
		for _, cl := range c.plan.Clusters {
			if c.frozen[cl.Name] == reasonVanished {
				st.NotReady = append(st.NotReady, cl.Name+": "+reasonVanished)
			}
			if e := c.planErrs[cl.Name]; e != "" {
				st.NotReady = append(st.NotReady, "cluster "+cl.Name+": plan failed: "+e)
			}
			if !full {
				continue
			}
			cs := ClusterStatus{Cluster: cl, Frozen: c.frozen[cl.Name], PlanError: c.planErrs[cl.Name]}
			if t := c.tx.active[cl.Name]; t != nil {
				cs.Transition = t.brief()
			}
			if s, ok := c.snaps[cl.Namespace]; ok {
				if cst := s.Clusters[cl.DCSKey]; cst != nil {
					cs.Revision = cst.Revision
				}
			}
			st.Clusters = append(st.Clusters, cs)
		}
	} else {
		st.NotReady = append(st.NotReady, "no plan computed yet")
	}
	if full {
		st.History = append([]Event(nil), c.lastEvents()...)
	}
	return st
}

// StatusOf is Status narrowed to the named clusters: Clusters holds only
// them (in plan order), and History only the events about them, an
// event's changes cut to their backends (an apply's event names no
// cluster: it is kept when one of its changes is theirs). The rest (DCS,
// targets, readiness) is the whole controller's. At 1,000 clusters the
// whole document is ~8 MB; an operator asking about one cluster gets a few
// KB. An error names each cluster the plan does not have.
func (c *Controller) StatusOf(names []string) (Status, error) {
	st := c.status(true)
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	backends := map[string]bool{}
	found := map[string]bool{}
	var kept []ClusterStatus
	for _, cs := range st.Clusters {
		if !want[cs.Name] {
			continue
		}
		delete(want, cs.Name)
		found[cs.Name] = true
		kept = append(kept, cs)
		for _, s := range cs.Services {
			backends[s.Name] = true
		}
	}
	if len(want) > 0 {
		missing := make([]string, 0, len(want))
		for n := range want {
			missing = append(missing, n)
		}
		sort.Strings(missing)
		return Status{}, fmt.Errorf("no cluster %s in the plan (%d clusters)", strings.Join(missing, ", "), len(st.Clusters))
	}
	st.Clusters = kept
	var history []Event
	for _, ev := range st.History {
		if ev.Cluster != "" {
			if found[ev.Cluster] {
				history = append(history, ev)
			}
			continue
		}
		var changes []target.Change
		for _, ch := range ev.Changes {
			if backends[ch.Backend] {
				changes = append(changes, ch)
			}
		}
		if len(changes) > 0 {
			ev.Changes = changes
			history = append(history, ev)
		}
	}
	st.History = history
	return st, nil
}

// brief is a transition in flight as status shows it.
func (t *transition) brief() string {
	to := t.to
	if to == "" {
		to = "(no new leader yet)"
	}
	return fmt.Sprintf("%s since %s: from %s to %s", t.cause, t.start.UTC().Format(time.RFC3339Nano), dash(t.from), to)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

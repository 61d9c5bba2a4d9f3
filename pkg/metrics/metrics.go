// Package metrics exposes the controller's Prometheus metrics: counters and a
// convergence histogram fed by the controller through the controller.Metrics
// interface, and gauges read from the controller's status document at scrape
// time (so they can never drift from what GET /status says).
package metrics

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgsvc/pgsvc/pkg/controller"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// HTTPStatuser is implemented by errors that carry the HTTP status of a
// failed request; ApplyFailed labels the error with it.
type HTTPStatuser interface {
	HTTPStatus() int
}

// statusCoder is the net/http-style spelling of the same thing.
type statusCoder interface {
	StatusCode() int
}

// ConvergenceBuckets are the pgsvc_convergence_seconds buckets: 1ms to 60s.
// A leader change should reach HAProxy in milliseconds; the upper buckets
// catch retries after a failing target.
var ConvergenceBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Metrics implements controller.Metrics with Prometheus metrics. Create it
// with New; it is safe for concurrent use.
type Metrics struct {
	gatherer prometheus.Gatherer

	snapshots   *prometheus.CounterVec
	reconciles  *prometheus.CounterVec
	changes     *prometheus.CounterVec
	reloads     *prometheus.CounterVec
	applyErrors *prometheus.CounterVec
	convergence *prometheus.HistogramVec
	transitions *prometheus.CounterVec
	downtime    *prometheus.HistogramVec
}

var (
	_ controller.Metrics           = (*Metrics)(nil)
	_ controller.TransitionMetrics = (*Metrics)(nil)
)

// DowntimeBuckets are the pgsvc_write_downtime_seconds buckets: 10ms to
// 60s. Patroni's own switchover window is a few hundred milliseconds; a
// crash failover's is the leader TTL.
var DowntimeBuckets = []float64{.01, .025, .05, .1, .2, .3, .5, .75, 1, 2, 5, 10, 30, 60}

// New registers pgsvc's metrics on reg and returns them. status is called at
// every scrape for the gauges (DCS view age and connection, target sync,
// frozen clusters, leadership, readiness); it may be nil before the
// controller exists, then those metrics are absent.
//
// Handler serves reg when reg is also a prometheus.Gatherer (a
// *prometheus.Registry is both); otherwise it serves prometheus.DefaultGatherer.
// New panics if the metrics are already registered on reg (programming error,
// as with prometheus.MustRegister).
func New(reg prometheus.Registerer, status func() controller.Status) *Metrics {
	m := &Metrics{
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgsvc_dcs_snapshots_total",
			Help: "DCS snapshots received from the etcd watcher, by Patroni namespace.",
		}, []string{"namespace"}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgsvc_reconciles_total",
			Help: "Reconciles run, by kind (event: after DCS events; resync: forced full re-apply).",
		}, []string{"kind"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgsvc_applied_changes_total",
			Help: "Changes applied to HAProxy targets, by target and change kind.",
		}, []string{"target", "kind"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgsvc_reloads_total",
			Help: "HAProxy reloads caused by applies, by target.",
		}, []string{"target"}),
		applyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgsvc_apply_errors_total",
			Help: "Failed applies, by target and code (HTTP status when known, else \"error\").",
		}, []string{"target", "code"}),
		convergence: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pgsvc_convergence_seconds",
			Help:    "Time from the first DCS event of a change to its apply on a target.",
			Buckets: ConvergenceBuckets,
		}, []string{"target"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgsvc_transitions_total",
			Help: "Switchovers and failovers followed, by cause (switchover requested, leader key released/expired/moved) and outcome (completed: an old primary went off and a new one came on; other: refused, never carried out, or left to the health checks).",
		}, []string{"cause", "outcome"}),
		downtime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pgsvc_write_downtime_seconds",
			Help:    "Write-path downtime of a completed transition as the controller saw it: from the old primary going off (its /primary stopped answering 200 or its leader key went) to the new primary forced UP (or answering /primary 200 read-write).",
			Buckets: DowntimeBuckets,
		}, []string{"cause"}),
	}
	reg.MustRegister(m.snapshots, m.reconciles, m.changes, m.reloads, m.applyErrors, m.convergence, m.transitions, m.downtime)
	// Known label values start at zero so rate() works from the first scrape.
	m.reconciles.WithLabelValues("event")
	m.reconciles.WithLabelValues("resync")
	if status != nil {
		reg.MustRegister(&statusCollector{status: status})
	}
	if g, ok := reg.(prometheus.Gatherer); ok {
		m.gatherer = g
	} else {
		m.gatherer = prometheus.DefaultGatherer
	}
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{})
}

// DCSSnapshot counts one snapshot of namespace.
func (m *Metrics) DCSSnapshot(namespace string) {
	m.snapshots.WithLabelValues(namespace).Inc()
}

// Reconcile counts one reconcile; forced is a periodic resync.
func (m *Metrics) Reconcile(forced bool) {
	kind := "event"
	if forced {
		kind = "resync"
	}
	m.reconciles.WithLabelValues(kind).Inc()
}

// Applied counts the changes and the reload of one successful apply and
// observes its convergence latency.
func (m *Metrics) Applied(target string, changes []target.Change, reloaded bool, convergence time.Duration) {
	for _, c := range changes {
		m.changes.WithLabelValues(target, c.Kind).Inc()
	}
	if reloaded {
		m.reloads.WithLabelValues(target).Inc()
	}
	// A non-positive latency means a clock step or no event time: observing it
	// would only distort the histogram.
	if convergence > 0 {
		m.convergence.WithLabelValues(target).Observe(convergence.Seconds())
	}
}

// Transition counts one transition and, when it completed, observes its
// write-path downtime.
func (m *Metrics) Transition(cause string, writeDowntime time.Duration, completed bool) {
	outcome := "other"
	if completed {
		outcome = "completed"
		m.downtime.WithLabelValues(cause).Observe(writeDowntime.Seconds())
	}
	m.transitions.WithLabelValues(cause, outcome).Inc()
}

// ApplyFailed counts one failed apply, labelled with the HTTP status the
// error carries, if any.
func (m *Metrics) ApplyFailed(target string, err error) {
	m.applyErrors.WithLabelValues(target, ErrorCode(err)).Inc()
}

// ErrorCode returns the HTTP status an error carries (HTTPStatuser,
// StatusCode() int, or a Data Plane API error) as a string, else "error".
func ErrorCode(err error) string {
	var hs HTTPStatuser
	if errors.As(err, &hs) && hs.HTTPStatus() > 0 {
		return strconv.Itoa(hs.HTTPStatus())
	}
	var sc statusCoder
	if errors.As(err, &sc) && sc.StatusCode() > 0 {
		return strconv.Itoa(sc.StatusCode())
	}
	var ae *dataplaneapi.APIError
	if errors.As(err, &ae) && ae.Status > 0 {
		return strconv.Itoa(ae.Status)
	}
	return "error"
}

// statusCollector turns the status document into metrics at scrape time.
type statusCollector struct {
	status func() controller.Status
	// mu serialises scrapes: status() takes the controller's locks, and
	// concurrent scrapes would only repeat the work.
	mu sync.Mutex
}

var (
	descViewAge = prometheus.NewDesc("pgsvc_dcs_view_age_seconds",
		"Time since the DCS view of the namespace was last confirmed by etcd.", []string{"namespace"}, nil)
	descConnected = prometheus.NewDesc("pgsvc_dcs_connected",
		"1 when the etcd watch of the namespace is connected.", []string{"namespace"}, nil)
	descRestarts = prometheus.NewDesc("pgsvc_watch_restarts_total",
		"Restarts of the etcd watch of the namespace.", []string{"namespace"}, nil)
	descResyncs = prometheus.NewDesc("pgsvc_dcs_resyncs_total",
		"Full re-lists of the namespace's DCS keys.", []string{"namespace"}, nil)
	descStale = prometheus.NewDesc("pgsvc_dcs_stale",
		"1 when the DCS view of the namespace is stale (etcd unreachable or silent past stale_after, or never listed): its clusters keep their last good state and nothing new is applied from it.", []string{"namespace"}, nil)
	descInSync = prometheus.NewDesc("pgsvc_target_in_sync",
		"1 when the running HAProxy of the target serves the current plan; 0 while applying, deferring, partial, failing, and on a standby instance (pgsvc_controller_leader 0).", []string{"target"}, nil)
	descState = prometheus.NewDesc("pgsvc_target_state",
		"1 for the target's state now, 0 for the others (in_sync, pending, applying, deferring, partial, failing, standby, dry_run; as controller status says): an alert on failing or partial needs no join with pgsvc_controller_leader.", []string{"target", "state"}, nil)
	descHeldBack = prometheus.NewDesc("pgsvc_target_held_back_clusters",
		"Clusters the target's HAProxy refused, held back with their last good state while the others are applied.", []string{"target"}, nil)
	descInFlight = prometheus.NewDesc("pgsvc_transitions_in_flight",
		"Switchovers and failovers being followed now (one per cluster).", nil, nil)
	descFailures = prometheus.NewDesc("pgsvc_target_consecutive_failures",
		"Consecutive failed applies of the target.", []string{"target"}, nil)
	descFrozen = prometheus.NewDesc("pgsvc_cluster_frozen",
		"1 when the cluster's services are frozen (held as they were).", []string{"cluster"}, nil)
	descPlanFailed = prometheus.NewDesc("pgsvc_cluster_plan_failed",
		"1 when the cluster's plan fails (its last good services are kept; the other clusters go on).", []string{"cluster"}, nil)
	descWarnings = prometheus.NewDesc("pgsvc_cluster_warnings",
		"Warnings of the cluster's plan (bad DCS keys skipped, a leader key naming no member, unknown members...; listed in /status).", []string{"cluster"}, nil)
	descLeader = prometheus.NewDesc("pgsvc_controller_leader",
		"1 when this controller instance applies changes (elected leader, or no election).", nil, nil)
	descReady = prometheus.NewDesc("pgsvc_ready",
		"1 when the controller is ready, as /readyz: fresh views, a plan, and targets in sync (a standby: a leader seen).", nil, nil)
)

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descViewAge, descConnected, descStale, descRestarts, descResyncs,
		descInSync, descState, descFailures, descHeldBack, descFrozen, descPlanFailed, descWarnings, descLeader, descReady, descInFlight} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	st := c.status()
	c.mu.Unlock()
	for _, ns := range st.DCS {
		ch <- prometheus.MustNewConstMetric(descViewAge, prometheus.GaugeValue, ns.AgeSeconds, ns.Namespace)
		ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, b2f(ns.Connected), ns.Namespace)
		ch <- prometheus.MustNewConstMetric(descStale, prometheus.GaugeValue, b2f(ns.Stale != ""), ns.Namespace)
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(ns.Restarts), ns.Namespace)
		ch <- prometheus.MustNewConstMetric(descResyncs, prometheus.CounterValue, float64(ns.Resyncs), ns.Namespace)
	}
	for _, t := range st.Targets {
		ch <- prometheus.MustNewConstMetric(descInSync, prometheus.GaugeValue, b2f(t.InSync), t.Name)
		known := false
		for _, s := range targetStates {
			known = known || s == t.State
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, b2f(s == t.State), t.Name, s)
		}
		if !known && t.State != "" {
			// A state this list misses still shows (one series, not lost).
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, 1, t.Name, t.State)
		}
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.GaugeValue, float64(t.Failures), t.Name)
		ch <- prometheus.MustNewConstMetric(descHeldBack, prometheus.GaugeValue, float64(len(t.HeldBack)), t.Name)
	}
	for _, cl := range st.Clusters {
		ch <- prometheus.MustNewConstMetric(descFrozen, prometheus.GaugeValue, b2f(cl.Frozen != ""), cl.Name)
		ch <- prometheus.MustNewConstMetric(descPlanFailed, prometheus.GaugeValue, b2f(cl.PlanError != ""), cl.Name)
		ch <- prometheus.MustNewConstMetric(descWarnings, prometheus.GaugeValue, float64(len(cl.Warnings)), cl.Name)
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, b2f(st.Leader == nil || st.Leader.IsLeader))
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, b2f(st.Ready))
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(st.TransitionsInFlight))
}

// targetStates are the states of controller.TargetStatus.State, each a
// series of pgsvc_target_state (a fixed set: 8 series per target).
var targetStates = []string{"in_sync", "pending", "applying", "deferring", "partial", "failing", "standby", "dry_run"}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

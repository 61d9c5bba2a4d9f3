package metrics

import (
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgsvc/pgsvc/pkg/controller"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/target"
)

type httpErr int

func (e httpErr) Error() string   { return fmt.Sprintf("http %d", int(e)) }
func (e httpErr) HTTPStatus() int { return int(e) }

type codeErr int

func (e codeErr) Error() string   { return fmt.Sprintf("code %d", int(e)) }
func (e codeErr) StatusCode() int { return int(e) }

func TestErrorCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"plain", errors.New("boom"), "error"},
		{"nil", nil, "error"},
		{"http status", httpErr(503), "503"},
		{"wrapped http status", fmt.Errorf("apply: %w", httpErr(409)), "409"},
		{"status code method", fmt.Errorf("apply: %w", codeErr(406)), "406"},
		{"data plane api error", fmt.Errorf("commit: %w", &dataplaneapi.APIError{Status: 500, Method: "PUT", Path: "/x"}), "500"},
		{"zero status", httpErr(0), "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ErrorCode(tc.err); got != tc.want {
				t.Errorf("ErrorCode(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}

func TestCounters(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg, nil)

	m.DCSSnapshot("/service/")
	m.DCSSnapshot("/service/")
	m.DCSSnapshot("/other/")
	m.Reconcile(false)
	m.Reconcile(false)
	m.Reconcile(true)
	m.Applied("dpapi-a", []target.Change{
		{Kind: target.KindSetWeight, Backend: "pg-test-primary", Server: "pg-test-1"},
		{Kind: target.KindSetWeight, Backend: "pg-test-replica", Server: "pg-test-1"},
		{Kind: target.KindAddServer, Backend: "pg-test-replica", Server: "pg-test-2"},
	}, true, 3*time.Millisecond)
	m.Applied("dpapi-a", []target.Change{{Kind: target.KindSetWeight}}, false, 20*time.Second)
	m.Applied("dpapi-b", nil, false, 0) // no latency known: not observed
	m.ApplyFailed("dpapi-a", fmt.Errorf("commit: %w", httpErr(409)))
	m.ApplyFailed("dpapi-a", errors.New("dial tcp: connection refused"))
	m.ApplyFailed("dpapi-a", errors.New("dial tcp: connection refused"))

	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"snapshots service", m.snapshots.WithLabelValues("/service/"), 2},
		{"snapshots other", m.snapshots.WithLabelValues("/other/"), 1},
		{"reconciles event", m.reconciles.WithLabelValues("event"), 2},
		{"reconciles resync", m.reconciles.WithLabelValues("resync"), 1},
		{"set_weight", m.changes.WithLabelValues("dpapi-a", target.KindSetWeight), 3},
		{"add_server", m.changes.WithLabelValues("dpapi-a", target.KindAddServer), 1},
		{"reloads", m.reloads.WithLabelValues("dpapi-a"), 1},
		{"errors 409", m.applyErrors.WithLabelValues("dpapi-a", "409"), 1},
		{"errors other", m.applyErrors.WithLabelValues("dpapi-a", "error"), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := toFloat64(tc.c)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("convergence histogram", func(t *testing.T) {
		want := `
# HELP pgsvc_convergence_seconds Time from the first DCS event of a change to its apply on a target.
# TYPE pgsvc_convergence_seconds histogram
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="0.001"} 0
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="0.0025"} 0
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="0.005"} 1
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="0.01"} 1
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="0.025"} 1
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="0.05"} 1
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="0.1"} 1
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="0.25"} 1
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="0.5"} 1
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="1"} 1
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="2.5"} 1
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="5"} 1
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="10"} 1
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="30"} 2
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="60"} 2
pgsvc_convergence_seconds_bucket{target="dpapi-a",le="+Inf"} 2
pgsvc_convergence_seconds_sum{target="dpapi-a"} 20.003
pgsvc_convergence_seconds_count{target="dpapi-a"} 2
`
		if err := gatherAndCompare(reg, want, "pgsvc_convergence_seconds"); err != nil {
			t.Error(err)
		}
	})
}

func TestTransitions(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg, nil)
	m.Transition("switchover requested", 180*time.Millisecond, true)
	m.Transition("switchover requested", 0, false)
	m.Transition("leader key expired", 40*time.Millisecond, true)
	for _, tc := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"switchover requested", "completed"}, 1},
		{[]string{"switchover requested", "other"}, 1},
		{[]string{"leader key expired", "completed"}, 1},
	} {
		if got, err := toFloat64(m.transitions.WithLabelValues(tc.labels...)); err != nil || got != tc.want {
			t.Errorf("transitions %v = %v (%v), want %v", tc.labels, got, err, tc.want)
		}
	}
	want := `
# HELP pgsvc_write_downtime_seconds Write-path downtime of a completed transition as the controller saw it: from the old primary going off (its /primary stopped answering 200 or its leader key went) to the new primary forced UP (or answering /primary 200 read-write).
# TYPE pgsvc_write_downtime_seconds histogram
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="0.01"} 0
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="0.025"} 0
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="0.05"} 1
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="0.1"} 1
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="0.2"} 1
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="0.3"} 1
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="0.5"} 1
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="0.75"} 1
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="1"} 1
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="2"} 1
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="5"} 1
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="10"} 1
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="30"} 1
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="60"} 1
pgsvc_write_downtime_seconds_bucket{cause="leader key expired",le="+Inf"} 1
pgsvc_write_downtime_seconds_sum{cause="leader key expired"} 0.04
pgsvc_write_downtime_seconds_count{cause="leader key expired"} 1
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="0.01"} 0
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="0.025"} 0
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="0.05"} 0
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="0.1"} 0
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="0.2"} 1
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="0.3"} 1
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="0.5"} 1
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="0.75"} 1
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="1"} 1
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="2"} 1
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="5"} 1
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="10"} 1
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="30"} 1
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="60"} 1
pgsvc_write_downtime_seconds_bucket{cause="switchover requested",le="+Inf"} 1
pgsvc_write_downtime_seconds_sum{cause="switchover requested"} 0.18
pgsvc_write_downtime_seconds_count{cause="switchover requested"} 1
`
	if err := gatherAndCompare(reg, want, "pgsvc_write_downtime_seconds"); err != nil {
		t.Error(err)
	}
}

func sampleStatus() controller.Status {
	return controller.Status{
		Now:   time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Ready: false,
		DCS: []controller.NamespaceStatus{
			{Namespace: "/service/", AgeSeconds: 1.5, Connected: true, Restarts: 2, Resyncs: 3},
			{Namespace: "/other/", AgeSeconds: 42, Connected: false, Restarts: 7, Resyncs: 1, Stale: "stale: etcd unreachable"},
		},
		Clusters: []controller.ClusterStatus{
			{Cluster: plan.Cluster{Name: "pg-test"}},
			{Cluster: plan.Cluster{Name: "pg-meta", Warnings: []string{"leader key names pg-meta-9, no member", "member key pg-meta-x: bad JSON"}}, Frozen: "dcs view stale"},
		},
		Targets: []controller.TargetStatus{
			{Name: "dpapi-a", InSync: true, State: "in_sync"},
			{Name: "dpapi-b", InSync: false, State: "partial", Failures: 4, HeldBack: []controller.HeldCluster{{Cluster: "pg-x"}, {Cluster: "pg-y"}}},
		},
		TransitionsInFlight: 3,
	}
}

func TestStatusCollector(t *testing.T) {
	const head = `
# HELP pgsvc_controller_leader 1 when this controller instance applies changes (elected leader, or no election).
# TYPE pgsvc_controller_leader gauge
`
	for _, tc := range []struct {
		name   string
		status func() controller.Status
		names  []string
		want   string
	}{
		{
			name:   "dcs namespaces",
			status: sampleStatus,
			names:  []string{"pgsvc_dcs_view_age_seconds", "pgsvc_dcs_connected", "pgsvc_watch_restarts_total", "pgsvc_dcs_resyncs_total"},
			want: `
# HELP pgsvc_dcs_connected 1 when the etcd watch of the namespace is connected.
# TYPE pgsvc_dcs_connected gauge
pgsvc_dcs_connected{namespace="/other/"} 0
pgsvc_dcs_connected{namespace="/service/"} 1
# HELP pgsvc_dcs_resyncs_total Full re-lists of the namespace's DCS keys.
# TYPE pgsvc_dcs_resyncs_total counter
pgsvc_dcs_resyncs_total{namespace="/other/"} 1
pgsvc_dcs_resyncs_total{namespace="/service/"} 3
# HELP pgsvc_dcs_view_age_seconds Time since the DCS view of the namespace was last confirmed by etcd.
# TYPE pgsvc_dcs_view_age_seconds gauge
pgsvc_dcs_view_age_seconds{namespace="/other/"} 42
pgsvc_dcs_view_age_seconds{namespace="/service/"} 1.5
# HELP pgsvc_watch_restarts_total Restarts of the etcd watch of the namespace.
# TYPE pgsvc_watch_restarts_total counter
pgsvc_watch_restarts_total{namespace="/other/"} 7
pgsvc_watch_restarts_total{namespace="/service/"} 2
`,
		},
		{
			name:   "stale, held back, transitions in flight",
			status: sampleStatus,
			names:  []string{"pgsvc_dcs_stale", "pgsvc_target_held_back_clusters", "pgsvc_transitions_in_flight", "pgsvc_cluster_warnings"},
			want: `
# HELP pgsvc_cluster_warnings Warnings of the cluster's plan (bad DCS keys skipped, a leader key naming no member, unknown members...; listed in /status).
# TYPE pgsvc_cluster_warnings gauge
pgsvc_cluster_warnings{cluster="pg-meta"} 2
pgsvc_cluster_warnings{cluster="pg-test"} 0
# HELP pgsvc_dcs_stale 1 when the DCS view of the namespace is stale (etcd unreachable or silent past stale_after, or never listed): its clusters keep their last good state and nothing new is applied from it.
# TYPE pgsvc_dcs_stale gauge
pgsvc_dcs_stale{namespace="/other/"} 1
pgsvc_dcs_stale{namespace="/service/"} 0
# HELP pgsvc_target_held_back_clusters Clusters the target's HAProxy refused, held back with their last good state while the others are applied.
# TYPE pgsvc_target_held_back_clusters gauge
pgsvc_target_held_back_clusters{target="dpapi-a"} 0
pgsvc_target_held_back_clusters{target="dpapi-b"} 2
# HELP pgsvc_transitions_in_flight Switchovers and failovers being followed now (one per cluster).
# TYPE pgsvc_transitions_in_flight gauge
pgsvc_transitions_in_flight 3
`,
		},
		{
			name:   "targets clusters ready",
			status: sampleStatus,
			names:  []string{"pgsvc_target_in_sync", "pgsvc_target_consecutive_failures", "pgsvc_cluster_frozen", "pgsvc_ready"},
			want: `
# HELP pgsvc_cluster_frozen 1 when the cluster's services are frozen (held as they were).
# TYPE pgsvc_cluster_frozen gauge
pgsvc_cluster_frozen{cluster="pg-meta"} 1
pgsvc_cluster_frozen{cluster="pg-test"} 0
# HELP pgsvc_ready 1 when the controller is ready, as /readyz: fresh views, a plan, and targets in sync (a standby: a leader seen).
# TYPE pgsvc_ready gauge
pgsvc_ready 0
# HELP pgsvc_target_consecutive_failures Consecutive failed applies of the target.
# TYPE pgsvc_target_consecutive_failures gauge
pgsvc_target_consecutive_failures{target="dpapi-a"} 0
pgsvc_target_consecutive_failures{target="dpapi-b"} 4
# HELP pgsvc_target_in_sync 1 when the running HAProxy of the target serves the current plan; 0 while applying, deferring, partial, failing, and on a standby instance (pgsvc_controller_leader 0).
# TYPE pgsvc_target_in_sync gauge
pgsvc_target_in_sync{target="dpapi-a"} 1
pgsvc_target_in_sync{target="dpapi-b"} 0
`,
		},
		{
			name:   "target states",
			status: sampleStatus,
			names:  []string{"pgsvc_target_state"},
			want: `
# HELP pgsvc_target_state 1 for the target's state now, 0 for the others (in_sync, pending, applying, deferring, partial, failing, standby, dry_run; as controller status says): an alert on failing or partial needs no join with pgsvc_controller_leader.
# TYPE pgsvc_target_state gauge
pgsvc_target_state{state="applying",target="dpapi-a"} 0
pgsvc_target_state{state="applying",target="dpapi-b"} 0
pgsvc_target_state{state="deferring",target="dpapi-a"} 0
pgsvc_target_state{state="deferring",target="dpapi-b"} 0
pgsvc_target_state{state="dry_run",target="dpapi-a"} 0
pgsvc_target_state{state="dry_run",target="dpapi-b"} 0
pgsvc_target_state{state="failing",target="dpapi-a"} 0
pgsvc_target_state{state="failing",target="dpapi-b"} 0
pgsvc_target_state{state="in_sync",target="dpapi-a"} 1
pgsvc_target_state{state="in_sync",target="dpapi-b"} 0
pgsvc_target_state{state="partial",target="dpapi-a"} 0
pgsvc_target_state{state="partial",target="dpapi-b"} 1
pgsvc_target_state{state="pending",target="dpapi-a"} 0
pgsvc_target_state{state="pending",target="dpapi-b"} 0
pgsvc_target_state{state="standby",target="dpapi-a"} 0
pgsvc_target_state{state="standby",target="dpapi-b"} 0
`,
		},
		{
			name:   "no election applies",
			status: func() controller.Status { return controller.Status{Ready: true} },
			names:  []string{"pgsvc_controller_leader", "pgsvc_ready"},
			want: head + `pgsvc_controller_leader 1
# HELP pgsvc_ready 1 when the controller is ready, as /readyz: fresh views, a plan, and targets in sync (a standby: a leader seen).
# TYPE pgsvc_ready gauge
pgsvc_ready 1
`,
		},
		{
			name: "elected leader",
			status: func() controller.Status {
				return controller.Status{Leader: &controller.LeaderStatus{Identity: "a", IsLeader: true, Leader: "a"}}
			},
			names: []string{"pgsvc_controller_leader"},
			want:  head + "pgsvc_controller_leader 1\n",
		},
		{
			name: "standby",
			status: func() controller.Status {
				return controller.Status{Leader: &controller.LeaderStatus{Identity: "b", IsLeader: false, Leader: "a"}}
			},
			names: []string{"pgsvc_controller_leader"},
			want:  head + "pgsvc_controller_leader 0\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			New(reg, tc.status)
			if err := gatherAndCompare(reg, tc.want, tc.names...); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestStatusReadAtScrape checks the gauges follow the status func, not a
// copy taken at registration.
func TestStatusReadAtScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	ready := false
	New(reg, func() controller.Status { return controller.Status{Ready: ready} })
	want := func(v int) string {
		return fmt.Sprintf("# HELP pgsvc_ready 1 when the controller is ready, as /readyz: fresh views, a plan, and targets in sync (a standby: a leader seen).\n# TYPE pgsvc_ready gauge\npgsvc_ready %d\n", v)
	}
	if err := gatherAndCompare(reg, want(0), "pgsvc_ready"); err != nil {
		t.Fatal(err)
	}
	ready = true
	if err := gatherAndCompare(reg, want(1), "pgsvc_ready"); err != nil {
		t.Fatal(err)
	}
}

func TestLint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg, sampleStatus)
	m.DCSSnapshot("/service/")
	m.Reconcile(true)
	m.Applied("dpapi-a", []target.Change{{Kind: target.KindSetWeight}}, true, time.Millisecond)
	m.ApplyFailed("dpapi-a", httpErr(500))

	// Every metric family, from both the counters and the status collector.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 21 {
		var names []string
		for _, mf := range mfs {
			names = append(names, mf.GetName())
		}
		t.Errorf("gathered %d families, want 21: %v", len(mfs), names)
	}
	for _, c := range []prometheus.Collector{m.snapshots, m.reconciles, m.changes, m.reloads, m.applyErrors,
		m.convergence, &statusCollector{status: sampleStatus}} {
		problems, err := collectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

func TestHandler(t *testing.T) {
	for _, tc := range []struct {
		name string
		reg  prometheus.Registerer
	}{
		{"registry", prometheus.NewRegistry()},
		// A Registerer that is not a Gatherer falls back to the default gatherer.
		{"wrapped registerer", prometheus.WrapRegistererWith(prometheus.Labels{"instance_role": "test"}, prometheus.NewRegistry())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(tc.reg, sampleStatus)
			m.Reconcile(false)
			srv := httptest.NewServer(m.Handler())
			defer srv.Close()
			resp, err := srv.Client().Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if tc.name == "registry" && !strings.Contains(string(body), `pgsvc_reconciles_total{kind="event"} 1`) {
				t.Errorf("metrics page lacks the reconcile counter:\n%s", body)
			}
			if tc.name == "wrapped registerer" && strings.Contains(string(body), "pgsvc_reconciles_total") {
				t.Errorf("default gatherer unexpectedly serves the wrapped registry's metrics")
			}
		})
	}
}

// TestTargetStatesCoverController: every state the controller gives a
// target (a literal assigned to a TargetStatus's State in pkg/controller)
// has its pgsvc_target_state series, so an alert on it finds a 1.
func TestTargetStatesCoverController(t *testing.T) {
	files, err := filepath.Glob("../controller/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("controller sources: %v (%d files)", err, len(files))
	}
	re := regexp.MustCompile(`State(?: = |: )"([a-z_]+)"`)
	seen := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			seen[m[1]] = true
		}
	}
	if len(seen) < 5 {
		t.Fatalf("found only %v in the controller's sources: the pattern no longer matches", seen)
	}
	for s := range seen {
		if !slices.Contains(targetStates, s) {
			t.Errorf("the controller sets a target's state %q, which pgsvc_target_state does not list", s)
		}
	}
}

package controller

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

type panicTarget struct{ fakeTarget }

func (p *panicTarget) Apply(context.Context, []services.Service) (target.Result, error) {
	var m map[string]int
	m["boom"]++ // a nil-map write: a real bug
	return target.Result{}, nil
}

type panicMetrics struct{ nopMetrics }

func (panicMetrics) Reconcile(bool) { panic("metrics bug") }

// TestPanicIsNeverSilent (issue 12 row 9): a panic in a target worker or in
// the reconcile loop is logged with its stack, /healthz answers 500, status
// is not ready, and Run returns an error so the process exits.
func TestPanicIsNeverSilent(t *testing.T) {
	for _, tc := range []struct {
		name    string
		targets []target.Target
		metrics Metrics
		where   string
	}{
		{"worker", []target.Target{&panicTarget{}}, nil, "target worker fake panicked: assignment to entry in nil map"},
		{"reconcile loop", []target.Target{&fakeTarget{}}, panicMetrics{}, "reconcile loop panicked: metrics bug"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.ErrorLevel)
			c := New(loadInventory(t), tc.targets, Options{Debounce: time.Millisecond, Log: zap.New(core), Metrics: tc.metrics})
			srv := httptest.NewServer(c.Handler(nil))
			defer srv.Close()
			done := make(chan error, 1)
			go func() { done <- c.Run(context.Background()) }()
			c.Observe(state(10, "pg-test-1", 1, "pg-test-1", "pg-test-2", "pg-test-3"))
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.where) {
					t.Errorf("Run = %v, want an error containing %q", err, tc.where)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after a panic")
			}
			resp, err := http.Get(srv.URL + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusInternalServerError {
				t.Errorf("/healthz = %d after a panic, want 500", resp.StatusCode)
			}
			if tc.name == "worker" { // the loop's lock is free: status answers
				if st := c.Status(); st.Ready || !strings.Contains(strings.Join(st.NotReady, ";"), tc.where) {
					t.Errorf("status after a panic: ready %t, not ready %v", st.Ready, st.NotReady)
				}
			}
			entries := logs.FilterMessageSnippet("panicked").All()
			if len(entries) != 1 || !strings.Contains(entries[0].ContextMap()["stack"].(string), "goroutine") {
				t.Errorf("want one error log with the stack, got %+v", entries)
			}
		})
	}
}

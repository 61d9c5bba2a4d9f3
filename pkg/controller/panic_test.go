package controller

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pgsvc/pgsvc/pkg/target"
)

// panicOnLog is a logger that panics when it logs msg: a way to raise a
// panic deep inside the controller (here under c.mu).
func panicOnLog(msg string) *zap.Logger {
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.DebugLevel)
	return zap.New(core, zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == msg {
			panic("bug under c.mu")
		}
		return nil
	}))
}

// TestPanicUnderLockStopsRun: a panic while a reconcile holds c.mu (here
// raised from startTransition's log line) must make Run return an error,
// Failed say why and /healthz answer 500, not hang the controller with
// c.mu held.
func TestPanicUnderLockStopsRun(t *testing.T) {
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{Debounce: time.Millisecond,
		Log: panicOnLog("transition: probing Patroni's REST API"), PatroniCAFile: "/nonexistent"})
	srv := httptest.NewServer(c.Handler(nil))
	defer srv.Close()
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- c.Run(ctx) }()
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	c.Observe(state(10, "pg-test-1", 1, all...))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })
	c.Observe(state(11, "pg-test-2", 1, all...)) // the leader moved: startTransition logs, and panics
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "bug under c.mu") {
			t.Errorf("Run returned %v, want the panic's error", err)
		}
	case <-time.After(10 * time.Second):
		dumpIfStuck(t, "Run did not return 10s after a panic under c.mu")
	}
	if f := c.Failed(); !strings.Contains(f, "reconcile loop panicked: bug under c.mu") {
		t.Errorf("Failed() = %q", f)
	}
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("/healthz = %d after a panic, want 500", resp.StatusCode)
	}
	// c.mu was released: status answers (and is not ready).
	st := make(chan Status, 1)
	go func() { st <- c.Status() }()
	select {
	case s := <-st:
		if s.Ready {
			t.Error("status ready after a panic")
		}
	case <-time.After(5 * time.Second):
		dumpIfStuck(t, "Status blocked after a panic under c.mu: c.mu still held")
	}
}

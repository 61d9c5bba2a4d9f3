package app

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/config"
)

// TestElectorOutlivesController: at the stop the elector keeps leading (its
// context stays open) until the controller's Run returned, e.g. after an
// apply that was past its last lease check; then it resigns, and
// runLeading returns Run's error once both ended.
func TestElectorOutlivesController(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	release := make(chan struct{})
	applying := make(chan struct{})
	runErr := errors.New("run ended")
	run := func(ctx context.Context) error {
		close(applying)
		<-ctx.Done()
		<-release // an in-flight write finishing after the stop
		return runErr
	}
	electCtx := make(chan context.Context, 1)
	electDone := make(chan struct{})
	elect := func(ctx context.Context) error {
		electCtx <- ctx
		<-ctx.Done()
		close(electDone)
		return ctx.Err()
	}
	res := make(chan error, 1)
	go func() { res <- runLeading(ctx, run, elect) }()
	<-applying
	ectx := <-electCtx
	stop()
	// runLeading cannot return before release; poll the elector's context
	// over that window instead of sleeping blindly.
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if ectx.Err() != nil {
			t.Fatal("the elector was stopped while the controller was still applying")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	select {
	case err := <-res:
		if err != runErr {
			t.Fatalf("runLeading returned %v, want run's error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("runLeading did not return after run did")
	}
	select {
	case <-electDone:
	default:
		t.Fatal("runLeading returned before the elector ended")
	}
}

func TestRedactAll(t *testing.T) {
	got := redactAll([]string{"http://root:S3cret@127.0.0.1:1", "http://127.0.0.1:2"})
	if len(got) != 2 || got[0] != "http://root:xxxxx@127.0.0.1:1" || got[1] != "http://127.0.0.1:2" {
		t.Fatalf("redactAll = %q", got)
	}
}

func TestElectionDirectWarnings(t *testing.T) {
	cfg := &config.Config{Direct: []config.Direct{{ConfigPath: "/etc/haproxy/haproxy.cfg"}}}
	if w := ElectionDirectWarnings(cfg); len(w) != 0 {
		t.Fatalf("without election: %q", w)
	}
	cfg.Election.Enabled = true
	w := ElectionDirectWarnings(cfg)
	if len(w) != 1 || !strings.Contains(w[0], "election.enabled with direct[0] (/etc/haproxy/haproxy.cfg)") || !strings.Contains(w[0], "dataplaneapi") {
		t.Fatalf("warnings %q", w)
	}
}

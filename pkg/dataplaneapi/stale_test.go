package dataplaneapi_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// inProgress lists the ids of the in-progress transactions.
func inProgress(t *testing.T, c *dataplaneapi.Client) map[string]bool {
	t.Helper()
	txns, err := c.ListTransactions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, x := range txns {
		if x.Status == "in_progress" {
			out[x.ID] = true
		}
	}
	return out
}

// testStaleTransactions: a controller killed mid-transaction left one open
// at version v; the version moved since; another writer has one open at the
// current version. A restarted controller (a new Target) deletes the
// outdated one at its first apply, leaves the current one alone, and deletes
// it once a commit made it outdated. place maps services onto the stack.
func testStaleTransactions(t *testing.T, c *dataplaneapi.Client, place func([]services.Service) []services.Service, bumpVersion func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := dataplaneapi.TargetOptions{ReloadPollInterval: 20 * time.Millisecond, Backoff: time.Millisecond}
	first := place(cluster("pg-stale", 3, 3, 1))
	if _, err := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), opts).Apply(ctx, first); err != nil {
		t.Fatal(err)
	}
	v, err := c.GetVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := c.StartTransaction(ctx, v) // then kill -9
	if err != nil {
		t.Fatal(err)
	}
	bumpVersion()
	if v, err = c.GetVersion(ctx); err != nil {
		t.Fatal(err)
	}
	current, err := c.StartTransaction(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.DeleteTransaction(context.Background(), current.ID) }()

	restarted := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), opts)
	if res, err := restarted.Apply(ctx, first); err != nil || len(res.Changes) != 0 {
		t.Fatalf("apply after restart: %+v %v", res, err)
	}
	open := inProgress(t, c)
	if open[orphan.ID] {
		t.Errorf("the outdated transaction %s is still open after the first apply", orphan.ID)
	}
	if !open[current.ID] {
		t.Errorf("the transaction at the current version was deleted: it may be another writer's")
	}
	// A commit makes it outdated; the pass after deletes it.
	if _, err := restarted.Apply(ctx, place(cluster("pg-stale", 3, 3, 2))); err != nil {
		t.Fatal(err)
	}
	if open := inProgress(t, c); len(open) != 0 {
		t.Errorf("transactions still open after a commit made them outdated: %v", open)
	}
}

func TestStaleTransactionsDeletedOnceOutdated(t *testing.T) {
	f := newFixture(t)
	testStaleTransactions(t, f.c, func(s []services.Service) []services.Service { return s },
		func() { f.srv.Edit(func(*dpapitest.Config) {}) })
}

// Orphans that fill the API's limit of open transactions must not block
// the controller: a 429 makes it delete the outdated ones and go on.
func TestOrphansFillingTheLimitAreDeletedOn429(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.apply(t, cluster("pg-a", 1, 3, 1))
	v, _ := f.c.GetVersion(ctx)
	for i := 0; i < dpapitest.MaxTransactions; i++ {
		if _, err := f.c.StartTransaction(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	f.srv.Edit(func(*dpapitest.Config) {}) // they are outdated now
	restarted := dataplaneapi.NewTarget(f.c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadPollInterval: 2 * time.Millisecond, Backoff: time.Hour})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := restarted.Apply(ctx, cluster("pg-a", 1, 3, 2)); err != nil {
		t.Fatalf("apply with the limit filled by orphans: %v", err)
	}
	if open := inProgress(t, f.c); len(open) != 0 {
		t.Errorf("%d transactions still open", len(open))
	}
}

package dataplaneapi_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// TestApplyStopsWhenNoLongerLeader: a controller that lost its lease
// (target.WithWriteCheck says so) sends no write to the API: no
// transaction, no commit; the error says why (issue 12 row 4).
func TestApplyStopsWhenNoLongerLeader(t *testing.T) {
	api := dpapitest.NewServer(t)
	c, err := dataplaneapi.New(api.URL(), dataplaneapi.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tg := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{})
	ctx := target.WithWriteCheck(context.Background(), func() error { return target.ErrNotLeader })
	_, err = tg.Apply(ctx, cluster("pg-live", 1, 3, 1))
	if !errors.Is(err, target.ErrNotLeader) {
		t.Fatalf("apply when no longer leader: %v, want ErrNotLeader", err)
	}
	if n := api.Count(http.MethodPost, "/transactions"); n != 0 {
		t.Errorf("%d transactions started", n)
	}
	if n := api.Count(http.MethodPut, "/transactions/"); n != 0 {
		t.Errorf("%d commits", n)
	}
	// Still leading: the same apply goes through.
	ok := target.WithWriteCheck(context.Background(), func() error { return nil })
	if _, err := tg.Apply(ok, cluster("pg-live", 1, 3, 1)); err != nil {
		t.Fatal(err)
	}
	if api.Count(http.MethodPost, "/transactions") == 0 || api.Count(http.MethodPut, "/transactions/") == 0 {
		t.Error("the leading apply did not start and commit a transaction (the counts above prove nothing)")
	}
}

package dataplaneapi

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// TestFoundTrackerReadAgain: a tracker only a read of the native stats
// found out of step (no atomic dump) is read again before its resync, and
// left alone when it is in step after all (maint would cut its sessions);
// one a configuration write made is resynced without a read, and one read
// out of step again is resynced.
func TestFoundTrackerReadAgain(t *testing.T) {
	srv := dpapitest.NewServer(t, dpapitest.WithConfig(dpapitest.EmptyConfig+`
backend b
    mode tcp
    server s1 127.0.0.11:6432 check port 8008 weight 100
backend d
    mode tcp
    server s1 127.0.0.11:5432 track b/s1 weight 100
`))
	c, err := New(srv.URL(), Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tg := NewTarget(c, zaptest.NewLogger(t), TargetOptions{ReloadTimeout: 5 * time.Second, ReloadPollInterval: 10 * time.Millisecond})
	desired := []services.Service{{Name: "b", Servers: []services.Server{{Name: "s1"}}},
		{Name: "d", Servers: []services.Server{{Name: "s1", Track: "b/s1"}}}}
	if _, err := c.GetRuntimeServers(context.Background(), "b"); err != nil { // the client learns the API's version
		t.Fatal(err)
	}
	resync := func(found bool) (int, int, int) {
		t.Helper()
		tg.mu.Lock()
		defer tg.mu.Unlock()
		tg.notePending([]string{"d/s1"}, found)
		srv.ResetRequests()
		changes, err := tg.resyncTrackers(context.Background(), desired)
		if err != nil {
			t.Fatal(err)
		}
		if len(tg.pendingTrackers) != 0 || len(tg.foundTrackers) != 0 {
			t.Errorf("still pending: %v (found %v)", tg.pendingTrackers, tg.foundTrackers)
		}
		return len(changes), srv.Count(http.MethodPut, ""), srv.Count(http.MethodGet, "")
	}
	if n, puts, gets := resync(true); n != 0 || puts != 0 || gets != 2 {
		t.Errorf("found, in step: %d resyncs, %d PUTs, %d GETs; want none, none, 2 (its backend, the tracked one's)", n, puts, gets)
	}
	if n, puts, gets := resync(false); n != 1 || puts != 2 || gets != 0 {
		t.Errorf("written: %d resyncs, %d PUTs, %d GETs; want 1, 2 (maint, ready), no read", n, puts, gets)
	}
	// The double derives a tracker's state from the tracked server's; a
	// tracker drained (an operator's `set server`) is not `ready`: resynced.
	srv.SetAdminState("d", "s1", "drain")
	if n, puts, _ := resync(true); n != 1 || puts != 2 {
		t.Errorf("found, read drained: %d resyncs, %d PUTs; want 1, 2", n, puts)
	}
}

package dataplaneapi_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/haproxytech/client-native/v5/models"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// trackedTwins is cluster() in the twin layout (as twinned) with the
// replica service's backup twins tracking the primary service's servers
// (Build sets BackupIsPrimary for Pigsty's replica service of a cluster
// without offline members); intents sets the write services' health
// intents by member (1-based) before the layout; the members in gone are
// not reported running by the DCS (Build's Unconfirmed: their twins are
// never activated).
func trackedTwins(t testing.TB, svcs []services.Service, intents func(i int, sv *services.Server), gone ...int) []services.Service {
	t.Helper()
	for i := range svcs {
		if services.WriteCheck(svcs[i].Check) {
			for j := range svcs[i].Servers {
				intents(j+1, &svcs[i].Servers[j])
			}
		}
		if svcs[i].Service != "replica" && svcs[i].Service != "offline" {
			continue
		}
		svcs[i].RoleDependent = true
		svcs[i].BackupIsPrimary = svcs[i].Service == "replica"
		for j, sv := range svcs[0].Servers { // primary: every member
			sv.Port = svcs[i].DestPort
			sv.ForceUp, sv.ForceDown = false, false
			sv.Unconfirmed = slices.Contains(gone, j+1)
			svcs[i].Candidates = append(svcs[i].Candidates, sv)
		}
	}
	out, err := services.Twins(svcs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRealTwinsTrackedBackups: through each real Data Plane API over a real
// HAProxy 2.6, the replica service's backup twins track the primary
// service's servers. A failover of a 2-member cluster flips one normal
// twin and forces the new primary UP; its backup twin comes UP with that
// force-up, which is sent before the normal twin's drain (the replica
// backend never runs without an active server), and the fenced old
// primary's backup twin goes DOWN with its fence. An operator's drain of
// the primary service's server reaches its tracker, and no apply tries to
// "repair" the tracker (no `set server` on it clears an inherited drain).
func TestRealTwinsTrackedBackups(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		c := rs.c
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		clk := &clock{now: time.Now()}
		opts := dataplaneapi.TargetOptions{ReloadTimeout: 30 * time.Second, ReloadPollInterval: 100 * time.Millisecond,
			AdminReadEvery: time.Hour, Now: clk.Now}
		tg := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), opts)
		place := func(svcs []services.Service) []services.Service {
			for i := range svcs {
				svcs[i].IP, svcs[i].Port = "127.0.0.1", rs.svcPorts[i%4]
			}
			return svcs
		}
		runtime := func(backend string) map[string]*models.RuntimeServer {
			t.Helper()
			rts, err := c.GetRuntimeServers(ctx, backend)
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]*models.RuntimeServer{}
			for _, r := range rts {
				out[r.Name] = r
			}
			return out
		}

		// Member 1 leads; member 2 is held DOWN in the write services (as a
		// fence would), so that its force-up below is a change.
		first := place(trackedTwins(t, cluster("pg-tt", 3, 2, 1), func(i int, sv *services.Server) {
			sv.ForceDown = i == 2
		}))
		res, err := tg.Apply(ctx, first)
		if err != nil || !res.Reloaded {
			t.Fatalf("create: %+v %v", res, err)
		}
		text, _, err := c.GetRawConfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"pg-tt-1", "pg-tt-2"} {
			if !strings.Contains(text, "server "+m+".backup ") || !strings.Contains(text, "track pg-tt-primary/"+m) {
				t.Fatalf("%s.backup does not track pg-tt-primary/%s:\n%s", m, m, text)
			}
		}
		waitUntil(t, 30*time.Second, func() bool {
			if _, err := tg.Apply(ctx, first); err != nil {
				t.Fatal(err)
			}
			r := runtime("pg-tt-replica")
			return r["pg-tt-2.backup"] != nil && r["pg-tt-2.backup"].OperationalState == "down"
		})

		// Failover: member 2 takes the leader key, member 1 crashed (gone
		// from the DCS) is fenced: the replica service's only server then
		// is member 2's backup twin.
		rs.rt.reset(nil)
		fo := place(trackedTwins(t, cluster("pg-tt", 3, 2, 2), func(i int, sv *services.Server) {
			sv.ForceUp, sv.ForceDown = i == 2, i == 1
		}, 1))
		res, err = tg.Apply(ctx, fo)
		if err != nil {
			t.Fatalf("failover: %v", err)
		}
		if res.Reloaded || !target.RuntimeOnly(res.Changes) {
			t.Fatalf("failover: %+v, want runtime changes only", res)
		}
		var flips []string
		for _, ch := range res.Changes {
			if ch.Kind == target.KindSetState && ch.Backend == "pg-tt-replica" {
				flips = append(flips, ch.Server+" -> "+target.StateOf(ch))
			}
			if strings.HasSuffix(ch.Server, services.BackupTwinSuffix) && ch.Backend == "pg-tt-replica" {
				t.Errorf("failover changed a tracking twin: %+v", ch)
			}
		}
		if want := []string{"pg-tt-2 -> drain"}; !slices.Equal(flips, want) {
			t.Errorf("failover flips in the replica service %v, want %v", flips, want)
		}
		reqs := rs.rt.requests()
		// 2.9.9: /runtime/servers/S?backend=B; 3.2.0: /runtime/backends/B/servers/S.
		put := func(backend, server string) int {
			return slices.IndexFunc(reqs, func(r string) bool {
				return strings.HasPrefix(r, "PUT ") && (strings.HasSuffix(r, "/runtime/servers/"+server+"?backend="+backend) ||
					strings.HasSuffix(r, "/runtime/backends/"+backend+"/servers/"+server))
			})
		}
		up, drain := put("pg-tt-primary", "pg-tt-2"), put("pg-tt-replica", "pg-tt-2")
		if up < 0 || drain < 0 || drain < up {
			t.Errorf("the new primary's force-up (request %d) must precede its normal twin's drain (request %d): %v", up, drain, reqs)
		}
		r := runtime("pg-tt-replica")
		if r["pg-tt-2.backup"].OperationalState != "up" || r["pg-tt-2.backup"].AdminState != "ready" {
			t.Errorf("the new primary's backup twin: %+v, want ready and UP with its forced-up tracked server", r["pg-tt-2.backup"])
		}
		if r["pg-tt-1.backup"].OperationalState != "down" {
			t.Errorf("the fenced old primary's backup twin: %+v, want DOWN with its fence", r["pg-tt-1.backup"])
		}
		if r["pg-tt-2"].AdminState != "drain" {
			t.Errorf("the new primary's normal twin: %+v, want drain", r["pg-tt-2"])
		}

		// An operator drains the new primary in the primary service: its
		// tracker inherits the drain. A new target (a restarted
		// controller: a full read) and the running one see nothing to do
		// on the tracker.
		if _, err := c.ReplaceRuntimeServer(ctx, "pg-tt-primary", "pg-tt-2", &models.RuntimeServer{AdminState: "drain"}); err != nil {
			t.Fatal(err)
		}
		// (Both APIs answer "maint" for the inherited drain.)
		if got := runtime("pg-tt-replica")["pg-tt-2.backup"].AdminState; got == "ready" {
			t.Errorf("the tracker reads admin %q under its drained tracked server, want the drain inherited", got)
		}
		fresh := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), opts)
		for name, tgt := range map[string]*dataplaneapi.Target{"restarted": fresh, "running": tg} {
			res, err := tgt.Apply(ctx, fo)
			if err != nil {
				t.Fatalf("%s target after the operator's drain: %v", name, err)
			}
			for _, ch := range res.Changes {
				if ch.Backend == "pg-tt-replica" && ch.Server == "pg-tt-2.backup" {
					t.Errorf("%s target changed the tracker: %+v", name, ch)
				}
			}
			if ch, err := tgt.Diff(ctx, fo); err != nil {
				t.Fatal(err)
			} else {
				for _, x := range ch {
					if x.Kind == target.KindSetState {
						t.Errorf("%s target: flips left after the apply: %+v", name, x)
					}
				}
			}
		}
	})
}

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

// offlineTracked is cluster() with no pg_offline_query member (the offline
// service's backups are every member but the primary, it selects none),
// laid out by trackedTwins with BackupIsReplicas set as Build sets it: the
// offline service's backup twins track the replica service's normal twins
// (CanTrackReplicas); intents sets the write services' health intents by
// member (1-based).
func offlineTracked(t testing.TB, svcs []services.Service, primary int, intents func(i int, sv *services.Server)) []services.Service {
	t.Helper()
	for i := range svcs {
		if svcs[i].Service != "offline" {
			continue
		}
		svcs[i].BackupIsReplicas = true
		var keep []services.Server
		for j, sv := range svcs[0].Servers { // primary: every member
			if j+1 != primary {
				sv.Port, sv.Backup = svcs[i].DestPort, true
				keep = append(keep, sv)
			}
		}
		svcs[i].Servers = keep
	}
	return trackedTwins(t, svcs, intents)
}

// TestRealTwinsTrackedOffline: through each real Data Plane API over a real
// HAProxy 2.6, the offline service's backup twins track the replica
// service's normal twins. They come up with them, the primary's takes its
// replica twin's maint; a switchover flips the replica service only (no
// request for the offline backend) and the offline twins follow: the new
// primary's out with its drained replica twin, the old primary's in. A
// restarted controller and the running one find nothing to do there.
func TestRealTwinsTrackedOffline(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		c := rs.c
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		opts := dataplaneapi.TargetOptions{ReloadTimeout: 30 * time.Second, ReloadPollInterval: 100 * time.Millisecond,
			AdminReadEvery: time.Hour}
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
		active := func(step string, want map[string]bool) {
			t.Helper()
			r := runtime("pg-to-offline")
			for name, on := range want {
				if r[name] == nil || (r[name].AdminState == "ready") != on {
					t.Errorf("%s: pg-to-offline/%s %+v, want active %v", step, name, r[name], on)
				}
			}
		}
		noOffline := func(step string, changes []target.Change) {
			t.Helper()
			for _, ch := range changes {
				if ch.Backend == "pg-to-offline" {
					t.Errorf("%s: a change in the offline backend: %+v", step, ch)
				}
			}
		}

		first := place(offlineTracked(t, cluster("pg-to", 3, 3, 1), 1, func(int, *services.Server) {}))
		res, err := tg.Apply(ctx, first)
		if err != nil || !res.Reloaded {
			t.Fatalf("create: %+v %v", res, err)
		}
		text, _, err := c.GetRawConfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"pg-to-1", "pg-to-2", "pg-to-3"} {
			if !strings.Contains(text, "server "+m+".backup ") || !strings.Contains(text, "track pg-to-replica/"+m+" ") {
				t.Fatalf("%s.backup does not track pg-to-replica/%s:\n%s", m, m, text)
			}
		}
		waitUntil(t, 30*time.Second, func() bool {
			res, err := tg.Apply(ctx, first)
			if err != nil {
				t.Fatal(err)
			}
			return len(res.Changes) == 0
		})
		active("create", map[string]bool{"pg-to-1.backup": false, "pg-to-2.backup": true, "pg-to-3.backup": true})

		// Switchover from member 1 to member 2: the old primary fenced, the
		// new one forced UP.
		rs.rt.reset(nil)
		so := place(offlineTracked(t, cluster("pg-to", 3, 3, 2), 2, func(i int, sv *services.Server) {
			sv.ForceUp, sv.ForceDown = i == 2, i == 1
		}))
		res, err = tg.Apply(ctx, so)
		if err != nil {
			t.Fatalf("switchover: %v", err)
		}
		if res.Reloaded || !target.RuntimeOnly(res.Changes) {
			t.Fatalf("switchover: %+v, want runtime changes only", res)
		}
		noOffline("switchover", res.Changes)
		var flips []string
		for _, ch := range res.Changes {
			if ch.Kind == target.KindSetState {
				flips = append(flips, ch.Backend+"/"+ch.Server+" -> "+target.StateOf(ch))
			}
		}
		slices.Sort(flips)
		if want := []string{"pg-to-replica/pg-to-1 -> ready", "pg-to-replica/pg-to-2 -> drain"}; !slices.Equal(flips, want) {
			t.Errorf("switchover flips %v, want %v", flips, want)
		}
		for _, r := range rs.rt.requests() {
			if strings.Contains(r, "pg-to-offline") {
				t.Errorf("a request for the offline backend: %s", r)
			}
		}
		active("switchover", map[string]bool{"pg-to-1.backup": true, "pg-to-2.backup": false, "pg-to-3.backup": true})

		fresh := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), opts)
		for name, tgt := range map[string]*dataplaneapi.Target{"restarted": fresh, "running": tg} {
			res, err := tgt.Apply(ctx, so)
			if err != nil {
				t.Fatalf("%s target: %v", name, err)
			}
			noOffline(name, res.Changes)
			if ch, err := tgt.Diff(ctx, so); err != nil {
				t.Fatal(err)
			} else {
				for _, x := range ch {
					if x.Kind == target.KindSetState {
						t.Errorf("%s target: flips left after the apply: %+v", name, x)
					}
				}
			}
		}
		active("after the restarted controller", map[string]bool{"pg-to-1.backup": true, "pg-to-2.backup": false, "pg-to-3.backup": true})
	})
}

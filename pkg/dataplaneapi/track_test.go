package dataplaneapi_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// trackedFailover is n clusters after a crash failover from member 1 to
// member 2 as the planner hands it to a twins target: the fence and the
// force-up set in both write services, then the twin layout, in which the
// default service tracks the primary service.
func trackedFailover(t testing.TB, n int) []services.Service {
	t.Helper()
	var out []services.Service
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("pg-f%03d", i)
		svcs := cluster(name, 10+i, 3, 2)
		for j := range svcs {
			if !services.WriteCheck(svcs[j].Check) {
				continue
			}
			for k := range svcs[j].Servers {
				sv := &svcs[j].Servers[k]
				sv.ForceDown, sv.ForceUp = sv.Name == name+"-1", sv.Name == name+"-2"
			}
		}
		out = append(out, twinned(t, svcs)...)
	}
	return out
}

// TestTwinsTrackedMassFailover: through the API (v2 and v3 doubles), a
// mass failover in the twin layout makes one force-up and one fence read
// per cluster (the primary service's) and no request at all for the
// default service, whose servers follow the servers they track.
func TestTwinsTrackedMassFailover(t *testing.T) {
	const n = 10
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			h := newTwinsHarness(t, v)
			base := fleetTwins(t, n, func(int) int { return 1 })
			for _, d := range base {
				if d.Service == "default" && (len(d.Servers) == 0 || d.Servers[0].Track == "") {
					t.Fatalf("%s does not track the primary service: %+v", d.Name, d.Servers)
				}
			}
			h.apply(t, "create", base)
			h.apply(t, "settle", base)
			for i := 0; i < n; i++ {
				// The dead old primary, and the new one DOWN by its checks.
				h.srv.SetOperationalState(fmt.Sprintf("pg-f%03d-primary", i), fmt.Sprintf("pg-f%03d-1", i), "down")
				h.srv.SetOperationalState(fmt.Sprintf("pg-f%03d-primary", i), fmt.Sprintf("pg-f%03d-2", i), "down")
			}
			res := h.apply(t, "mass failover", trackedFailover(t, n))
			reqs := h.srv.Requests()
			for _, r := range reqs {
				if strings.HasSuffix(r.Query.Get("backend"), "-default") {
					t.Errorf("a request for a default backend: %s %s?%s", r.Method, r.Path, r.Query.Encode())
				}
			}
			if got := len(forcedWrites(reqs)); got != n {
				t.Errorf("%d forced writes, want %d (one force-up per cluster): %s", got, n, strings.Join(forcedWrites(reqs), ", "))
			}
			if got := runtimeGets(reqs); got != n {
				t.Errorf("%d runtime GETs, want %d (one fence read per cluster)", got, n)
			}
			for _, c := range res.Changes {
				if strings.HasSuffix(c.Backend, "-default") {
					t.Errorf("change for a default backend: %s %s/%s", c.Kind, c.Backend, c.Server)
				}
			}
			c, err := dataplaneapi.New(h.srv.URL(), dataplaneapi.Options{Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < n; i++ {
				rs, err := c.GetRuntimeServers(h.ctx, fmt.Sprintf("pg-f%03d-default", i))
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rs {
					want := map[bool]string{true: "up", false: "down"}[strings.HasSuffix(r.Name, "-2") || strings.HasSuffix(r.Name, "-3")]
					if r.OperationalState != want {
						t.Errorf("pg-f%03d-default/%s: %s, want %s as the server it tracks", i, r.Name, r.OperationalState, want)
					}
				}
			}
			if again := h.apply(t, "again", trackedFailover(t, n)); len(again.Changes) != 0 {
				t.Errorf("again: %s, want nothing", kinds(again.Changes))
			}
		})
	}
}

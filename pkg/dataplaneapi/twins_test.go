package dataplaneapi_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// fleetTwins is n clusters of 3 members in the twin layout; cluster i's
// primary is primary(i).
func fleetTwins(t testing.TB, n int, primary func(i int) int) []services.Service {
	t.Helper()
	var out []services.Service
	for i := 0; i < n; i++ {
		out = append(out, twinned(t, cluster(fmt.Sprintf("pg-f%03d", i), 10+i, 3, primary(i)))...)
	}
	return out
}

type clock struct {
	mu  sync.Mutex
	now time.Time
	// tick: how far each Now moves the clock after it (0: it stands).
	tick time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.now
	c.now = c.now.Add(c.tick)
	return t
}

func (c *clock) setTick(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.tick = d }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// runtimeGets counts the requests that read one backend's runtime servers.
func runtimeGets(reqs []dpapitest.Request) int {
	n := 0
	for _, r := range reqs {
		if r.Method == "GET" && r.Path == "/runtime/servers" {
			n++
		}
	}
	return n
}

// TestTwinsReadBackIsOChanged: through the API, the twin layout's runtime
// admin states cost what changed, not the fleet: an idle apply is 2
// requests (configuration version, running process pid), one cluster's
// switchover reads back only its 2 twin backends; an operator's change is
// found by the periodic full read (AdminReadEvery), a restarted HAProxy at
// once (its pid), and both are repaired; the controller's own reload does
// not make a full read.
func TestTwinsReadBackIsOChanged(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			const n = 20
			srv := dpapitest.NewServer(t, dpapitest.WithAPIVersion(v))
			c, err := dataplaneapi.New(srv.URL(), dataplaneapi.Options{Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			clk := &clock{now: time.Unix(1_800_000_000, 0)}
			tg := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{
				ReloadPollInterval: 2 * time.Millisecond, ReloadTimeout: 5 * time.Second, Backoff: time.Millisecond,
				AdminReadEvery: time.Hour, FullReadEvery: 24 * time.Hour, Now: clk.Now})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			apply := func(step string, desired []services.Service) target.Result {
				t.Helper()
				srv.ResetRequests()
				res, err := tg.Apply(ctx, desired)
				if err != nil {
					t.Fatalf("%s: %v", step, err)
				}
				return res
			}
			first := fleetTwins(t, n, func(int) int { return 1 })
			apply("create", first)
			// The double starts every server ready: the inactive twins are
			// set at the next apply (the real HAProxy has them disabled).
			apply("settle", first)
			before := tg.AdminReads()

			res := apply("idle", first)
			if len(res.Changes) != 0 {
				t.Fatalf("idle: %+v", res.Changes)
			}
			if got := srv.Requests(); len(got) != 2 {
				t.Errorf("idle apply: %d requests, want 2 (version, runtime info): %+v", len(got), paths(got))
			}

			// One cluster's switchover: the PUTs' answers (the state the API
			// read from HAProxy after each change) are the read-back: no GET.
			sw := fleetTwins(t, n, func(i int) int { return map[bool]int{true: 2, false: 1}[i == 7] })
			res = apply("switchover", sw)
			if res.Reloaded || !target.RuntimeOnly(res.Changes) || len(res.Changes) == 0 {
				t.Fatalf("switchover: %+v", res)
			}
			reqs := srv.Requests()
			if g := runtimeGets(reqs); g != 0 {
				t.Errorf("switchover read %d backends' runtime servers, want 0 (the PUT answers are the read-back): %v", g, paths(reqs))
			}
			if len(reqs) != 2+len(res.Changes) {
				t.Errorf("switchover: %d requests for %d changes, want version + runtime info + one PUT per change: %v", len(reqs), len(res.Changes), paths(reqs))
			}
			if after := tg.AdminReads(); after.Full != before.Full {
				t.Errorf("full reads %d -> %d during idle and switchover", before.Full, after.Full)
			}

			// An operator readies an inactive twin: not seen before the
			// periodic full read, repaired by it.
			srv.SetAdminState("pg-f003-replica", "pg-f003-1", "ready")
			if res := apply("operator, within AdminReadEvery", sw); len(res.Changes) != 0 {
				t.Errorf("the cached states were not used: %+v", res.Changes)
			}
			clk.add(time.Hour)
			res = apply("periodic full read", sw)
			if len(res.Changes) != 1 || res.Changes[0].Backend != "pg-f003-replica" || res.Changes[0].Server != "pg-f003-1" || target.StateOf(res.Changes[0]) != "drain" {
				t.Errorf("periodic full read: want pg-f003-1 drained again, got %+v", res.Changes)
			}
			if g := runtimeGets(srv.Requests()); g < 2*n {
				t.Errorf("periodic full read: %d runtime reads, want every twin backend (%d)", g, 2*n)
			}

			// HAProxy restarted behind our back: every state back to the
			// file's; the new pid makes the next apply read everything.
			srv.RestartHAProxy()
			res = apply("restart", sw)
			inactive := 0
			for _, s := range sw {
				for _, sv := range s.Servers {
					if sv.Disabled {
						inactive++
					}
				}
			}
			if len(res.Changes) != inactive || !target.RuntimeOnly(res.Changes) {
				t.Errorf("restart: %d changes (runtime only: %v), want the %d inactive twins set again", len(res.Changes), target.RuntimeOnly(res.Changes), inactive)
			}
			apply("after restart", sw)
			if res := apply("idle after restart", sw); len(res.Changes) != 0 || len(srv.Requests()) != 2 {
				t.Errorf("idle after restart: %+v, %d requests", res.Changes, len(srv.Requests()))
			}

			// An inventory change (a fourth member in one cluster) reloads:
			// the controller's own reload reads back only what it touched.
			full := tg.AdminReads().Full
			grown := append([]services.Service(nil), sw...)
			four := twinned(t, cluster("pg-f011", 10+11, 4, 1))
			for i := range grown {
				for _, s := range four {
					if grown[i].Name == s.Name {
						grown[i] = s
					}
				}
			}
			pid := srv.PID()
			res = apply("grow", grown)
			if !res.Reloaded || srv.PID() == pid {
				t.Fatalf("grow: %+v (pid %d -> %d)", res, pid, srv.PID())
			}
			// One pid read before the write serves both the admin-state
			// cache and the reload's read-back.
			pidReads := 0
			for _, r := range srv.Requests() {
				if r.Method == "POST" {
					break
				}
				if r.Method == "GET" && r.Path == "/runtime/info" {
					pidReads++
				}
			}
			if pidReads != 1 {
				t.Errorf("grow: %d pid reads before the write, want 1: %v", pidReads, paths(srv.Requests()))
			}
			apply("grow, settle", grown)
			if res := apply("idle after grow", grown); len(res.Changes) != 0 || len(srv.Requests()) != 2 {
				t.Errorf("idle after grow: %+v, %d requests: %v", res.Changes, len(srv.Requests()), paths(srv.Requests()))
			}
			if got := tg.AdminReads().Full; got != full {
				t.Errorf("the controller's own reload made %d full reads", got-full)
			}
		})
	}
}

// TestTwinsPutAnswerDiffers: a runtime PUT whose answer (the state the API
// read from the running HAProxy after the change) is not the state asked
// for makes the driver read that backend and set it again once; if it still
// differs the apply fails naming the server, and once the outside hold ends
// the next apply reads the backend again and sets it.
func TestTwinsPutAnswerDiffers(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			srv := dpapitest.NewServer(t, dpapitest.WithAPIVersion(v))
			c, err := dataplaneapi.New(srv.URL(), dataplaneapi.Options{Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			tg := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{
				ReloadPollInterval: 2 * time.Millisecond, ReloadTimeout: 5 * time.Second, Backoff: time.Millisecond,
				AdminReadEvery: time.Hour, FullReadEvery: 24 * time.Hour})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			first := fleetTwins(t, 3, func(int) int { return 1 })
			for _, step := range []string{"create", "settle"} {
				if _, err := tg.Apply(ctx, first); err != nil {
					t.Fatalf("%s: %v", step, err)
				}
			}
			sw := fleetTwins(t, 3, func(i int) int { return map[bool]int{true: 2, false: 1}[i == 1] })
			// The switchover activates pg-f001-2 in the replica backend
			// (the old primary's backup twin goes, the member itself comes).
			var held *target.Change
			for _, d := range sw {
				if d.Name != "pg-f001-replica" {
					continue
				}
				for _, sv := range d.Servers {
					if services.AdminWord(d, sv) == "ready" && sv.Name == "pg-f001-1" {
						held = &target.Change{Backend: d.Name, Server: sv.Name}
					}
				}
			}
			if held == nil {
				t.Fatalf("no ready pg-f001-1 in pg-f001-replica after the switchover: %+v", sw)
			}
			srv.HoldAdminState(held.Backend, held.Server, "maint")
			srv.ResetRequests()
			_, err = tg.Apply(ctx, sw)
			if err == nil || !strings.Contains(err.Error(), held.Backend+"/"+held.Server) {
				t.Fatalf("apply with a held state: err %v, want one naming %s/%s", err, held.Backend, held.Server)
			}
			reqs := srv.Requests()
			reads, puts := 0, 0
			for _, r := range reqs {
				if r.Method == "GET" && r.Path == "/runtime/servers" {
					reads++
					if r.Query.Get("backend") != held.Backend {
						t.Errorf("read a backend whose answers were right: %s", r.Query.Get("backend"))
					}
				}
				if r.Method == "PUT" && strings.HasSuffix(r.Path, "/"+held.Server) && r.Query.Get("backend") == held.Backend {
					puts++
				}
			}
			if reads != 2 || puts != 2 {
				t.Errorf("held server: %d backend reads, %d PUTs; want 2 and 2 (read, set again, read): %v", reads, puts, paths(reqs))
			}

			srv.HoldAdminState(held.Backend, held.Server, "")
			res, err := tg.Apply(ctx, sw)
			if err != nil {
				t.Fatalf("after the hold ended: %v", err)
			}
			fixed := false
			for _, ch := range res.Changes {
				if ch.Backend == held.Backend && ch.Server == held.Server && target.StateOf(ch) == "ready" {
					fixed = true
				}
			}
			if !fixed {
				t.Errorf("after the hold ended: %s/%s not set ready: %+v", held.Backend, held.Server, res.Changes)
			}
			if res, err := tg.Apply(ctx, sw); err != nil || len(res.Changes) != 0 {
				t.Errorf("idle: %+v %v", res.Changes, err)
			}
		})
	}
}

func paths(reqs []dpapitest.Request) []string {
	out := make([]string, 0, len(reqs))
	for _, r := range reqs {
		out = append(out, r.Method+" "+r.Path+"?"+r.Query.Encode())
	}
	return out
}

// TestTwinsWeightsWithoutReload: in the twin layout, write fences on many
// clusters at once (a mass failover) are weight changes only: one raw POST
// with skip_reload whose runtime actions set the running weights, no
// reload (before: a raw POST with a reload per fence and per lift).
func TestTwinsWeightsWithoutReload(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			const n = 20
			srv := dpapitest.NewServer(t, dpapitest.WithAPIVersion(v))
			c, err := dataplaneapi.New(srv.URL(), dataplaneapi.Options{Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			tg := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{
				ReloadPollInterval: 2 * time.Millisecond, ReloadTimeout: 5 * time.Second, Backoff: time.Millisecond})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			first := fleetTwins(t, n, func(int) int { return 1 })
			for _, step := range []string{"create", "settle"} {
				if _, err := tg.Apply(ctx, first); err != nil {
					t.Fatalf("%s: %v", step, err)
				}
			}
			fence := func(w int) []services.Service {
				out := fleetTwins(t, n, func(int) int { return 1 })
				for i := range out {
					if out[i].Service != "primary" && out[i].Service != "default" {
						continue
					}
					for j := range out[i].Servers {
						if strings.HasSuffix(out[i].Servers[j].Name, "-1") {
							out[i].Servers[j].Weight = w
						}
					}
				}
				return out
			}
			for _, w := range []int{0, 100} {
				reloads := srv.ReloadCount()
				srv.ResetRequests()
				desired := fence(w)
				res, err := tg.Apply(ctx, desired)
				if err != nil {
					t.Fatalf("weight %d: %v", w, err)
				}
				if res.Reloaded || srv.ReloadCount() != reloads || len(res.Changes) != 2*n {
					t.Errorf("weight %d: reloaded %v (reloads %d -> %d), %d changes, want %d and no reload", w, res.Reloaded, reloads, srv.ReloadCount(), len(res.Changes), 2*n)
				}
				posts := srv.Writes()
				if len(posts) != 1 || posts[0].Path != "/configuration/raw" || posts[0].Query.Get("skip_reload") != "true" ||
					strings.Count(posts[0].RuntimeActions, "SetServerWeight") != 2*n {
					t.Fatalf("weight %d: writes %v, want one raw POST with skip_reload and %d SetServerWeight actions", w, paths(posts), 2*n)
				}
				for i := 0; i < n; i++ {
					for _, svc := range []string{"primary", "default"} {
						name := fmt.Sprintf("pg-f%03d", i)
						if got, ok := srv.RuntimeWeight(name+"-"+svc, name+"-1"); !ok || got != int64(w) {
							t.Errorf("weight %d: running weight of %s-%s/%s-1: %d (set: %v)", w, name, svc, name, got, ok)
						}
					}
				}
				if ch, err := tg.Diff(ctx, desired); err != nil || len(ch) != 0 {
					t.Errorf("weight %d: not converged: %+v %v", w, ch, err)
				}
			}
		})
	}
}

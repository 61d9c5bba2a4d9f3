package dataplaneapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// putFailer is a transport that answers 500, without sending it, every
// runtime PUT of server `server` in backend `backend` whose body contains
// `body`, while on, but the first `pass` of them.
type putFailer struct {
	next                  http.RoundTripper
	backend, server, body string
	pass                  int
	mu                    sync.Mutex
	on                    bool
	failed                int
}

func (f *putFailer) set(on bool) { f.mu.Lock(); defer f.mu.Unlock(); f.on = on }

func (f *putFailer) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.failed }

func (f *putFailer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPut || !strings.HasSuffix(req.URL.Path, "/servers/"+f.server) || req.Body == nil {
		return f.next.RoundTrip(req)
	}
	backend := req.URL.Query().Get("backend") // v2
	if i := strings.Index(req.URL.Path, "/backends/"); i >= 0 {
		backend, _, _ = strings.Cut(req.URL.Path[i+len("/backends/"):], "/") // v3
	}
	b, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	fail := f.on && backend == f.backend && bytes.Contains(b, []byte(f.body))
	if fail && f.pass > 0 {
		f.pass--
		fail = false
	}
	if fail {
		f.failed++
	}
	f.mu.Unlock()
	if fail {
		msg := `{"code":500,"message":"runtime: injected failure"}`
		return &http.Response{StatusCode: 500, Status: "500 Internal Server Error", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(msg)),
			ContentLength: int64(len(msg)), Request: req}, nil
	}
	req.Body = io.NopCloser(bytes.NewReader(b))
	req.ContentLength = int64(len(b))
	return f.next.RoundTrip(req)
}

// failerHarness is newTwinsHarness whose runtime PUTs go through f.
func failerHarness(t *testing.T, v int, f *putFailer) *twinsHarness {
	t.Helper()
	srv := dpapitest.NewServer(t, dpapitest.WithAPIVersion(v))
	f.next = http.DefaultTransport
	c, err := dataplaneapi.New(srv.URL(), dataplaneapi.Options{Timeout: 5 * time.Second, HTTPClient: &http.Client{Transport: f}})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	tg := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{
		ReloadPollInterval: 2 * time.Millisecond, ReloadTimeout: 5 * time.Second, Backoff: time.Millisecond,
		AdminReadEvery: time.Hour, FullReadEvery: 24 * time.Hour, Now: clk.Now})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return &twinsHarness{srv: srv, tg: tg, clk: clk, ctx: ctx}
}

// readyTwins reads the ready servers of every twin backend of desired.
func readyTwins(t *testing.T, h *twinsHarness, desired []services.Service) map[string]map[string]bool {
	t.Helper()
	c, err := dataplaneapi.New(h.srv.URL(), dataplaneapi.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	for _, d := range desired {
		if d.Layout != services.LayoutTwins {
			continue
		}
		rts, err := c.GetRuntimeServers(h.ctx, d.Name)
		if err != nil {
			t.Fatal(err)
		}
		out[d.Name] = map[string]bool{}
		for _, r := range rts {
			if r.AdminState == "ready" {
				out[d.Name][r.Name] = true
			}
		}
	}
	return out
}

// wantReady is what desired has ready in each twin backend.
func wantReady(desired []services.Service) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, d := range desired {
		if d.Layout != services.LayoutTwins {
			continue
		}
		out[d.Name] = map[string]bool{}
		for _, sv := range d.Servers {
			if services.AdminWord(d, sv) == "ready" {
				out[d.Name][sv.Name] = true
			}
		}
	}
	return out
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// writerTwinned is writerTwins with the replica and offline services laid
// out as twins too (twinned): every role change is runtime flips.
func writerTwinned(t *testing.T, n int, primary int) []services.Service {
	t.Helper()
	return writerTwinnedWith(t, n, primary, nil)
}

// writerTwinnedWith is writerTwinned with mod applied to each cluster's
// services before they are laid out as twins.
func writerTwinnedWith(t *testing.T, n int, primary int, mod func(name string, svcs []services.Service) []services.Service) []services.Service {
	t.Helper()
	var out []services.Service
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("pg-f%03d", i)
		svcs := cluster(name, 10+i, 3, primary)
		w := svcs[0] // primary: every member, /primary
		w.Name, w.Service, w.Port = name+"-writer", "writer", 5439
		w.RoleDependent = true
		w.Candidates = append([]services.Server(nil), svcs[0].Servers...)
		w.Candidates[primary-1].Primary = true // as Build marks candidates
		w.Servers = []services.Server{svcs[0].Servers[primary-1]}
		for i := range svcs {
			if svcs[i].Service != "replica" && svcs[i].Service != "offline" {
				continue
			}
			svcs[i].RoleDependent = true
			for _, sv := range svcs[0].Servers {
				sv.Port = svcs[i].DestPort
				svcs[i].Candidates = append(svcs[i].Candidates, sv)
			}
		}
		svcs = append(svcs, w)
		if mod != nil {
			svcs = mod(name, svcs)
		}
		tw, err := services.Twins(svcs)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tw...)
	}
	return out
}

// writerFailover is writerTwinned(n, 2) failing over from member 1: member
// 1 fenced, member 2 forced UP in the write services.
func writerFailover(t *testing.T, n int) []services.Service {
	return writerTwinnedWith(t, n, 2, func(name string, svcs []services.Service) []services.Service {
		svcs = force(svcs, name+"-1", func(sv *services.Server) { sv.ForceDown = true })
		return force(svcs, name+"-2", func(sv *services.Server) { sv.ForceUp = true })
	})
}

// checkIsolated checks, after an apply whose PUT in backend bad failed,
// that every other twin backend is as desired, that bad kept every twin
// it was to deactivate (outgoing: when kept is set) and that the
// activations in bad are made but the failed one.
func checkIsolated(t *testing.T, got, before, after map[string]map[string]bool, bad, failed string, kept bool) {
	t.Helper()
	for b, want := range after {
		if b == bad {
			continue
		}
		if !sameSet(got[b], want) {
			t.Errorf("%s ready %v, want %v: another backend's failure held it back", b, got[b], want)
		}
	}
	for sv := range after[bad] {
		if sv != failed && !got[bad][sv] {
			t.Errorf("%s/%s not ready: its activation was not made", bad, sv)
		}
	}
	for sv := range before[bad] {
		if after[bad][sv] {
			continue
		}
		if kept && !got[bad][sv] {
			t.Errorf("%s/%s deactivated although %s/%s's activation failed (incoming before outgoing)", bad, sv, bad, failed)
		}
		if !kept && sv != failed && got[bad][sv] {
			t.Errorf("%s/%s still ready: held back by a failed deactivation", bad, sv)
		}
	}
}

// TestTwinsFailedActivationHoldsBackItsBackendOnly: in a switchover of 3
// clusters, one replica service's activation PUT fails (500): its
// backend's deactivations are held back (never zero active servers),
// everything else goes through (the write services' outgoing twins went
// first: their activations are made, in that cluster too), the apply fails
// naming the PUT and what it held back, and the next apply completes it.
func TestTwinsFailedActivationHoldsBackItsBackendOnly(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			f := &putFailer{backend: "pg-f001-replica", server: "pg-f001-1", body: `"admin_state":"ready"`}
			h := failerHarness(t, v, f)
			base := writerTwinned(t, 3, 1)
			h.apply(t, "create", base)
			h.apply(t, "settle", base)
			f.set(true)
			sw := writerTwinned(t, 3, 2)
			_, err := h.tg.Apply(h.ctx, sw)
			if f.count() == 0 {
				t.Fatal("the failing PUT was never sent")
			}
			if err == nil {
				t.Fatal("the switchover applied without error; pg-f001-replica/pg-f001-1's PUT failed")
			}
			for _, want := range []string{"pg-f001-replica/pg-f001-1", "pg-f001-replica/pg-f001-2"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
			for _, not := range []string{"pg-f000", "pg-f002"} {
				if strings.Contains(err.Error(), not) {
					t.Errorf("error %q names %s", err, not)
				}
			}
			checkIsolated(t, readyTwins(t, h, sw), wantReady(base), wantReady(sw), "pg-f001-replica", "pg-f001-1", true)

			f.set(false)
			h.apply(t, "retry", sw)
			if got, want := readyTwins(t, h, sw), wantReady(sw); !sameSet(got["pg-f001-replica"], want["pg-f001-replica"]) {
				t.Errorf("after the retry pg-f001-replica ready %v, want %v", got["pg-f001-replica"], want["pg-f001-replica"])
			}
			if res := h.apply(t, "idle", sw); len(res.Changes) != 0 {
				t.Errorf("idle after the retry: %+v", res.Changes)
			}
		})
	}
}

// TestTwinsFailedDeactivationHoldsNothingBack: in a switchover of 3
// clusters, one replica service's deactivation PUT fails (500): nothing
// else is held back, the apply fails naming it, the next apply makes it.
func TestTwinsFailedDeactivationHoldsNothingBack(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			f := &putFailer{backend: "pg-f001-replica", server: "pg-f001-2", body: `"admin_state":"`}
			h := failerHarness(t, v, f)
			base := writerTwinned(t, 3, 1)
			h.apply(t, "create", base)
			h.apply(t, "settle", base)
			f.set(true)
			sw := writerTwinned(t, 3, 2)
			_, err := h.tg.Apply(h.ctx, sw)
			if f.count() == 0 {
				t.Fatal("the failing PUT was never sent")
			}
			if err == nil || !strings.Contains(err.Error(), "pg-f001-replica/pg-f001-2") {
				t.Fatalf("err %v, want one naming pg-f001-replica/pg-f001-2", err)
			}
			if strings.Contains(err.Error(), "held back") {
				t.Errorf("error %q: a failed deactivation holds nothing back", err)
			}
			checkIsolated(t, readyTwins(t, h, sw), wantReady(base), wantReady(sw), "pg-f001-replica", "pg-f001-2", false)
			if got := readyTwins(t, h, sw)["pg-f001-replica"]; !got["pg-f001-2"] {
				t.Errorf("pg-f001-replica/pg-f001-2 not ready although its deactivation failed: %v", got)
			}

			f.set(false)
			h.apply(t, "retry", sw)
			if got, want := readyTwins(t, h, sw), wantReady(sw); !sameSet(got["pg-f001-replica"], want["pg-f001-replica"]) {
				t.Errorf("after the retry pg-f001-replica ready %v, want %v", got["pg-f001-replica"], want["pg-f001-replica"])
			}
			if res := h.apply(t, "idle", sw); len(res.Changes) != 0 {
				t.Errorf("idle after the retry: %+v", res.Changes)
			}
		})
	}
}

// TestTwinsMassFailoverFailedActivationIsolated: a mass failover of 3
// clusters (a role-dependent write service laid out as twins): the leader
// keys expire (the old primaries fenced, read), then the new leaders come
// (their apply reads nothing: every flip in one applyFlips), and one
// replica service's activation PUT fails: every new primary is activated
// and forced UP all the same, every other twin backend switched, the
// failing backend keeps its outgoing twins, the apply fails naming the
// PUT, and the next apply completes it.
func TestTwinsMassFailoverFailedActivationIsolated(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			f := &putFailer{backend: "pg-f001-replica", server: "pg-f001-1", body: `"admin_state":"ready"`}
			h := failerHarness(t, v, f)
			base := writerTwinned(t, 3, 1)
			h.apply(t, "create", base)
			h.apply(t, "settle", base)
			for i := 0; i < 3; i++ {
				h.srv.SetOperationalState(fmt.Sprintf("pg-f%03d-primary", i), fmt.Sprintf("pg-f%03d-2", i), "down")
			}
			h.apply(t, "expiry", writerTwinnedWith(t, 3, 1, func(name string, svcs []services.Service) []services.Service {
				return force(svcs, name+"-1", func(sv *services.Server) { sv.ForceDown = true })
			}))
			f.set(true)
			h.srv.ResetRequests()
			fo := writerFailover(t, 3)
			_, err := h.tg.Apply(h.ctx, fo)
			if f.count() == 0 {
				t.Fatal("the failing PUT was never sent")
			}
			if err == nil || !strings.Contains(err.Error(), "pg-f001-replica/pg-f001-1") {
				t.Fatalf("err %v, want one naming pg-f001-replica/pg-f001-1", err)
			}
			for _, want := range []string{"held back", "pg-f001-replica/pg-f001-2"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
			acts := activations(h.srv.Writes())
			for i := 0; i < 3; i++ {
				for _, p := range []string{fmt.Sprintf("pg-f%03d-primary/pg-f%03d-2 up", i, i), fmt.Sprintf("pg-f%03d-writer/pg-f%03d-2 ready", i, i)} {
					if !hasPrefixed(acts, p) {
						t.Errorf("%s not sent: %v", p, acts)
					}
				}
			}
			checkIsolated(t, readyTwins(t, h, fo), wantReady(base), wantReady(fo), "pg-f001-replica", "pg-f001-1", true)

			f.set(false)
			h.apply(t, "retry", fo)
			if got, want := readyTwins(t, h, fo), wantReady(fo); !sameSet(got["pg-f001-replica"], want["pg-f001-replica"]) {
				t.Errorf("after the retry pg-f001-replica ready %v, want %v", got["pg-f001-replica"], want["pg-f001-replica"])
			}
		})
	}
}

// twoMembers is n clusters of 2 members whose primary is member primary,
// their replica and offline services laid out as twins (trackedTwins: the
// replica service's backup twins track the primary service's servers),
// intents set in the write services.
func twoMembers(t *testing.T, n, primary int, intents func(i int, sv *services.Server)) []services.Service {
	t.Helper()
	var out []services.Service
	for i := 0; i < n; i++ {
		out = append(out, trackedTwins(t, cluster(fmt.Sprintf("pg-f%03d", i), 10+i, 2, primary), intents)...)
	}
	return out
}

// TestTwinsEarlyActivationFailureHoldsBackMainRun: a failover of 3
// clusters of 2 members (member 2 forced UP, member 1 fenced, their health
// read by the apply): the read services' flips go while the health is
// read (flipsBeforeHealth), but the deactivations of the replica services
// (their incoming twin tracks the new primary) wait for its force-up in
// the main run. One replica service's activation among the early flips
// fails (500): that backend keeps its outgoing twin (the main run does not
// deactivate it: incoming before outgoing across the two runs), every
// other cluster completes, the apply fails naming the PUT and what it held
// back, and the next apply completes it.
func TestTwinsEarlyActivationFailureHoldsBackMainRun(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			f := &putFailer{backend: "pg-f001-replica", server: "pg-f001-1", body: `"admin_state":"ready"`}
			h := failerHarness(t, v, f)
			base := twoMembers(t, 3, 1, func(int, *services.Server) {})
			h.apply(t, "create", base)
			h.apply(t, "settle", base)
			f.set(true)
			fo := twoMembers(t, 3, 2, func(i int, sv *services.Server) { sv.ForceUp, sv.ForceDown = i == 2, i == 1 })
			_, err := h.tg.Apply(h.ctx, fo)
			if f.count() == 0 {
				t.Fatal("the failing PUT was never sent")
			}
			if err == nil {
				t.Fatal("the failover applied without error; pg-f001-replica/pg-f001-1's PUT failed")
			}
			for _, want := range []string{"pg-f001-replica/pg-f001-1", "held back", "pg-f001-replica/pg-f001-2"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
			for _, not := range []string{"pg-f000", "pg-f002"} {
				if strings.Contains(err.Error(), not) {
					t.Errorf("error %q names %s", err, not)
				}
			}
			checkIsolated(t, readyTwins(t, h, fo), wantReady(base), wantReady(fo), "pg-f001-replica", "pg-f001-1", true)

			f.set(false)
			h.apply(t, "retry", fo)
			if got, want := readyTwins(t, h, fo), wantReady(fo); !sameSet(got["pg-f001-replica"], want["pg-f001-replica"]) {
				t.Errorf("after the retry pg-f001-replica ready %v, want %v", got["pg-f001-replica"], want["pg-f001-replica"])
			}
			if res := h.apply(t, "idle", fo); len(res.Changes) != 0 {
				t.Errorf("idle after the retry: %+v", res.Changes)
			}
		})
	}
}

// putsTo counts the runtime PUTs of backend/server in reqs.
func putsTo(reqs []dpapitest.Request, backend, server string) int {
	n := 0
	for _, r := range reqs {
		if r.Method == http.MethodPut && r.Path == "/runtime/servers/"+server && r.Query.Get("backend") == backend {
			n++
		}
	}
	return n
}

// TestTwinsFailedRepairActivationHoldsBackItsBackendOnly: in a switchover
// of 3 clusters, outside parties hold admin states against it (the PUTs
// answer what they hold): two replica services' outgoing twins stay ready,
// and one of them an incoming twin in maint, so that the apply reads them
// back and repairs them (verifyFlips). The repair activation fails (500):
// it holds back its own backend's repair deactivation (never zero active
// servers) and nothing else: the other backend's repair deactivation is
// sent; the apply fails naming the PUT and what it held back; the next
// apply, the holds gone, completes it.
func TestTwinsFailedRepairActivationHoldsBackItsBackendOnly(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			// The switchover's own activation goes; its repair fails.
			f := &putFailer{backend: "pg-f001-replica", server: "pg-f001-1", body: `"admin_state":"ready"`, pass: 1}
			h := failerHarness(t, v, f)
			base := writerTwinned(t, 3, 1)
			h.apply(t, "create", base)
			h.apply(t, "settle", base)
			h.srv.HoldAdminState("pg-f001-replica", "pg-f001-1", "maint")
			h.srv.HoldAdminState("pg-f001-replica", "pg-f001-2", "ready")
			h.srv.HoldAdminState("pg-f002-replica", "pg-f002-2", "ready")
			f.set(true)
			h.srv.ResetRequests()
			sw := writerTwinned(t, 3, 2)
			_, err := h.tg.Apply(h.ctx, sw)
			if f.count() == 0 {
				t.Fatal("the failing repair PUT was never sent")
			}
			if err == nil {
				t.Fatal("the switchover applied without error; pg-f001-replica/pg-f001-1's repair PUT failed")
			}
			for _, want := range []string{"pg-f001-replica/pg-f001-1", "held back", "pg-f001-replica/pg-f001-2"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
			reqs := h.srv.Writes()
			if n := putsTo(reqs, "pg-f001-replica", "pg-f001-2"); n != 1 {
				t.Errorf("%d PUTs of pg-f001-replica/pg-f001-2, want 1 (its repair held back by its backend's failed repair activation)", n)
			}
			if n := putsTo(reqs, "pg-f002-replica", "pg-f002-2"); n != 2 {
				t.Errorf("%d PUTs of pg-f002-replica/pg-f002-2, want 2 (its repair held back by another backend's failure)", n)
			}

			f.set(false)
			h.srv.HoldAdminState("pg-f001-replica", "pg-f001-1", "")
			h.srv.HoldAdminState("pg-f001-replica", "pg-f001-2", "")
			h.srv.HoldAdminState("pg-f002-replica", "pg-f002-2", "")
			h.apply(t, "retry", sw)
			if got, want := readyTwins(t, h, sw), wantReady(sw); !sameSet(got["pg-f001-replica"], want["pg-f001-replica"]) ||
				!sameSet(got["pg-f002-replica"], want["pg-f002-replica"]) {
				t.Errorf("after the retry ready %v and %v, want %v and %v", got["pg-f001-replica"], got["pg-f002-replica"],
					want["pg-f001-replica"], want["pg-f002-replica"])
			}
			if res := h.apply(t, "idle", sw); len(res.Changes) != 0 {
				t.Errorf("idle after the retry: %+v", res.Changes)
			}
		})
	}
}

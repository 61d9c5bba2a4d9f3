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

// fenceLiar is a transport that rewrites the answers of the runtime PUTs
// of server `server` that say operational_state down into up (as an
// HAProxy whose runtime socket dropped the `set server … health down`, or
// an operator's `set server … health up` right after it would answer),
// the first `times` of them per backend (0: all).
type fenceLiar struct {
	next   http.RoundTripper
	server string
	times  int
	mu     sync.Mutex
	n      map[string]int // backend -> answers rewritten
}

func (f *fenceLiar) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.next.RoundTrip(req)
	if err != nil || req.Method != http.MethodPut || !strings.HasSuffix(req.URL.Path, "/servers/"+f.server) {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	backend := req.URL.Query().Get("backend") // v2
	if i := strings.Index(req.URL.Path, "/backends/"); i >= 0 {
		backend, _, _ = strings.Cut(req.URL.Path[i+len("/backends/"):], "/") // v3
	}
	f.mu.Lock()
	if bytes.Contains(b, []byte(`"operational_state":"down"`)) && (f.times == 0 || f.n[backend] < f.times) {
		f.n[backend]++
		b = bytes.ReplaceAll(b, []byte(`"operational_state":"down"`), []byte(`"operational_state":"up"`))
	}
	f.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// liarTarget is a Target on the API double (version v) whose answers to
// the fences of server go through a fenceLiar.
func liarTarget(t *testing.T, v int, server string, times int) (*dpapitest.Server, *dataplaneapi.Target, *fenceLiar) {
	t.Helper()
	srv := dpapitest.NewServer(t, dpapitest.WithAPIVersion(v))
	liar := &fenceLiar{next: http.DefaultTransport, server: server, times: times, n: map[string]int{}}
	c, err := dataplaneapi.New(srv.URL(), dataplaneapi.Options{Timeout: 5 * time.Second, HTTPClient: &http.Client{Transport: liar}})
	if err != nil {
		t.Fatal(err)
	}
	tg := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{
		ReloadPollInterval: 2 * time.Millisecond, ReloadTimeout: 5 * time.Second, Backoff: time.Millisecond})
	return srv, tg, liar
}

// failover is cluster name (net) failing over from member 1 to member 2:
// member 1 fenced, member 2 forced UP in the write services.
func failover(name string, net int) []services.Service {
	fo := force(cluster(name, net, 3, 2), name+"-1", func(sv *services.Server) { sv.ForceDown = true })
	return force(fo, name+"-2", func(sv *services.Server) { sv.ForceUp = true })
}

// activations lists the runtime PUTs that bring a server in: "backend/server
// up" (operational_state up) and "backend/server ready" (admin_state ready).
func activations(reqs []dpapitest.Request) []string {
	var out []string
	for _, r := range reqs {
		if r.Method != http.MethodPut || !strings.HasPrefix(r.Path, "/runtime/servers/") {
			continue
		}
		k := r.Query.Get("backend") + "/" + strings.TrimPrefix(r.Path, "/runtime/servers/")
		if strings.Contains(string(r.Body), `"operational_state":"up"`) {
			out = append(out, k+" up")
		}
		if strings.Contains(string(r.Body), `"admin_state":"ready"`) {
			out = append(out, k+" ready")
		}
	}
	return out
}

func hasPrefixed(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// TestFenceAnsweredUpHoldsBackTheNewPrimary: in Pigsty's layout (no twin
// flips: the fences, then the configuration, then the force-ups), a fence
// whose answer says the old primary is still UP is sent again at once;
// when it still does not take, the new primary of that cluster's write
// services is not forced UP (never two primaries), the apply fails naming
// the fence and what it held back, and the other cluster of the same
// apply fails over all the same. A fence that takes the second time
// holds nothing back.
func TestFenceAnsweredUpHoldsBackTheNewPrimary(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			srv, tg, _ := liarTarget(t, v, "pg-x-1", 0)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			base := append(cluster("pg-x", 1, 3, 1), cluster("pg-z", 3, 3, 1)...)
			if _, err := tg.Apply(ctx, base); err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{"pg-x-primary/pg-x-2", "pg-x-default/pg-x-2", "pg-z-primary/pg-z-2", "pg-z-default/pg-z-2"} {
				b, name, _ := strings.Cut(s, "/")
				srv.SetOperationalState(b, name, "down") // the new primaries' /primary failed until now
			}
			srv.ResetRequests()
			_, err := tg.Apply(ctx, append(failover("pg-x", 1), failover("pg-z", 3)...))
			if err == nil {
				t.Fatal("the failover applied without error; pg-x-1's fence answered UP")
			}
			for _, want := range []string{"pg-x-primary/pg-x-1", "pg-x-default/pg-x-1", "force_up pg-x-primary/pg-x-2", "force_up pg-x-default/pg-x-2"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
			if strings.Contains(err.Error(), "pg-z") {
				t.Errorf("error %q names the other cluster", err)
			}
			acts := activations(srv.Writes())
			for _, b := range []string{"pg-x-primary", "pg-x-default"} {
				if hasPrefixed(acts, b+"/pg-x-2 ") {
					t.Errorf("%s/pg-x-2 brought in although pg-x-1's fence did not take: %v", b, acts)
				}
				if n := countFences(srv.Writes(), b, "pg-x-1"); n != 2 {
					t.Errorf("%s/pg-x-1 forced DOWN %d times, want 2 (sent again once)", b, n)
				}
				z := strings.Replace(b, "pg-x", "pg-z", 1)
				if !hasPrefixed(acts, z+"/pg-z-2 up") {
					t.Errorf("%s/pg-z-2 not forced UP: the other cluster was held back too: %v", z, acts)
				}
			}
		})
	}
	t.Run("PUT fails", func(t *testing.T) {
		// A fence whose PUTs fail did not take as far as anyone knows:
		// the same, not an abort of every cluster's failover.
		srv, tg, _ := liarTarget(t, 2, "none", 0)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := tg.Apply(ctx, append(cluster("pg-x", 1, 3, 1), cluster("pg-z", 3, 3, 1)...)); err != nil {
			t.Fatal(err)
		}
		for _, b := range []string{"pg-x-primary", "pg-x-default"} {
			srv.SetOperationalState(b, "pg-x-2", "down")
			srv.SetOperationalState(strings.Replace(b, "pg-x", "pg-z", 1), "pg-z-2", "down")
		}
		srv.InjectFault(dpapitest.Fault{Method: http.MethodPut, Path: "/runtime/servers/pg-x-1", Status: 500, Message: "injected", Times: 4})
		srv.ResetRequests()
		_, err := tg.Apply(ctx, append(failover("pg-x", 1), failover("pg-z", 3)...))
		if err == nil || !strings.Contains(err.Error(), "pg-x-primary/pg-x-1") || !strings.Contains(err.Error(), "force_up pg-x-primary/pg-x-2") {
			t.Fatalf("failover with pg-x-1's fence failing: %v, want an error naming it and what it held back", err)
		}
		acts := activations(srv.Writes())
		for _, b := range []string{"pg-x-primary", "pg-x-default"} {
			if hasPrefixed(acts, b+"/pg-x-2 ") {
				t.Errorf("%s/pg-x-2 brought in although pg-x-1's fence failed: %v", b, acts)
			}
			if z := strings.Replace(b, "pg-x", "pg-z", 1); !hasPrefixed(acts, z+"/pg-z-2 up") {
				t.Errorf("%s/pg-z-2 not forced UP: the other cluster was held back too: %v", z, acts)
			}
		}
	})
	t.Run("once", func(t *testing.T) {
		srv, tg, _ := liarTarget(t, 2, "pg-x-1", 1)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := tg.Apply(ctx, cluster("pg-x", 1, 3, 1)); err != nil {
			t.Fatal(err)
		}
		srv.SetOperationalState("pg-x-primary", "pg-x-2", "down")
		srv.SetOperationalState("pg-x-default", "pg-x-2", "down")
		srv.ResetRequests()
		if _, err := tg.Apply(ctx, failover("pg-x", 1)); err != nil {
			t.Fatalf("failover whose fences took the second time: %v", err)
		}
		acts := activations(srv.Writes())
		for _, b := range []string{"pg-x-primary", "pg-x-default"} {
			if n := countFences(srv.Writes(), b, "pg-x-1"); n != 2 {
				t.Errorf("%s/pg-x-1 forced DOWN %d times, want 2", b, n)
			}
			if !hasPrefixed(acts, b+"/pg-x-2 up") {
				t.Errorf("%s/pg-x-2 not forced UP: %v", b, acts)
			}
		}
	})
}

func countFences(reqs []dpapitest.Request, backend, server string) int {
	n := 0
	for _, r := range reqs {
		if r.Method == http.MethodPut && r.Path == "/runtime/servers/"+server && r.Query.Get("backend") == backend &&
			strings.Contains(string(r.Body), `"operational_state":"down"`) {
			n++
		}
	}
	return n
}

// TestTwinsFenceAnsweredUpHoldsBackTheNewPrimary: as
// TestFenceAnsweredUpHoldsBackTheNewPrimary in the twin layout, where the
// fences go in the first wave of the flips (no configuration write): the
// new primary of the cluster whose fence did not take is not forced UP,
// in its primary service nor through the default service that tracks it,
// and the other cluster fails over.
func TestTwinsFenceAnsweredUpHoldsBackTheNewPrimary(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			srv, tg, _ := liarTarget(t, v, "pg-x-1", 0)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			base := append(twinned(t, cluster("pg-x", 1, 3, 1)), twinned(t, cluster("pg-z", 3, 3, 1))...)
			if _, err := tg.Apply(ctx, base); err != nil {
				t.Fatal(err)
			}
			if _, err := tg.Apply(ctx, base); err != nil {
				t.Fatal(err)
			}
			srv.SetOperationalState("pg-x-primary", "pg-x-2", "down")
			srv.SetOperationalState("pg-z-primary", "pg-z-2", "down")
			srv.ResetRequests()
			_, err := tg.Apply(ctx, append(twinned(t, failover("pg-x", 1)), twinned(t, failover("pg-z", 3))...))
			if err == nil {
				t.Fatal("the failover applied without error; pg-x-1's fence answered UP")
			}
			for _, want := range []string{"pg-x-primary/pg-x-1", "force_up pg-x-primary/pg-x-2"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
			if strings.Contains(err.Error(), "pg-z") {
				t.Errorf("error %q names the other cluster", err)
			}
			acts := activations(srv.Writes())
			for _, b := range []string{"pg-x-primary", "pg-x-default"} {
				if hasPrefixed(acts, b+"/pg-x-2 ") {
					t.Errorf("%s/pg-x-2 brought in although pg-x-1's fence did not take: %v", b, acts)
				}
			}
			if n := countFences(srv.Writes(), "pg-x-primary", "pg-x-1"); n != 2 {
				t.Errorf("pg-x-primary/pg-x-1 forced DOWN %d times, want 2 (sent again once)", n)
			}
			if !hasPrefixed(acts, "pg-z-primary/pg-z-2 up") {
				t.Errorf("pg-z-primary/pg-z-2 not forced UP: the other cluster was held back too: %v", acts)
			}
		})
	}
}

// TestTwinsWriteOutgoingAnsweredReadyHoldsBack: in a role-dependent write
// service laid out as twins, the old primary's twin goes first; when its
// answer still says ready (an outside party puts it back), it is sent
// again at once, and when it stays ready the new primary's twin is not
// readied (never two primaries in a write service), the apply fails naming
// it, and the other cluster's switchover goes through.
func TestTwinsWriteOutgoingAnsweredReadyHoldsBack(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			h := newTwinsHarness(t, v)
			base := writerTwins(t, 2, 1)
			h.apply(t, "create", base)
			h.apply(t, "settle", base)
			h.srv.HoldAdminState("pg-f000-writer", "pg-f000-1", "ready")
			h.srv.ResetRequests()
			_, err := h.tg.Apply(h.ctx, writerTwins(t, 2, 2))
			if err == nil {
				t.Fatal("the switchover applied without error; pg-f000-1's writer twin answered ready")
			}
			for _, want := range []string{"pg-f000-writer/pg-f000-1", "set_state pg-f000-writer/pg-f000-2"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
			if strings.Contains(err.Error(), "pg-f001") {
				t.Errorf("error %q names the other cluster", err)
			}
			if acts := activations(h.srv.Writes()); hasPrefixed(acts, "pg-f000-writer/pg-f000-2") {
				t.Errorf("pg-f000-writer/pg-f000-2 readied although pg-f000-1's twin stayed ready: %v", acts)
			}
			c, err := dataplaneapi.New(h.srv.URL(), dataplaneapi.Options{Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			ready := func(backend string) map[string]bool {
				t.Helper()
				rts, err := c.GetRuntimeServers(h.ctx, backend)
				if err != nil {
					t.Fatal(err)
				}
				out := map[string]bool{}
				for _, r := range rts {
					if r.AdminState == "ready" {
						out[r.Name] = true
					}
				}
				return out
			}
			if got := ready("pg-f000-writer"); !got["pg-f000-1"] || got["pg-f000-2"] || len(got) != 1 {
				t.Errorf("pg-f000-writer ready twins %v, want pg-f000-1 only (left as it was)", got)
			}
			if got := ready("pg-f001-writer"); got["pg-f001-1"] || !got["pg-f001-2"] || len(got) != 1 {
				t.Errorf("pg-f001-writer ready twins %v, want pg-f001-2 only (switched)", got)
			}

			// The outside party lets go: the next apply switches it.
			h.srv.HoldAdminState("pg-f000-writer", "pg-f000-1", "")
			h.apply(t, "retry", writerTwins(t, 2, 2))
			if got := ready("pg-f000-writer"); got["pg-f000-1"] || !got["pg-f000-2"] || len(got) != 1 {
				t.Errorf("pg-f000-writer ready twins %v after the retry, want pg-f000-2 only", got)
			}
		})
	}
}

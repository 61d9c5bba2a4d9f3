package dataplaneapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// hookTransport counts the requests a client sends to the real API and
// lets a test act before one goes out (another writer's edit) or answer it
// itself (a proxy in front of the API failing).
type hookTransport struct {
	next http.RoundTripper
	mu   sync.Mutex
	reqs []string // "METHOD path?query"
	// before, when set, runs before each request; a non-nil response is
	// returned instead of sending the request.
	before func(r *http.Request) *http.Response
}

func (h *hookTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.reqs = append(h.reqs, r.Method+" "+r.URL.RequestURI())
	before := h.before
	h.mu.Unlock()
	if before != nil {
		if resp := before(r); resp != nil {
			return resp, nil
		}
	}
	return h.next.RoundTrip(r)
}

func (h *hookTransport) reset(before func(r *http.Request) *http.Response) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reqs, h.before = nil, before
}

func (h *hookTransport) requests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.reqs...)
}

func inTxnWrite(r *http.Request) bool {
	return r.Method != http.MethodGet && r.URL.Query().Get("transaction_id") != ""
}

func isCommit(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/services/haproxy/transactions/")
}

// openTransactions lists the in-progress transactions on the real API.
func openTransactions(t *testing.T, c *dataplaneapi.Client) []string {
	t.Helper()
	txns, err := c.ListTransactions(context.Background())
	if err != nil {
		t.Fatalf("list transactions: %v", err)
	}
	var out []string
	for _, x := range txns {
		if x.Status == "in_progress" {
			out = append(out, x.ID)
		}
	}
	return out
}

// TestRealAPIMidApplyFailuresLeaveNothingHalfApplied makes the real API
// (2.9.x and 3.x) answer 422, 409, 429 and (through a proxy) 503 in the
// middle of an apply, and checks each time that HAProxy's configuration is
// what it was before (version and content), that no transaction is left
// open, and that the next apply converges.
func TestRealAPIMidApplyFailuresLeaveNothingHalfApplied(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		log := zaptest.NewLogger(t)
		opts := dataplaneapi.TargetOptions{ReloadTimeout: 30 * time.Second, ReloadPollInterval: 100 * time.Millisecond, Backoff: 50 * time.Millisecond}
		tg := dataplaneapi.NewTarget(rs.c, log, opts)
		onLoopback := func(svcs []services.Service) []services.Service {
			for i := range svcs {
				svcs[i].IP = "127.0.0.1"
				svcs[i].Port = rs.svcPorts[i%4]
			}
			return svcs
		}
		before := onLoopback(cluster("pg-live", 1, 3, 1))
		if _, err := tg.Apply(ctx, before); err != nil {
			t.Fatal(err)
		}
		switchover := onLoopback(cluster("pg-live", 1, 3, 2))

		// unchanged checks the API still has exactly `before`: same version,
		// same text, nothing open.
		unchanged := func(t *testing.T, what string, v0 int64, text0 string) {
			t.Helper()
			text, v, err := rs.c.GetRawConfig(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if v != v0 || text != text0 {
				t.Errorf("%s: configuration changed (version %d -> %d)", what, v0, v)
			}
			if open := openTransactions(t, rs.c); len(open) != 0 {
				t.Errorf("%s: transactions left open: %v", what, open)
			}
			if ch, err := tg.Diff(ctx, before); err != nil || len(ch) != 0 {
				t.Errorf("%s: HAProxy no longer has the previous services: %+v %v", what, ch, err)
			}
		}
		snapshot := func() (string, int64) {
			text, v, err := rs.c.GetRawConfig(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return text, v
		}

		t.Run("422 invalid object after valid writes", func(t *testing.T) {
			text0, v0 := snapshot()
			bad := append(append([]services.Service(nil), switchover...), onLoopback(cluster("pg-bad", 2, 2, 1))[0])
			bad[len(bad)-1].Port = freePort(t)
			bad[len(bad)-1].Balance = "no-such-algorithm"
			_, err := tg.Apply(ctx, bad)
			var ae *dataplaneapi.APIError
			if !errors.As(err, &ae) || ae.Status != 422 && ae.Status != 400 {
				t.Fatalf("apply with an invalid backend: %v (want the API's 422)", err)
			}
			t.Logf("the API answered: %v", err)
			unchanged(t, "after 422", v0, text0)
		})

		t.Run("409 another writer bumps the version on every try", func(t *testing.T) {
			_, v0 := snapshot()
			other, err := dataplaneapi.New(rs.base, dataplaneapi.Options{})
			if err != nil {
				t.Fatal(err)
			}
			weight := int64(10)
			bump := func(r *http.Request) *http.Response {
				if !inTxnWrite(r) || isCommit(r) {
					return nil
				}
				// Another writer edits a section the controller does not own.
				v, err := other.GetVersion(ctx)
				if err != nil {
					t.Errorf("other writer: %v", err)
					return nil
				}
				srv, _, err := other.GetServer(ctx, "legacy-app", "app1")
				if err != nil {
					t.Errorf("other writer: %v", err)
					return nil
				}
				weight++
				srv.Weight = &weight
				if _, err := other.ReplaceServer(ctx, "legacy-app", srv, dataplaneapi.AtVersion(v)); err != nil {
					t.Errorf("other writer: %v", err)
				}
				return nil
			}
			rs.rt.reset(bump)
			tight := dataplaneapi.NewTarget(rs.c, log, dataplaneapi.TargetOptions{MaxRetries: 2, ReloadPollInterval: 100 * time.Millisecond, Backoff: 50 * time.Millisecond})
			_, err = tight.Apply(ctx, switchover)
			rs.rt.reset(nil)
			if !dataplaneapi.IsConflict(err) && !dataplaneapi.IsOutdated(err) {
				t.Fatalf("apply racing another writer: %v (want 409/406 after the retries)", err)
			}
			t.Logf("the API answered: %v", err)
			// The other writer's edits are there; ours are not, not even in part.
			text, v, err := rs.c.GetRawConfig(ctx)
			if err != nil || v <= v0 || !strings.Contains(text, fmt.Sprintf("server app1 127.0.9.1:8080 check weight %d", weight)) {
				t.Errorf("other writer's edit missing (version %d -> %d): %v", v0, v, err)
			}
			if ch, err := tg.Diff(ctx, before); err != nil || len(ch) != 0 {
				t.Errorf("half-applied after 409: %+v %v", ch, err)
			}
			if open := openTransactions(t, rs.c); len(open) != 0 {
				t.Errorf("transactions left open: %v", open)
			}
			// Once the other writer stops, the retry converges, keeping its edit.
			var once sync.Once
			rs.rt.reset(func(r *http.Request) *http.Response {
				if inTxnWrite(r) && !isCommit(r) {
					once.Do(func() { bump(r) })
				}
				return nil
			})
			if _, err := tg.Apply(ctx, switchover); err != nil {
				t.Fatalf("apply after one concurrent edit: %v", err)
			}
			rs.rt.reset(nil)
			if ch, err := tg.Diff(ctx, switchover); err != nil || len(ch) != 0 {
				t.Fatalf("not converged: %+v %v", ch, err)
			}
			if text, _, _ := rs.c.GetRawConfig(ctx); !strings.Contains(text, fmt.Sprintf("weight %d", weight)) {
				t.Errorf("other writer's last edit lost")
			}
			if _, err := tg.Apply(ctx, before); err != nil {
				t.Fatal(err)
			}
		})

		t.Run("429 too many open transactions", func(t *testing.T) {
			text0, v0 := snapshot()
			var held []string
			defer func() {
				for _, id := range held {
					_ = rs.c.DeleteTransaction(context.Background(), id)
				}
			}()
			for i := 0; ; i++ {
				txn, err := rs.c.StartTransaction(ctx, v0)
				if dataplaneapi.IsTooMany(err) {
					break
				}
				if err != nil || i > 100 {
					t.Fatalf("opening transaction %d: %v", i, err)
				}
				held = append(held, txn.ID)
			}
			t.Logf("the API took %d open transactions", len(held))
			tight := dataplaneapi.NewTarget(rs.c, log, dataplaneapi.TargetOptions{MaxRetries: 1, Backoff: 10 * time.Millisecond})
			_, err := tight.Apply(ctx, switchover)
			if !dataplaneapi.IsTooMany(err) {
				t.Fatalf("apply with the transaction limit reached: %v (want 429)", err)
			}
			text, v, _ := rs.c.GetRawConfig(ctx)
			if v != v0 || text != text0 {
				t.Errorf("configuration changed after 429")
			}
			if open := openTransactions(t, rs.c); len(open) != len(held) {
				t.Errorf("open transactions: %d, want only the %d held here", len(open), len(held))
			}
			for _, id := range held {
				if err := rs.c.DeleteTransaction(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			held = nil
			unchanged(t, "after 429", v0, text0)
		})

		t.Run("503 on the commit, from a proxy in front of the API", func(t *testing.T) {
			text0, v0 := snapshot()
			rs.rt.reset(func(r *http.Request) *http.Response {
				if !isCommit(r) {
					return nil
				}
				return &http.Response{StatusCode: 503, Status: "503 Service Unavailable", Request: r,
					Header: http.Header{"Content-Type": {"application/json"}},
					Body:   io.NopCloser(strings.NewReader(`{"code":503,"message":"upstream unavailable"}`))}
			})
			_, err := tg.Apply(ctx, switchover)
			rs.rt.reset(nil)
			var ae *dataplaneapi.APIError
			if !errors.As(err, &ae) || ae.Status != 503 || !dataplaneapi.Retryable(err) {
				t.Fatalf("apply with a 503 commit: %v", err)
			}
			unchanged(t, "after 503", v0, text0)
			if _, err := tg.Apply(ctx, switchover); err != nil {
				t.Fatalf("apply after the 503: %v", err)
			}
			if ch, err := tg.Diff(ctx, switchover); err != nil || len(ch) != 0 {
				t.Fatalf("not converged: %+v %v", ch, err)
			}
		})
	})
}

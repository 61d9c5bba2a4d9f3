package dataplaneapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/haproxytech/client-native/v5/models"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// recorder writes every exchange of a client with the real API as a
// fixture file in the format of testdata/fixtures (2.9.9), which
// dpapitest's conformance test replays against the double.
type recorder struct {
	next  http.RoundTripper
	dir   string
	mu    sync.Mutex
	n     int
	label string
	skip  func(r *http.Request) bool
}

func (rc *recorder) RoundTrip(r *http.Request) (*http.Response, error) {
	var reqBody []byte
	if r.Body != nil {
		reqBody, _ = io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	start := time.Now()
	resp, err := rc.next.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	respBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.skip != nil && rc.skip(r) {
		return resp, nil
	}
	rc.n++
	hdr := map[string]string{}
	for k := range resp.Header {
		if k != "Date" && k != "Content-Length" {
			hdr[k] = resp.Header.Get(k)
		}
	}
	jsonOrString := func(b []byte) json.RawMessage {
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			return json.RawMessage("null")
		}
		if json.Valid(b) {
			return b
		}
		s, _ := json.Marshal(string(b))
		return s
	}
	q := map[string]string{}
	for k := range r.URL.Query() {
		q[k] = r.URL.Query().Get(k)
	}
	qj, _ := json.Marshal(q)
	ex := map[string]any{
		"label":       fmt.Sprintf("%03d-%s", rc.n, rc.label),
		"captured_at": start.UTC().Format("2006-01-02T15:04:05.000Z"),
		"elapsed_ms":  float64(time.Since(start).Microseconds()) / 1000,
		"request": map[string]any{"method": r.Method, "path": r.URL.Path, "query": json.RawMessage(qj),
			"headers": map[string]string{"Authorization": "<redacted>", "Content-Type": r.Header.Get("Content-Type")}, "body": jsonOrString(reqBody)},
		"response": map[string]any{"status": resp.StatusCode, "headers": hdr, "body": jsonOrString(respBody)},
	}
	b, _ := json.MarshalIndent(ex, "", "  ")
	name := fmt.Sprintf("%03d-%s-%s.json", rc.n, strings.ToLower(r.Method), rc.label)
	if err := os.WriteFile(filepath.Join(rc.dir, name), append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	return resp, nil
}

func (rc *recorder) step(label string) {
	rc.mu.Lock()
	rc.label = label
	rc.mu.Unlock()
}

// TestRecordV3Fixtures records testdata/fixtures-v3 from the real Data
// Plane API 3.x: run it by hand when the double must learn something new
// (DPAPI_RECORD_V3=1 DATAPLANEAPI_V3_BIN=... go test -run TestRecordV3Fixtures).
func TestRecordV3Fixtures(t *testing.T) {
	if os.Getenv("DPAPI_RECORD_V3") == "" {
		t.Skip("records fixtures from a real Data Plane API 3.x; set DPAPI_RECORD_V3=1 and DATAPLANEAPI_V3_BIN to re-record testdata/fixtures-v3")
	}
	bin := os.Getenv("DATAPLANEAPI_V3_BIN")
	if bin == "" {
		t.Fatal("DATAPLANEAPI_V3_BIN not set")
	}
	rs := startRealStack(t, bin, 3)
	dir, _ := filepath.Abs("testdata/fixtures-v3")
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	text, _, err := rs.c.GetRawConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "initial.cfg"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// Reload polls depend on timing (how many answer in_progress): they are
	// left out of the sequence.
	rec := &recorder{next: http.DefaultTransport, dir: dir, skip: func(r *http.Request) bool {
		return strings.Contains(r.URL.Path, "/reloads/")
	}}
	c, err := dataplaneapi.New(rs.base, dataplaneapi.Options{HTTPClient: &http.Client{Transport: rec}})
	if err != nil {
		t.Fatal(err)
	}
	tg := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadPollInterval: 100 * time.Millisecond})
	onLoopback := func(svcs []services.Service) []services.Service {
		for i := range svcs {
			svcs[i].IP = "127.0.0.1"
			svcs[i].Port = rs.svcPorts[i%4]
		}
		return svcs
	}
	rec.step("create")
	if _, err := tg.Apply(ctx, onLoopback(cluster("pg-live", 1, 3, 1))); err != nil {
		t.Fatal(err)
	}
	rec.step("switchover")
	if _, err := tg.Apply(ctx, onLoopback(cluster("pg-live", 1, 3, 2))); err != nil {
		t.Fatal(err)
	}
	rec.step("weight")
	w := onLoopback(cluster("pg-live", 1, 3, 2))
	w[0].Servers[0].Weight = 0
	if _, err := tg.Apply(ctx, w); err != nil {
		t.Fatal(err)
	}
	rec.step("objects")
	v, _ := c.GetVersion(ctx)
	_, _, _ = c.GetServers(ctx, "pg-live-replica")
	_, _, _ = c.GetServer(ctx, "pg-live-replica", "pg-live-1")
	_, _, _ = c.GetBackend(ctx, "pg-live-replica")
	_, _, _ = c.GetFrontend(ctx, "pg-live-replica")
	_, _, _ = c.GetBinds(ctx, "pg-live-replica")
	_, _, _ = c.GetHTTPChecks(ctx, "pg-live-replica")
	_, _ = c.StartTransaction(ctx, v-1) // stale: 409
	_, _, _ = c.GetServer(ctx, "pg-live-replica", "nope")
	rec.step("runtime")
	_, _ = c.GetRuntimeServers(ctx, "pg-live-replica")
	_, _ = c.ReplaceRuntimeServer(ctx, "pg-live-replica", "pg-live-3", &models.RuntimeServer{AdminState: "maint"})
	_, _ = c.ReplaceRuntimeServer(ctx, "pg-live-replica", "pg-live-3", &models.RuntimeServer{AdminState: "ready"})
	_, _ = c.ReplaceRuntimeServer(ctx, "pg-live-replica", "nope", &models.RuntimeServer{AdminState: "ready"})
	rec.step("raw")
	raw := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{RawThreshold: 1, ReloadPollInterval: 100 * time.Millisecond})
	if _, err := raw.Apply(ctx, onLoopback(cluster("pg-live", 1, 3, 1))); err != nil {
		t.Fatal(err)
	}
	rec.step("transactions")
	_, _ = c.ListTransactions(ctx)
	t.Logf("recorded %d exchanges into %s", rec.n, dir)
}

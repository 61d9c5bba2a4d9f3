package dataplaneapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
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

// nativeRows is GET /stats/native's answer (v3: one document) for an
// HAProxy running svcs.
func nativeRows(svcs []services.Service) []byte {
	type stats struct {
		Addr    string `json:"addr,omitempty"`
		Bck     *int64 `json:"bck,omitempty"`
		Status  string `json:"status,omitempty"`
		Tracked string `json:"tracked,omitempty"`
	}
	type row struct {
		Name        string `json:"name"`
		Type        string `json:"type"`
		BackendName string `json:"backend_name,omitempty"`
		Stats       stats  `json:"stats"`
	}
	var rows []row
	for _, s := range svcs {
		rows = append(rows, row{Name: s.Name, Type: "frontend"})
		for _, sv := range s.Servers {
			bck := int64(0)
			if sv.Backup {
				bck = 1
			}
			rows = append(rows, row{Name: sv.Name, Type: "server", BackendName: s.Name,
				Stats: stats{Addr: sv.Address + ":" + strconv.Itoa(sv.Port), Bck: &bck, Status: "UP", Tracked: sv.Track}})
		}
	}
	b, _ := json.Marshal(map[string]any{"runtimeAPI": "/run/admin.sock", "stats": rows})
	return b
}

// TestDiffReadsTheRunningHAProxy: `controller diff` (a fresh target, no
// apply of its own) called an HAProxy in sync when its file was right and
// the running process was not serving it (a reload failed or was lost):
// it now reads the running servers too, and says a reload is due.
func TestDiffReadsTheRunningHAProxy(t *testing.T) {
	srv := dpapitest.NewServer(t)
	before := cluster("pg-live", 1, 3, 1)
	after := cluster("pg-live", 1, 3, 2)
	// The file is made to say `after` through a target on the double
	// itself (no native stats there: its reloads are trusted).
	c0, err := dataplaneapi.New(srv.URL(), dataplaneapi.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tg0 := dataplaneapi.NewTarget(c0, zaptest.NewLogger(t), dataplaneapi.TargetOptions{
		ReloadPollInterval: 2 * time.Millisecond, ReloadTimeout: 5 * time.Second, Backoff: time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := tg0.Apply(ctx, after); err != nil {
		t.Fatal(err)
	}

	// The same API with the running HAProxy's native stats.
	var mu sync.Mutex
	running := before
	up, _ := url.Parse(srv.URL())
	proxy := httputil.NewSingleHostReverseProxy(up)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/stats/native") {
			mu.Lock()
			b := nativeRows(running)
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(b)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	fu, _ := url.Parse(front.URL)
	fu.User, fu.Path = up.User, up.Path
	c, err := dataplaneapi.New(fu.String(), dataplaneapi.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tg := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{})

	changes, err := tg.Diff(ctx, after)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Kind != target.KindReloadRunning ||
		!strings.Contains(changes[0].Detail, "pg-live-replica/pg-live-1 runs with backup true, want false") {
		t.Fatalf("file right, HAProxy running the old one: %+v", changes)
	}

	mu.Lock()
	running = after
	mu.Unlock()
	if changes, err := tg.Diff(ctx, after); err != nil || len(changes) != 0 {
		t.Fatalf("file right and served: %+v %v", changes, err)
	}
}

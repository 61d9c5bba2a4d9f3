package dpapitest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
)

func call(t *testing.T, srv *dpapitest.Server, method, path, body string) (*http.Response, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, srv.URL()+"/v2/services/haproxy"+path, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &m)
	return resp, m
}

const oneBackend = dpapitest.EmptyConfig + `
backend b
    mode tcp
    server s1 127.0.0.11:6432 check port 8008 weight 100
`

func TestPutServerOutsideTransaction(t *testing.T) {
	cases := []struct {
		name       string
		body       string
		wantStatus int
	}{
		{"weight only", `{"name":"s1","address":"127.0.0.11","port":6432,"check":"enabled","health_check_port":8008,"weight":50}`, 200},
		{"address and port", `{"name":"s1","address":"127.0.0.12","port":5432,"check":"enabled","health_check_port":8008,"weight":100}`, 200},
		{"maintenance", `{"name":"s1","address":"127.0.0.11","port":6432,"check":"enabled","health_check_port":8008,"weight":100,"maintenance":"enabled"}`, 200},
		{"backup", `{"name":"s1","address":"127.0.0.11","port":6432,"check":"enabled","health_check_port":8008,"weight":100,"backup":"enabled"}`, 202},
		{"check removed", `{"name":"s1","address":"127.0.0.11","port":6432,"health_check_port":8008,"weight":100}`, 202},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := dpapitest.NewServer(t, dpapitest.WithConfig(oneBackend))
			resp, _ := call(t, srv, "PUT", "/configuration/servers/s1?backend=b&version=1", tc.body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if (resp.Header.Get("Reload-Id") != "") != (tc.wantStatus == 202) || srv.ReloadCount() != map[int]int{200: 0, 202: 1}[tc.wantStatus] {
				t.Fatalf("Reload-Id %q, reloads %d", resp.Header.Get("Reload-Id"), srv.ReloadCount())
			}
			if srv.Version() != 2 || resp.Header.Get("Configuration-Version") != "2" {
				t.Fatalf("version %d / header %q, want 2", srv.Version(), resp.Header.Get("Configuration-Version"))
			}
		})
	}
}

func TestTransactionRules(t *testing.T) {
	srv := dpapitest.NewServer(t, dpapitest.WithConfig(oneBackend))
	var ids []string
	for i := 0; i < dpapitest.MaxTransactions; i++ {
		resp, m := call(t, srv, "POST", "/transactions?version=1", "")
		if resp.StatusCode != 201 {
			t.Fatalf("txn %d: %d", i, resp.StatusCode)
		}
		ids = append(ids, fmt.Sprint(m["id"]))
	}
	if resp, m := call(t, srv, "POST", "/transactions?version=1", ""); resp.StatusCode != 429 || m["code"] != float64(429) {
		t.Fatalf("21st transaction: %d %v", resp.StatusCode, m)
	}
	// Both / neither of version and transaction_id.
	if resp, _ := call(t, srv, "DELETE", "/configuration/servers/s1?backend=b&version=1&transaction_id="+ids[0], ""); resp.StatusCode != 400 {
		t.Fatalf("both: %d", resp.StatusCode)
	}
	if resp, _ := call(t, srv, "DELETE", "/configuration/servers/s1?backend=b", ""); resp.StatusCode != 400 {
		t.Fatalf("neither: %d", resp.StatusCode)
	}
	// Commit one; the others are now outdated: 409 first, then 406.
	if resp, _ := call(t, srv, "PUT", "/transactions/"+ids[0], ""); resp.StatusCode != 202 {
		t.Fatalf("commit: %d", resp.StatusCode)
	}
	if resp, m := call(t, srv, "PUT", "/transactions/"+ids[1], ""); resp.StatusCode != 409 || !strings.Contains(fmt.Sprint(m["message"]), "version mismatch") {
		t.Fatalf("outdated commit: %d %v", resp.StatusCode, m)
	}
	if resp, _ := call(t, srv, "PUT", "/transactions/"+ids[1], ""); resp.StatusCode != 406 {
		t.Fatalf("second commit of outdated: %d", resp.StatusCode)
	}
	if resp, _ := call(t, srv, "DELETE", "/transactions/"+ids[2], ""); resp.StatusCode != 204 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	bad := strings.Replace(srv.URL(), "adminpwd", "x", 1)
	resp, err := http.Get(bad + "/v2/services/haproxy/configuration/version")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("bad password: %d", resp.StatusCode)
	}
}

func TestRawPostReplacesConfig(t *testing.T) {
	srv := dpapitest.NewServer(t, dpapitest.WithConfig(oneBackend))
	text := srv.RawConfig() + "\nbackend c\n    mode tcp\n    server s2 127.0.0.12:5432 check\n"
	if resp, _ := call(t, srv, "POST", "/configuration/raw?version=9", text); resp.StatusCode != 409 {
		t.Fatalf("stale raw: %d", resp.StatusCode)
	}
	resp, _ := call(t, srv, "POST", "/configuration/raw?version=1", text)
	if resp.StatusCode != 202 || resp.Header.Get("Reload-Id") == "" || srv.Version() != 2 {
		t.Fatalf("raw: %d %q v%d", resp.StatusCode, resp.Header.Get("Reload-Id"), srv.Version())
	}
	if len(srv.Config().Backends) != 2 || !strings.Contains(srv.RawConfig(), "# _version=2") {
		t.Fatalf("raw not applied:\n%s", srv.RawConfig())
	}
	if resp, _ := call(t, srv, "POST", "/configuration/raw?version=2", "frontend f\n  bind :1\n  default_backend missing\n"); resp.StatusCode != 400 {
		t.Fatalf("invalid raw: %d", resp.StatusCode)
	}
}

// TestTrackerFollowsTrackedServer: a tracking server's runtime view is the
// health of the server it tracks, and its maint or drain (as HAProxy 2.6
// shows a tracker: measured), and a health change asked of the tracker
// itself changes nothing.
func TestTrackerFollowsTrackedServer(t *testing.T) {
	srv := dpapitest.NewServer(t, dpapitest.WithConfig(oneBackend+`
backend d
    mode tcp
    server s1 127.0.0.11:5432 track b/s1 weight 100
`))
	view := func() string {
		t.Helper()
		_, m := call(t, srv, "GET", "/runtime/servers/s1?backend=d", "")
		return fmt.Sprintf("%v/%v", m["admin_state"], m["operational_state"])
	}
	if got := view(); got != "ready/up" {
		t.Errorf("tracker at start: %s", got)
	}
	srv.SetOperationalState("b", "s1", "down")
	if got := view(); got != "ready/down" {
		t.Errorf("tracked server DOWN: tracker %s, want ready/down", got)
	}
	call(t, srv, "PUT", "/runtime/servers/s1?backend=d", `{"operational_state":"up"}`)
	if got := view(); got != "ready/down" {
		t.Errorf("health up asked of the tracker: %s, want ready/down (refused)", got)
	}
	call(t, srv, "PUT", "/runtime/servers/s1?backend=b", `{"operational_state":"up"}`)
	if got := view(); got != "ready/up" {
		t.Errorf("tracked server forced UP: tracker %s, want ready/up", got)
	}
	for _, st := range []string{"drain", "maint"} {
		call(t, srv, "PUT", "/runtime/servers/s1?backend=b", `{"admin_state":"`+st+`"}`)
		if got, want := view(), map[string]string{"drain": "drain/up", "maint": "maint/down"}[st]; got != want {
			t.Errorf("tracked server in %s: tracker %s, want %s", st, got, want)
		}
	}
	call(t, srv, "PUT", "/runtime/servers/s1?backend=b", `{"admin_state":"ready"}`)
	if got := view(); got != "ready/up" {
		t.Errorf("tracked server ready again: tracker %s", got)
	}
}

// TestRuntimeInfoProcessStart: GET /runtime/info answers the worker's pid
// and uptime as the real API does (v2: a list of per-process documents);
// a reload starts a new worker (a new pid, a later start), a restart in a
// pid namespace one with the same pid and a later start.
func TestRuntimeInfoProcessStart(t *testing.T) {
	srv := dpapitest.NewServer(t, dpapitest.WithConfig(oneBackend))
	info := func() (pid int64, start time.Time) {
		t.Helper()
		resp, err := http.Get(srv.URL() + "/v2/services/haproxy/runtime/info")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var docs []struct {
			Info struct {
				Pid    *int64 `json:"pid"`
				Uptime *int64 `json:"uptime"`
			} `json:"info"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&docs); err != nil || len(docs) != 1 || docs[0].Info.Pid == nil || docs[0].Info.Uptime == nil {
			t.Fatalf("runtime info: %+v %v", docs, err)
		}
		return *docs[0].Info.Pid, time.Now().Add(-time.Duration(*docs[0].Info.Uptime) * time.Second)
	}
	pid0, start0 := info()
	if pid1, start1 := info(); pid1 != pid0 || start1.Sub(start0).Abs() > 2*time.Second {
		t.Fatalf("the same worker answered pid %d started %s, then pid %d started %s", pid0, start0, pid1, start1)
	}
	resp, _ := call(t, srv, "PUT", "/configuration/servers/s1?backend=b&version=1",
		`{"name":"s1","address":"127.0.0.11","port":6432,"check":"enabled","health_check_port":8008,"weight":100,"backup":"enabled"}`)
	if resp.StatusCode != 202 {
		t.Fatalf("status %d, want 202 (a reload)", resp.StatusCode)
	}
	pid1, start1 := info()
	if pid1 == pid0 || start1.Sub(start0) < 5*time.Second {
		t.Fatalf("after a reload: pid %d started %s, before pid %d started %s", pid1, start1, pid0, start0)
	}
	srv.RestartHAProxyKeepPID()
	pid2, start2 := info()
	if pid2 != pid1 || start2.Sub(start1) < 5*time.Second {
		t.Fatalf("after a restart keeping the pid: pid %d started %s, before pid %d started %s", pid2, start2, pid1, start1)
	}
	srv.RestartHAProxy()
	if pid3, start3 := info(); pid3 == pid2 || start3.Sub(start2) < 5*time.Second {
		t.Fatalf("after a restart: pid %d started %s, before pid %d started %s", pid3, start3, pid2, start2)
	}
}

// TestDelayNewWorkers: after a reload the old worker answers the runtime
// endpoints n more times (its pid, and the admin states it is told), then
// the new one serves, started from the states the reload found.
func TestDelayNewWorkers(t *testing.T) {
	srv := dpapitest.NewServer(t, dpapitest.WithConfig(oneBackend))
	srv.SetAdminState("b", "s1", "drain")
	srv.DelayNewWorkers(2)
	pid := srv.PID()
	resp, _ := call(t, srv, "PUT", "/configuration/servers/s1?backend=b&version=1",
		`{"name":"s1","address":"127.0.0.11","port":6432,"check":"enabled","health_check_port":8008,"weight":100,"backup":"enabled"}`)
	if resp.StatusCode != 202 {
		t.Fatalf("status %d, want 202 (a reload)", resp.StatusCode)
	}
	admin := func() string {
		t.Helper()
		_, m := call(t, srv, "GET", "/runtime/servers/s1?backend=b", "")
		return fmt.Sprint(m["admin_state"])
	}
	// The old worker: told ready, which the new one never hears.
	if _, m := call(t, srv, "PUT", "/runtime/servers/s1?backend=b", `{"admin_state":"ready"}`); m["admin_state"] != "ready" || srv.PID() != pid {
		t.Fatalf("old worker: %v, pid %d (was %d)", m, srv.PID(), pid)
	}
	if got := admin(); got != "ready" || srv.PID() != pid {
		t.Fatalf("old worker: %s, pid %d (was %d)", got, srv.PID(), pid)
	}
	if got := admin(); got != "drain" || srv.PID() == pid {
		t.Fatalf("new worker: %s, pid %d (was %d), want the state the reload found under a new pid", got, srv.PID(), pid)
	}
}

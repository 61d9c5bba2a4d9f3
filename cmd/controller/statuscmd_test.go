package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestStatusExitCodes: a script relies on `controller status` exiting 3
// when the controller is not ready, whatever the format (README), 0 when
// ready and 1 when it cannot read the status.
func TestStatusExitCodes(t *testing.T) {
	notReady := `{"now":"2026-01-01T00:00:00Z","ready":false,"not_ready":["pg: stale: etcd unreachable"],"inventory":"i.yml","dcs":[],"clusters":[],"targets":[],"history":[]}`
	ready := `{"now":"2026-01-01T00:00:00Z","ready":true,"inventory":"i.yml","dcs":[],"clusters":[],"targets":[],"history":[]}`
	for _, tc := range []struct {
		name, body, format string
		want               int
	}{
		{"text not ready", notReady, "text", 3},
		{"json not ready", notReady, "json", 3},
		{"text ready", ready, "text", 0},
		{"json ready", ready, "json", 0},
		{"json garbage", "<html>", "json", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			var out, errb bytes.Buffer
			if got := runStatus([]string{"--url", srv.URL, "--format", tc.format}, &out, &errb); got != tc.want {
				t.Fatalf("exit %d, want %d (stderr %q)", got, tc.want, errb.String())
			}
			if tc.format == "json" && tc.want != 1 && out.String() != tc.body {
				t.Fatalf("json output %q, want the document as is", out.String())
			}
			if tc.format == "text" && tc.want == 3 && !strings.Contains(out.String(), "NOT READY") {
				t.Fatalf("text output lacks NOT READY:\n%s", out.String())
			}
		})
	}
}

// TestStatusTextShowsTrouble: the table names what /readyz only lists in
// not_ready (a cluster's failed plan, a target's held-back clusters) and
// what it does not list at all (a transition in flight, deferred changes).
func TestStatusTextShowsTrouble(t *testing.T) {
	doc := `{"now":"2026-01-01T00:00:10Z","ready":false,"not_ready":["x"],"transitions_in_flight":1,"inventory":"i.yml","dcs":[],
"clusters":[{"name":"pg-a","namespace":"/pg","leader":"pg-a-1","plan_error":"selector: bad field","transition":"leader key expired since 2026-01-01T00:00:05Z: from pg-a-1 to pg-a-2"}],
"targets":[{"name":"dpapi-1","state":"partial","in_sync":false,"last_decision":0,"applied_revision":0,"consecutive_failures":0,"last_apply_ms":0,
"held_back":[{"cluster":"pg-b","services":["pg-b-primary"],"error":"bind refused","since":"2026-01-01T00:00:01Z","failures":2,"next_try":"2026-01-01T00:00:20Z"}],
"deferred":2,"deferred_until":"2026-01-01T00:00:11Z"}],"history":[]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(doc)) }))
	defer srv.Close()
	var out, errb bytes.Buffer
	if got := runStatus([]string{"--url", srv.URL}, &out, &errb); got != 3 {
		t.Fatalf("exit %d (stderr %q)", got, errb.String())
	}
	for _, want := range []string{
		"1 switchover(s)/failover(s) in flight",
		"PLAN FAILED (last good services kept): selector: bad field",
		"> in transition: leader key expired since 2026-01-01T00:00:05Z: from pg-a-1 to pg-a-2",
		"! held back since 2026-01-01T00:00:01Z (2 failures, next try 2026-01-01T00:00:20Z): cluster pg-b (pg-b-primary): bind refused",
		"> 2 change(s) deferred until 2026-01-01T00:00:11Z",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, out.String())
		}
	}
}

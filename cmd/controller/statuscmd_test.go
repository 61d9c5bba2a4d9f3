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

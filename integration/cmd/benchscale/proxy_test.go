package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The counter carries requests with and without bodies (Content-Length and
// chunked) over kept-alive connections unchanged, answers included, and
// counts each by method and path shape.
func TestCounterCarriesAndCounts(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, r.Method+" "+r.URL.RequestURI()+" "+string(body))
	}))
	defer api.Close()
	c, err := startCounter(api.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
	defer cl.CloseIdleConnections()
	do := func(method, path string, body io.Reader) string {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+c.addr+path, body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	big := strings.Repeat("x", 40000)
	for i := 0; i < 3; i++ {
		if got, want := do("GET", "/v3/services/haproxy/runtime/backends/pg-a-replica/servers?x=1", nil), "GET /v3/services/haproxy/runtime/backends/pg-a-replica/servers?x=1 "; got != want {
			t.Fatalf("GET: %q, want %q", got, want)
		}
		if got, want := do("PUT", "/v3/services/haproxy/runtime/backends/pg-a-replica/servers/pg-a-1", strings.NewReader(`{"admin_state":"drain"}`)), `PUT /v3/services/haproxy/runtime/backends/pg-a-replica/servers/pg-a-1 {"admin_state":"drain"}`; got != want {
			t.Fatalf("PUT: %q, want %q", got, want)
		}
		// A reader of unknown length goes chunked.
		pr, pw := io.Pipe()
		go func() { _, _ = io.WriteString(pw, big); _ = pw.Close() }()
		if got, want := do("POST", "/v3/services/haproxy/configuration/raw", pr), "POST /v3/services/haproxy/configuration/raw "+big; got != want {
			t.Fatalf("chunked POST: %d bytes back, want %d", len(got), len(want))
		}
	}
	s := c.snapshot()
	if s.total != 9 {
		t.Errorf("total %d, want 9", s.total)
	}
	for k, want := range map[string]int{
		"GET /v3/services/haproxy/runtime/backends/{name}/servers":        3,
		"PUT /v3/services/haproxy/runtime/backends/{name}/servers/{name}": 3,
		"POST /v3/services/haproxy/configuration/raw":                     3,
	} {
		if s.by[k] != want {
			t.Errorf("%s: %d, want %d (all: %v)", k, s.by[k], want, s.by)
		}
	}
}

package patroni

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakePatroni answers /primary as Patroni 3.0.2 does: the status says
// whether the member holds the leader lock, the body's role whether
// PostgreSQL has left recovery.
func fakePatroni(code int, role string) http.HandlerFunc {
	return fakePatroniState(code, role, "running")
}

func fakePatroniState(code int, role, state string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/primary" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"state": "` + state + `", "role": "` + role + `", "server_version": 150010}`))
	}
}

func TestProbe(t *testing.T) {
	tests := []struct {
		name     string
		code     int
		role     string
		writable bool
	}{
		{name: "leader, read-write", code: 200, role: "master", writable: true},
		{name: "leader, Patroni 4 spelling", code: 200, role: "primary", writable: true},
		{name: "leader lock taken, still in recovery", code: 200, role: "replica"},
		{name: "replica", code: 503, role: "replica"},
		{name: "demoting", code: 503, role: "master"},
	}
	// A generous timeout: a loaded CI machine answers loopback slowly.
	p, _ := NewProber(ProberOptions{CAFile: filepath.Join(t.TempDir(), "none.crt"), Timeout: 5 * time.Second})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(fakePatroni(tc.code, tc.role))
			defer srv.Close()
			r := p.Probe(context.Background(), srv.URL+"/patroni")
			if r.Code != tc.code || r.Writable != tc.writable || r.Err != "" || r.At.IsZero() {
				t.Errorf("probe = %+v, want code %d writable %v", r, tc.code, tc.writable)
			}
			if r.Primary() != (tc.code == 200) || !r.Answered() {
				t.Errorf("Primary/Answered = %v/%v", r.Primary(), r.Answered())
			}
		})
	}
	t.Run("leader shutting PostgreSQL down", func(t *testing.T) {
		srv := httptest.NewServer(fakePatroniState(200, "master", "stopping"))
		defer srv.Close()
		r := p.Probe(context.Background(), srv.URL+"/patroni")
		if !r.Primary() || r.Writable || !r.Stopping() || r.State != "stopping" {
			t.Errorf("probe = %+v, want 200, stopping, not writable", r)
		}
	})
	t.Run("nobody listening", func(t *testing.T) {
		srv := httptest.NewServer(fakePatroni(200, "master"))
		url := srv.URL
		srv.Close()
		r := p.Probe(context.Background(), url+"/patroni")
		if r.Answered() || r.Primary() || r.Err == "" {
			t.Errorf("probe of a closed port = %+v, want no answer with an error", r)
		}
	})
	t.Run("too slow", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer srv.Close()
		defer close(release)
		fast, _ := NewProber(ProberOptions{Timeout: 50 * time.Millisecond, CAFile: "/nonexistent"})
		start := time.Now()
		r := fast.Probe(context.Background(), srv.URL+"/patroni")
		if r.Answered() || time.Since(start) > 2*time.Second {
			t.Errorf("probe of a hanging API = %+v after %v, want no answer within the timeout", r, time.Since(start))
		}
	})
}

// TestProbeTLS: an https api_url is verified against the CA file.
func TestProbeTLS(t *testing.T) {
	srv := httptest.NewTLSServer(fakePatroni(200, "master"))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	p, warn := NewProber(ProberOptions{CAFile: ca, Timeout: 5 * time.Second})
	if warn != "" {
		t.Fatalf("warning with a good CA file: %s", warn)
	}
	if r := p.Probe(context.Background(), srv.URL+"/patroni"); !r.Primary() || !r.Writable {
		t.Errorf("https probe with the CA = %+v", r)
	}
	other, warn := NewProber(ProberOptions{CAFile: filepath.Join(t.TempDir(), "missing.crt"), Timeout: 5 * time.Second})
	if !strings.Contains(warn, "missing.crt") {
		t.Errorf("warning = %q, want it to name the missing file", warn)
	}
	if r := other.Probe(context.Background(), srv.URL+"/patroni"); r.Answered() || !strings.Contains(r.Err, "certificate") {
		t.Errorf("https probe without the CA = %+v, want a certificate error", r)
	}
}

func TestPrimaryURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.11:8008/patroni":   "http://127.0.0.11:8008/primary",
		"https://10.10.10.11:8008/patroni": "https://10.10.10.11:8008/primary",
		"http://[::1]:8008":                "http://[::1]:8008/primary",
		"postgres://h:5432/x":              "",
		"not a url\x7f":                    "",
		"http:///patroni":                  "",
	} {
		got, err := PrimaryURL(in)
		if got != want || (err != nil) != (want == "") {
			t.Errorf("PrimaryURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

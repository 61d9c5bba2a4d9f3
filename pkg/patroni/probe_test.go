package patroni

import (
	"bufio"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
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

// rawAPI serves every connection with answer, written as is, then closes
// it (Patroni's REST API is Python's BaseHTTPRequestHandler: HTTP/1.0, one
// request per connection).
func rawAPI(t testing.TB, answer string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for { // the request's head
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				_, _ = io.WriteString(c, answer)
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/patroni"
}

// httpProbe is the prober as it was, through net/http's client: the
// reference TestProbeSameAsHTTPClient compares the one-connection prober
// with.
func httpProbe(apiURL string) (code int, body []byte, err error) {
	target, err := PrimaryURL(apiURL)
	if err != nil {
		return 0, nil, err
	}
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	defer cl.CloseIdleConnections()
	resp, err := cl.Get(target)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, body, err
}

// patroniBody is what Patroni 3.0.2 answered GET /primary on the leader
// of the lab's cluster (../shared/fixtures/patroni-3.0.2/rest-initial.json).
const patroniBody = `{"state": "running", "postmaster_start_time": "2026-11-26 12:37:28.850717+00:00", "role": "master", ` +
	`"server_version": 150020, "xlog": {"location": 71531312}, "timeline": 1, "replication": [{"usename": "replicator", ` +
	`"application_name": "pg-test-2", "client_addr": "127.0.0.1", "state": "streaming", "sync_state": "async", ` +
	`"sync_priority": 0}], "dcs_last_seen": 1795696700, "database_system_identifier": "7712458376925434727", ` +
	`"patroni": {"version": "3.0.2", "scope": "pg-test"}}`

// TestProbeSameAsHTTPClient: for answers as Patroni's HTTP/1.0 server
// writes them, and as an HTTP/1.1 proxy in front of it might, the prober
// reads the status and body net/http's client reads.
func TestProbeSameAsHTTPClient(t *testing.T) {
	head := "Server: BaseHTTP/0.6 Python/3.11.2\r\nDate: Wed, 26 Nov 2026 12:38:25 GMT\r\nContent-Type: application/json\r\n"
	long := strings.Repeat(" ", 20<<10) + patroniBody
	answers := map[string]string{
		"patroni leader, close-delimited": "HTTP/1.0 200 OK\r\n" + head + "\r\n" + patroniBody,
		"patroni replica, 503":            "HTTP/1.0 503 Service Unavailable\r\n" + head + "\r\n" + strings.Replace(patroniBody, "master", "replica", 1),
		"content-length":                  "HTTP/1.0 200 OK\r\n" + head + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(patroniBody)) + patroniBody,
		"http/1.1 chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(patroniBody), patroniBody),
		"body longer than a buffer": "HTTP/1.0 200 OK\r\n" + head + "\r\n" + long,
		"no body":                   "HTTP/1.0 503 Service Unavailable\r\n" + head + "\r\n",
		"stopping": "HTTP/1.0 200 OK\r\n" + head + "\r\n" +
			strings.Replace(patroniBody, `"state": "running"`, `"state": "stopping"`, 1),
		"not json": "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>proxy</html>",
	}
	p, _ := NewProber(ProberOptions{CAFile: filepath.Join(t.TempDir(), "none.crt"), Timeout: 5 * time.Second})
	for name, answer := range answers {
		t.Run(name, func(t *testing.T) {
			api := rawAPI(t, answer)
			code, body, err := httpProbe(api)
			if err != nil {
				t.Fatalf("net/http: %v", err)
			}
			u, _ := parseAPIURL(api)
			gotCode, got, gotErr := p.get(context.Background(), u)
			if gotErr != nil || gotCode != code || string(got) != string(body) {
				t.Errorf("get = %d %q %v, net/http read %d %q", gotCode, got, gotErr, code, body)
			}
			r := p.Probe(context.Background(), api)
			wantState := ""
			var doc struct {
				State string `json:"state"`
				Role  string `json:"role"`
			}
			if json.Unmarshal(body, &doc) == nil {
				wantState = doc.State
			}
			if r.Code != code || r.State != wantState || r.Err != "" ||
				r.Writable != (code == 200 && doc.Role == "master" && doc.State == "running") {
				t.Errorf("probe = %+v, want code %d state %q", r, code, wantState)
			}
		})
	}
}

// TestProbeBadAnswers: an answer that is not HTTP, is cut short or does not
// end is no answer, or an answer with an error, never a status made up.
func TestProbeBadAnswers(t *testing.T) {
	p, _ := NewProber(ProberOptions{CAFile: filepath.Join(t.TempDir(), "none.crt"), Timeout: 2 * time.Second})
	for name, tc := range map[string]struct {
		answer string
		code   int
		err    string
	}{
		"not http":             {answer: "SSH-2.0-OpenSSH_9.2\r\n", err: "malformed HTTP"},
		"closed before status": {answer: "", err: "EOF"},
		"cut in the body":      {answer: "HTTP/1.0 200 OK\r\nContent-Length: 500\r\n\r\n{\"state\"", code: 200, err: "read body"},
		"body over 64 KB":      {answer: "HTTP/1.0 200 OK\r\n\r\n" + strings.Repeat("x", 65<<10), code: 200, err: "over 64 KB"},
	} {
		t.Run(name, func(t *testing.T) {
			r := p.Probe(context.Background(), rawAPI(t, tc.answer))
			if r.Code != tc.code || !strings.Contains(r.Err, tc.err) || r.Writable {
				t.Errorf("probe = %+v, want code %d and an error with %q", r, tc.code, tc.err)
			}
		})
	}
}

// TestProbeCancel: a probe whose context ends (its transition is over)
// returns at once, not at its timeout.
func TestProbeCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c // never answered
		}
	}()
	p, _ := NewProber(ProberOptions{CAFile: filepath.Join(t.TempDir(), "none.crt"), Timeout: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan ProbeResult, 1)
	go func() { done <- p.Probe(ctx, "http://"+ln.Addr().String()+"/patroni") }()
	c := <-accepted
	defer c.Close()
	cancel()
	select {
	case r := <-done:
		if r.Answered() || r.Err == "" {
			t.Errorf("cancelled probe = %+v, want no answer with an error", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a cancelled probe did not return")
	}
}

// BenchmarkProbe: one probe of an API answering as Patroni 3.0 does, the
// prober's own cost next to net/http's client (allocations include the
// test server's).
func BenchmarkProbe(b *testing.B) {
	api := rawAPI(b, "HTTP/1.0 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.2\r\nContent-Type: application/json\r\n\r\n"+patroniBody)
	b.Run("prober", func(b *testing.B) {
		p, _ := NewProber(ProberOptions{CAFile: "/nonexistent", Timeout: 5 * time.Second})
		b.ReportAllocs()
		for b.Loop() {
			if r := p.Probe(context.Background(), api); !r.Writable {
				b.Fatalf("probe = %+v", r)
			}
		}
	})
	b.Run("net/http", func(b *testing.B) {
		cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 4}}
		target, _ := PrimaryURL(api)
		b.ReportAllocs()
		for b.Loop() {
			resp, err := cl.Get(target)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
	})
}

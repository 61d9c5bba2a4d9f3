package app

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
)

// holdingProxy stands between the controller and the Data Plane API
// double. Once armed, it holds the first PUT until released, then passes it
// on whether or not the client still waits, as the real API carries out a
// request whose client went away.
type holdingProxy struct {
	t       *testing.T
	api     *url.URL
	srv     *httptest.Server
	mu      sync.Mutex
	armed   bool
	held    chan struct{} // closed when the PUT is held
	release chan struct{}
	// answered is closed once the held PUT's answer was written back;
	// gone says whether its client had given up when it was released.
	answered chan struct{}
	gone     bool
	status   int // the API's answer to it
}

func newHoldingProxy(t *testing.T, api *dpapitest.Server) *holdingProxy {
	u, err := url.Parse(api.URL())
	if err != nil {
		t.Fatal(err)
	}
	p := &holdingProxy{t: t, api: u, held: make(chan struct{}), release: make(chan struct{}), answered: make(chan struct{})}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	t.Cleanup(p.releaseOnce)
	return p
}

// URL is the double's URL (with its credentials) on the proxy's address.
func (p *holdingProxy) URL() string {
	u := *p.api
	u.Host = p.srv.Listener.Addr().String()
	return u.String()
}

func (p *holdingProxy) arm() { p.mu.Lock(); p.armed = true; p.mu.Unlock() }

var releaseMu sync.Mutex

func (p *holdingProxy) releaseOnce() {
	releaseMu.Lock()
	defer releaseMu.Unlock()
	select {
	case <-p.release:
	default:
		close(p.release)
	}
}

func (p *holdingProxy) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	p.mu.Lock()
	hold := p.armed && r.Method == http.MethodPut
	if hold {
		p.armed = false
	}
	p.mu.Unlock()
	if hold {
		close(p.held)
		<-p.release
		p.mu.Lock()
		p.gone = r.Context().Err() != nil
		p.mu.Unlock()
	}
	u := *p.api
	u.User = nil
	u.Path, u.RawQuery = r.URL.Path, r.URL.RawQuery
	req, err := http.NewRequestWithContext(context.Background(), r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		p.t.Error(err)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Errorf("proxy to the double: %v", err)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	if hold {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		p.mu.Lock()
		p.status = resp.StatusCode
		p.mu.Unlock()
		close(p.answered)
	}
}

// electionKeys counts the candidate keys under the election prefix: the
// leader's is deleted when it resigns.
func electionKeys(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/pgsvc/election/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// serveLeading runs Serve with the election on (TTL 10s: a lease left to
// expire outlives every wait below) against the Data Plane API at apiURL,
// until the leader is in sync. stop cancels Serve; done is closed when
// Serve returned, with its error in *err.
func serveLeading(t *testing.T, etcdURL, apiURL string) (stop func(), done <-chan struct{}, err *error) {
	t.Helper()
	inv := filepath.Join(t.TempDir(), "pigsty.yml")
	if err := os.WriteFile(inv, []byte(inventory), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Inventory: inv, Listen: "127.0.0.1:0", Etcd: config.Etcd{Endpoints: []string{etcdURL}},
		DataPlaneAPI: []config.DataPlaneAPI{{URL: apiURL}}, Election: config.Election{Enabled: true, TTL: 10, Identity: "handoff-test"}}
	cfg.ApplyDefaults()
	cfg.Controller.Debounce.Duration = 5 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	ended := make(chan struct{})
	var serveErr error
	go func() {
		defer close(ended)
		serveErr = Serve(ctx, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), ready)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ended:
		case <-time.After(20 * time.Second):
			t.Error("Serve did not stop within 20s of cancel")
		}
	})
	var addr string
	select {
	case addr = <-ready:
	case <-ended:
		t.Fatalf("Serve: %v", serveErr)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not listen")
	}
	eventually(t, "leader and in sync", func() bool {
		st := getStatus(t, addr)
		return st.Ready && st.Leader != nil && st.Leader.IsLeader
	})
	return cancel, ended, &serveErr
}

// TestResignAfterInFlightWrite: a controller stopped while a write to the
// Data Plane API is in flight (sent, no answer yet) keeps leading until the
// write's answer came back, then resigns: the write cannot land after the
// next leader started writing. Stopped with nothing in flight, it resigns
// at once.
func TestResignAfterInFlightWrite(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	patroniKeys(t, cli, "pg-test-1", 1)

	t.Run("write in flight", func(t *testing.T) {
		api := dpapitest.NewServer(t)
		proxy := newHoldingProxy(t, api)
		stop, done, serveErr := serveLeading(t, srv.ClientURL, proxy.URL())
		if n := electionKeys(t, cli); n != 1 {
			t.Fatalf("%d election keys, want 1 (ours)", n)
		}
		proxy.arm()
		patroniKeys(t, cli, "pg-test-2", 2) // a switchover: the controller writes
		select {
		case <-proxy.held:
		case <-time.After(15 * time.Second):
			t.Fatal("no PUT reached the API after the switchover")
		}
		stop()
		// The write is held: over this window the controller must keep
		// leading (its key stays), however soon it would resign otherwise
		// (a resign takes milliseconds).
		until := time.Now().Add(700 * time.Millisecond)
		for time.Now().Before(until) {
			if electionKeys(t, cli) != 1 {
				t.Fatal("resigned while a write it sent was still in flight")
			}
			select {
			case <-done:
				t.Fatalf("Serve returned (%v) while a write it sent was still in flight", *serveErr)
			default:
			}
			time.Sleep(20 * time.Millisecond)
		}
		proxy.releaseOnce()
		select {
		case <-done:
			if *serveErr != nil {
				t.Fatalf("Serve: %v", *serveErr)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return after the write was answered")
		}
		<-proxy.answered
		proxy.mu.Lock()
		gone, status := proxy.gone, proxy.status
		proxy.mu.Unlock()
		if gone {
			t.Error("the controller gave up the write before its answer")
		}
		if status/100 != 2 {
			t.Errorf("the held PUT was answered %d by the API", status)
		}
		// Resigned, not left to expire (10s): the key is gone at once.
		if n := electionKeys(t, cli); n != 0 {
			t.Errorf("%d election keys after Serve returned: not resigned", n)
		}
	})

	t.Run("nothing in flight", func(t *testing.T) {
		api := dpapitest.NewServer(t)
		stop, done, serveErr := serveLeading(t, srv.ClientURL, api.URL())
		start := time.Now()
		stop()
		select {
		case <-done:
			if *serveErr != nil {
				t.Fatalf("Serve: %v", *serveErr)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return within 5s of the stop")
		}
		if n := electionKeys(t, cli); n != 0 {
			t.Errorf("%d election keys after Serve returned: not resigned", n)
		}
		// At once: no grace without a write in flight (a resign is bounded
		// by 1s; the lease would live 10s).
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("stopping took %s with nothing in flight", d)
		}
	})
}

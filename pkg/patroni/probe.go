package patroni

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// DefaultCAFile is where Pigsty puts the CA that signs Patroni's REST API
// certificate when patroni_ssl_enabled is set.
const DefaultCAFile = "/pg/cert/ca.crt"

// ProbeResult is one answer of a member's Patroni REST API to /primary.
type ProbeResult struct {
	// Sent is when the request was sent, At when the answer arrived (or
	// the request failed).
	Sent time.Time `json:"sent"`
	At   time.Time `json:"at"`
	// Code is the HTTP status; 0 when there was no answer (refused,
	// timeout, TLS error).
	Code int `json:"code"`
	// Writable is true when Code is 200 and the body says PostgreSQL has
	// left recovery (role master or primary): Patroni answers /primary 200
	// as soon as it holds the leader lock, a moment before pg_ctl promote
	// has made the server read-write.
	Writable bool `json:"writable"`
	// State is PostgreSQL's state as Patroni reports it in the body
	// (running, stopping, ...; "" when there was none). Patroni sets
	// stopping right before it signals the postmaster to stop: from then
	// on no write succeeds, though /primary still answers 200 until the
	// shutdown is over.
	State string `json:"state,omitempty"`
	// Err says why there was no answer.
	Err string `json:"error,omitempty"`
}

// Primary reports whether /primary answered 200: the member holds the
// leader lock (what HAProxy's /primary check tests).
func (r ProbeResult) Primary() bool { return r.Code == http.StatusOK }

// Stopping reports whether Patroni answered that PostgreSQL is not running
// (stopping, stopped, restarting, ...).
func (r ProbeResult) Stopping() bool { return r.State != "" && r.State != "running" }

// Answered reports whether the REST API answered at all.
func (r ProbeResult) Answered() bool { return r.Code != 0 }

// ProberOptions tune a Prober.
type ProberOptions struct {
	// CAFile verifies https api_urls (DefaultCAFile). A missing or bad file
	// leaves the system roots in use; NewProber reports it as a warning.
	CAFile string
	// Timeout bounds one request (1s). Probes overlap (a new one every
	// interval, a few outstanding), so a slow answer delays nothing; an API
	// that does not answer at all (refused) fails at once.
	Timeout time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Prober asks members' Patroni REST APIs whether they are the primary. It
// is safe for concurrent use.
//
// Each probe is one connection, dialed, asked and closed on the caller's
// goroutine: Patroni's REST API (Python's BaseHTTPRequestHandler, HTTP/1.0)
// closes the connection after every answer, so an http.Transport's pool
// kept nothing and cost three goroutines, two 4 KB buffers and a grown
// stack per probe (a mass failover probes ~1,000 new primaries at once).
type Prober struct {
	dialer  net.Dialer
	tls     *tls.Config
	timeout time.Duration
	now     func() time.Time
}

// NewProber returns a Prober. warning is non-empty when the CA file could
// not be used (https probes then verify against the system roots).
func NewProber(opts ProberOptions) (p *Prober, warning string) {
	if opts.CAFile == "" {
		opts.CAFile = DefaultCAFile
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if pem, err := os.ReadFile(opts.CAFile); err != nil {
		warning = fmt.Sprintf("patroni ca file: %v (https api_urls are verified against the system roots)", err)
	} else {
		pool := x509.NewCertPool()
		if pool.AppendCertsFromPEM(pem) {
			tlsCfg.RootCAs = pool
		} else {
			warning = fmt.Sprintf("patroni ca file %s: no PEM certificate found (https api_urls are verified against the system roots)", opts.CAFile)
		}
	}
	return &Prober{dialer: net.Dialer{Timeout: opts.Timeout}, tls: tlsCfg, timeout: opts.Timeout, now: opts.Now}, warning
}

// maxInFlight is how many probes of one member may be outstanding: a
// Patroni REST API answering slower than the probe interval (each /primary
// runs a query) is still asked every interval.
const maxInFlight = 4

// MaxInFlight is how many probes of one member a caller should keep
// outstanding at most.
func MaxInFlight() int { return maxInFlight }

// PrimaryURL is the /primary address of a member whose api_url is apiURL
// (http://host:8008/patroni -> http://host:8008/primary).
func PrimaryURL(apiURL string) (string, error) {
	u, err := parseAPIURL(apiURL)
	if err != nil {
		return "", err
	}
	return u.Scheme + "://" + u.Host + "/primary", nil
}

func parseAPIURL(apiURL string) (*url.URL, error) {
	u, err := url.Parse(apiURL)
	if err != nil {
		return nil, fmt.Errorf("api_url %q: %w", apiURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("api_url %q: want http(s)://host:port/...", apiURL)
	}
	return u, nil
}

// Probe asks the member at apiURL for /primary once, within the Prober's
// timeout. It uses GET: Patroni answers OPTIONS (HAProxy's check) with the
// same status code and no body, and the body tells whether PostgreSQL is
// read-write yet.
func (p *Prober) Probe(ctx context.Context, apiURL string) ProbeResult {
	sent := p.now()
	u, err := parseAPIURL(apiURL)
	if err != nil {
		return ProbeResult{Sent: sent, At: p.now(), Err: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	code, body, err := p.get(ctx, u)
	r := ProbeResult{Sent: sent, At: p.now(), Code: code}
	if err != nil {
		r.Err = "GET " + u.Scheme + "://" + u.Host + "/primary: " + err.Error()
		return r
	}
	var doc struct {
		Role  string `json:"role"`
		State string `json:"state"`
	}
	if json.Unmarshal(body, &doc) == nil {
		r.State = doc.State
		switch strings.ToLower(doc.Role) {
		case "master", "primary":
			r.Writable = r.Code == http.StatusOK && doc.State == "running"
		}
	}
	return r
}

// readers are the probes' response buffers (an answer to /primary is
// well under 4 KB; a longer one is read in several fills).
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

// errBodyTooLong: an answer whose body passes maxBody is not Patroni's.
var errBodyTooLong = errors.New("answer body over 64 KB")

const maxBody = 64 << 10

// get sends GET /primary to u's host on a connection of its own and
// returns the status and body. code is non-zero once a status line was
// read (err then says what went wrong with the body). ctx bounds it all:
// the dial, the TLS handshake, the write and every read.
func (p *Prober) get(ctx context.Context, u *url.URL) (code int, body []byte, err error) {
	host := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	conn, err := p.dialer.DialContext(ctx, "tcp", host)
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// A cancelled probe (its transition ended) stops at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if u.Scheme == "https" {
		cfg := p.tls.Clone()
		cfg.ServerName = u.Hostname()
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return 0, nil, err
		}
		conn = tc
	}
	if _, err := io.WriteString(conn, "GET /primary HTTP/1.1\r\nHost: "+u.Host+
		"\r\nUser-Agent: pgsvc\r\nAccept: application/json\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, nil, err
	}
	br := readers.Get().(*bufio.Reader)
	br.Reset(conn)
	defer func() {
		br.Reset(nil)
		readers.Put(br)
	}()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err == nil && len(body) > maxBody {
		err = errBodyTooLong
	}
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("read body: %w", err)
	}
	return resp.StatusCode, body, nil
}

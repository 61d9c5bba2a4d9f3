package patroni

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
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
type Prober struct {
	client  *http.Client
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
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: opts.Timeout}).DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: opts.Timeout,
		// Connections kept alive between probes 20 ms apart where the API
		// allows it (Patroni 3.0's answers HTTP/1.0 and closes).
		MaxIdleConnsPerHost: maxInFlight,
		IdleConnTimeout:     5 * time.Second,
		DisableCompression:  true,
	}
	return &Prober{client: &http.Client{Transport: tr}, timeout: opts.Timeout, now: opts.Now}, warning
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
	u, err := url.Parse(apiURL)
	if err != nil {
		return "", fmt.Errorf("api_url %q: %w", apiURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("api_url %q: want http(s)://host:port/...", apiURL)
	}
	return u.Scheme + "://" + u.Host + "/primary", nil
}

// Probe asks the member at apiURL for /primary once, within the Prober's
// timeout. It uses GET: Patroni answers OPTIONS (HAProxy's check) with the
// same status code and no body, and the body tells whether PostgreSQL is
// read-write yet.
func (p *Prober) Probe(ctx context.Context, apiURL string) ProbeResult {
	sent := p.now()
	target, err := PrimaryURL(apiURL)
	if err != nil {
		return ProbeResult{Sent: sent, At: p.now(), Err: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return ProbeResult{Sent: sent, At: p.now(), Err: err.Error()}
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return ProbeResult{Sent: sent, At: p.now(), Err: err.Error()}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	r := ProbeResult{Sent: sent, At: p.now(), Code: resp.StatusCode}
	if err != nil {
		r.Err = "read body: " + err.Error()
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

// CloseIdle closes the Prober's idle keep-alive connections (at the end of
// a transition: nothing is probed in steady state).
func (p *Prober) CloseIdle() { p.client.CloseIdleConnections() }

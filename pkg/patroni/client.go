package patroni

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// ClientConfig says how to reach etcd.
type ClientConfig struct {
	// Endpoints are etcd client URLs (http://127.0.0.1:2379) or host:port.
	Endpoints []string
	// CACert verifies the server; Cert and Key authenticate the client. All
	// are PEM file paths; Cert and Key go together.
	CACert, Cert, Key string
	// Username and Password enable etcd authentication.
	Username, Password string
	// DialTimeout bounds connection setup (default 5s).
	DialTimeout time.Duration
	// ReconnectMaxDelay caps gRPC's reconnect backoff (default 2s). gRPC's
	// own cap is 120s, which would leave the view stale for up to two minutes
	// after a long etcd outage ends.
	ReconnectMaxDelay time.Duration
	// KeepAlive is how often an idle connection is pinged so a dead peer is
	// noticed (default 10s; etcd refuses pings more often than every 5s).
	KeepAlive time.Duration
	// Logger receives the etcd client's own logs (default: none).
	Logger *zap.Logger
}

// NewClient builds an etcd v3 client from cfg. It does not wait for etcd to
// answer: a Watcher reports reachability through its Status.
func NewClient(cfg ClientConfig) (*clientv3.Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd client: no endpoints")
	}
	useTLS := cfg.CACert != "" || cfg.Cert != "" || cfg.Key != ""
	for i, ep := range cfg.Endpoints {
		if strings.TrimSpace(ep) == "" {
			return nil, fmt.Errorf("etcd client: endpoints[%d] is empty", i)
		}
		if strings.Contains(ep, "://") {
			u, err := url.Parse(ep)
			if err != nil {
				return nil, fmt.Errorf("etcd client: endpoints[%d] %q: %w", i, ep, err)
			}
			switch u.Scheme {
			case "http", "unix", "unixs":
			case "https":
				useTLS = true
			default:
				return nil, fmt.Errorf("etcd client: endpoints[%d] %q: scheme %q, want http or https", i, ep, u.Scheme)
			}
			if u.Host == "" && u.Scheme != "unix" && u.Scheme != "unixs" {
				return nil, fmt.Errorf("etcd client: endpoints[%d] %q: no host", i, ep)
			}
		}
	}
	if (cfg.Cert == "") != (cfg.Key == "") {
		return nil, errors.New("etcd client: cert and key must be given together")
	}
	if cfg.Password != "" && cfg.Username == "" {
		return nil, errors.New("etcd client: password given without username")
	}
	c := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		Username:    cfg.Username,
		Password:    cfg.Password,
		Logger:      cfg.Logger,
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	maxDelay := cfg.ReconnectMaxDelay
	if maxDelay <= 0 {
		maxDelay = 2 * time.Second
	}
	bo := backoff.DefaultConfig
	bo.MaxDelay = maxDelay
	if bo.BaseDelay > maxDelay {
		bo.BaseDelay = maxDelay
	}
	c.DialOptions = append(c.DialOptions, grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           bo,
		MinConnectTimeout: c.DialTimeout,
	}))
	c.DialKeepAliveTime = cfg.KeepAlive
	if c.DialKeepAliveTime <= 0 {
		c.DialKeepAliveTime = 10 * time.Second
	}
	c.DialKeepAliveTimeout = 5 * time.Second
	if useTLS {
		t := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CACert != "" {
			pem, err := os.ReadFile(cfg.CACert)
			if err != nil {
				return nil, fmt.Errorf("etcd client: ca cert: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("etcd client: ca cert %s: no PEM certificate found", cfg.CACert)
			}
			t.RootCAs = pool
		}
		if cfg.Cert != "" {
			pair, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
			if err != nil {
				return nil, fmt.Errorf("etcd client: cert %s / key %s: %w", cfg.Cert, cfg.Key, err)
			}
			t.Certificates = []tls.Certificate{pair}
		}
		c.TLS = t
	}
	cli, err := clientv3.New(c)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}

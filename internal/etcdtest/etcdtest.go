// Package etcdtest starts a real in-process etcd (go.etcd.io/etcd/server/v3/embed)
// on loopback for tests and benchmarks.
package etcdtest

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/internal/freeport"
)

// Server is one running embedded etcd member.
type Server struct {
	Dir       string
	ClientURL string
	PeerURL   string
	etcd      *embed.Etcd
}

func freePort(tb testing.TB) int { tb.Helper(); return freeport.Get(tb) }

// Start runs an etcd in a temporary directory on free loopback ports; it is
// stopped when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{
		Dir:       tb.TempDir(),
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", freePort(tb)),
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", freePort(tb)),
	}
	s.Restart(tb)
	tb.Cleanup(s.Stop)
	return s
}

// Restart starts the server again (same data dir and ports) after Stop.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = s.Dir
	cu, _ := url.Parse(s.ClientURL)
	pu, _ := url.Parse(s.PeerURL)
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = "test=" + s.PeerURL
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		tb.Fatal("embedded etcd did not become ready")
	}
	s.etcd = e
}

// Stop stops the server; safe to call twice.
func (s *Server) Stop() {
	if s.etcd != nil {
		s.etcd.Close()
		s.etcd = nil
	}
}

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.ClientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// PutPatroni writes what Patroni 3.0.2 writes for cluster scope under /pg:
// one member key per host (named <scope>-<n>, shaped as in the real DCS
// fixtures) and the leader key naming leader.
func PutPatroni(tb testing.TB, cli *clientv3.Client, scope string, hosts []string, leader string, timeline int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, h := range hosts {
		name := fmt.Sprintf("%s-%d", scope, i+1)
		role := "replica"
		if name == leader {
			role = "master"
		}
		v := fmt.Sprintf(`{"conn_url":"postgres://%s:5432/postgres","api_url":"http://%s:8008/patroni","state":"running","role":%q,"version":"3.0.2","xlog_location":71531312,"timeline":%d}`, h, h, role, timeline)
		if _, err := cli.Put(ctx, "/pg/"+scope+"/members/"+name, v); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, "/pg/"+scope+"/leader", leader); err != nil {
		tb.Fatal(err)
	}
}

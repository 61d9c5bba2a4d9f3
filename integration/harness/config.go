// Package harness runs a real, loopback-only Patroni stack for end-to-end
// tests and for `make demo`: one etcd, and per cluster member a Patroni 3.0.2
// managing PostgreSQL 15 plus a pgbouncer. Every process it starts is
// recorded by PID, so Stop (or a later process reading the state file) can
// stop exactly those processes and nothing else.
//
// HAProxy is not started here: pkg/haproxy owns that.
package harness

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"
)

// Fixed ports, the same on every member (each member has its own loopback
// address, so they do not collide).
const (
	PgPort        = 5432
	PgbouncerPort = 6432
	PatroniPort   = 8008
)

// Credentials created at bootstrap. They match Pigsty's sandbox defaults so
// the demo inventory and docs can use them verbatim.
const (
	MetaUser          = "dbuser_meta"
	MetaPassword      = "DBUser.Meta"
	MetaDB            = "meta"
	SuperUser         = "postgres"
	SuperPassword     = "DBUser.Postgres"
	ReplicatorUser    = "replicator"
	ReplicatorPass    = "DBUser.Replicator"
	DefaultNamespace  = "/pg/"
	DefaultEtcdClient = "127.0.0.1:2379"
	DefaultEtcdPeer   = "127.0.0.1:2380"
)

// Config says what Start runs. The zero value of every field has a default.
type Config struct {
	// BaseDir holds every data directory, config file and log. Every
	// ancestor must be traversable by the postgres user. Required.
	BaseDir string
	// EtcdClient is the etcd client host:port (default 127.0.0.1:2379).
	EtcdClient string
	// EtcdPeer is the etcd peer host:port (default 127.0.0.1:2380).
	EtcdPeer string
	// Clusters default to a single pg-test (see DefaultClusters).
	Clusters []ClusterSpec
	// StartTimeout bounds each wait of Start: etcd ready, first leader,
	// all members healthy (default 4 minutes; two cores are slow).
	StartTimeout time.Duration
	// StopTimeout bounds how long Stop waits for a process after SIGTERM
	// before it sends SIGKILL (default 60 s).
	StopTimeout time.Duration
}

// ClusterSpec is one Patroni cluster (Patroni scope) and its members. The
// first member bootstraps the cluster and is its initial primary.
type ClusterSpec struct {
	Name    string
	Members []MemberSpec
	// TTL, LoopWait and RetryTimeout are Patroni's DCS timings in seconds
	// (defaults 30/10/10). Tests that kill a primary use shorter ones, e.g.
	// 10/2/3; Patroni needs LoopWait + 2*RetryTimeout <= TTL.
	TTL          int
	LoopWait     int
	RetryTimeout int
	// ServiceIP is the address HAProxy binds this cluster's services to (the
	// cluster's "VIP"); "" keeps Pigsty's "*". On one loopback host two
	// clusters cannot both bind *:5433, so each gets its own address.
	ServiceIP string
	// SynchronousMode puts synchronous_mode: true in the bootstrap DCS
	// config: Patroni then names a sync standby in the cluster's sync key.
	SynchronousMode bool
	// Services are the cluster's pg_services in the inventory, each a YAML
	// flow mapping written verbatim, e.g.
	// `{ name: sync, port: 5440, selector: "[? patroni_sync ]", check: /sync }`.
	Services []string
	// NoOfflineQuery leaves pg_offline_query off every member: Pigsty's
	// offline service then selects nobody and has every replica as its
	// backup (in the twin layout its backup twins track the replica
	// service's normal twins). By default the last member of a
	// multi-member cluster has it, as config/demo.yml.
	NoOfflineQuery bool
}

// MemberSpec is one Patroni member. Name is <cluster>-<seq> by Pigsty's
// convention; Addr is a loopback address used for Postgres, Patroni REST and
// pgbouncer.
type MemberSpec struct {
	Name string
	Addr string
}

// TestCluster is the three-member pg-test on 127.0.0.11-13.
func TestCluster() ClusterSpec {
	return ClusterSpec{Name: "pg-test", Members: []MemberSpec{
		{Name: "pg-test-1", Addr: "127.0.0.11"},
		{Name: "pg-test-2", Addr: "127.0.0.12"},
		{Name: "pg-test-3", Addr: "127.0.0.13"},
	}, ServiceIP: "127.0.0.10"}
}

// DuoCluster is the two-member pg-duo on 127.0.0.21-22.
func DuoCluster() ClusterSpec {
	return ClusterSpec{Name: "pg-duo", Members: []MemberSpec{
		{Name: "pg-duo-1", Addr: "127.0.0.21"},
		{Name: "pg-duo-2", Addr: "127.0.0.22"},
	}, ServiceIP: "127.0.0.20"}
}

// DefaultClusters is what an empty Config.Clusters means.
func DefaultClusters() []ClusterSpec { return []ClusterSpec{TestCluster()} }

// withDefaults returns a copy with every default filled in, validated.
func (c Config) withDefaults() (Config, error) {
	if c.BaseDir == "" {
		return c, errors.New("config: BaseDir is required")
	}
	abs, err := filepath.Abs(c.BaseDir)
	if err != nil {
		return c, fmt.Errorf("config: BaseDir %q: %w", c.BaseDir, err)
	}
	c.BaseDir = abs
	if c.EtcdClient == "" {
		c.EtcdClient = DefaultEtcdClient
	}
	if c.EtcdPeer == "" {
		c.EtcdPeer = DefaultEtcdPeer
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 4 * time.Minute
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 60 * time.Second
	}
	if len(c.Clusters) == 0 {
		c.Clusters = DefaultClusters()
	}
	for _, f := range []struct{ name, v string }{{"EtcdClient", c.EtcdClient}, {"EtcdPeer", c.EtcdPeer}} {
		if err := checkLoopbackHostPort(f.v); err != nil {
			return c, fmt.Errorf("config: %s: %w", f.name, err)
		}
	}
	if c.EtcdClient == c.EtcdPeer {
		return c, fmt.Errorf("config: EtcdClient and EtcdPeer are both %s", c.EtcdClient)
	}
	clusters := make([]ClusterSpec, len(c.Clusters))
	names := map[string]bool{}
	addrs := map[string]string{}
	for i, cl := range c.Clusters {
		if cl.Name == "" {
			return c, fmt.Errorf("config: clusters[%d]: name is required", i)
		}
		if names[cl.Name] {
			return c, fmt.Errorf("config: clusters[%d]: duplicate name %q", i, cl.Name)
		}
		names[cl.Name] = true
		if len(cl.Members) == 0 {
			return c, fmt.Errorf("config: cluster %s: no members", cl.Name)
		}
		if cl.TTL == 0 {
			cl.TTL = 30
		}
		if cl.LoopWait == 0 {
			cl.LoopWait = 10
		}
		if cl.RetryTimeout == 0 {
			cl.RetryTimeout = 10
		}
		if cl.TTL < 0 || cl.LoopWait < 1 || cl.RetryTimeout < 1 || cl.LoopWait+2*cl.RetryTimeout > cl.TTL {
			return c, fmt.Errorf("config: cluster %s: ttl %d, loop_wait %d, retry_timeout %d: need loop_wait >= 1 and loop_wait + 2*retry_timeout <= ttl",
				cl.Name, cl.TTL, cl.LoopWait, cl.RetryTimeout)
		}
		cl.Members = append([]MemberSpec(nil), cl.Members...)
		for j, m := range cl.Members {
			if m.Name == "" {
				return c, fmt.Errorf("config: cluster %s: members[%d]: name is required", cl.Name, j)
			}
			if names[m.Name] {
				return c, fmt.Errorf("config: cluster %s: members[%d]: duplicate name %q", cl.Name, j, m.Name)
			}
			names[m.Name] = true
			ip := net.ParseIP(m.Addr)
			if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
				return c, fmt.Errorf("config: member %s: addr %q is not an IPv4 loopback address", m.Name, m.Addr)
			}
			if other, ok := addrs[m.Addr]; ok {
				return c, fmt.Errorf("config: member %s: addr %s is already used by %s", m.Name, m.Addr, other)
			}
			addrs[m.Addr] = m.Name
		}
		clusters[i] = cl
	}
	c.Clusters = clusters
	return c, nil
}

func checkLoopbackHostPort(hp string) error {
	host, _, err := net.SplitHostPort(hp)
	if err != nil {
		return fmt.Errorf("%q: %w", hp, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q: host must be a loopback IP address", hp)
	}
	return nil
}

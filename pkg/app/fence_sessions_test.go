package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/config"
)

// fenceInventory: pg-test on 127.0.1.11-13, services on 127.0.1.10 with
// Pigsty's slow checks (inter 3s, downinter 5s, rise 3: a server forced
// DOWN stays DOWN for seconds whatever its checks say): primary (with
// on-marked-down shutdown-sessions), replica, and "write2", a second
// /primary service whose default-server lacks on-marked-down
// shutdown-sessions.
const fenceInventory = `
all:
  children:
    pg-test:
      hosts:
        127.0.1.11: { pg_seq: 1, pg_role: primary }
        127.0.1.12: { pg_seq: 2, pg_role: replica }
        127.0.1.13: { pg_seq: 3, pg_role: replica }
      vars:
        pg_cluster: pg-test
        pg_port: %d
        pgbouncer_port: %d
        patroni_port: %d
        pg_default_services:
          - { name: primary, port: %d, ip: 127.0.1.10, dest: default, check: /primary, selector: "[]" }
          - { name: replica, port: %d, ip: 127.0.1.10, dest: default, check: /read-only, selector: "[]", backup: "[? pg_role == ` + "`primary`" + ` ]" }
          - { name: write2, port: %d, ip: 127.0.1.10, dest: default, check: /primary, selector: "[]", options: "inter 3s fastinter 1s downinter 5s rise 3 fall 3 maxconn 3000 maxqueue 128 weight 100" }
`

// sessionMember is a Patroni-like member whose postgres and pgbouncer
// listeners greet a connection with the member's name and then echo every
// line (a long-lived session), and whose REST API answers /primary as
// Patroni does, with a status body (state "stopping" while Patroni stops
// PostgreSQL: still 200 on the primary).
type sessionMember struct {
	name        string
	mu          sync.Mutex
	role, state string
}

func (m *sessionMember) set(role, state string) {
	m.mu.Lock()
	m.role, m.state = role, state
	m.mu.Unlock()
}

func (m *sessionMember) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	role, state := m.role, m.state
	m.mu.Unlock()
	ok := false
	switch strings.TrimSuffix(r.URL.Path, "/") {
	case "/primary", "":
		ok = role == "primary"
	case "/replica":
		ok = role == "replica"
	case "/read-only":
		ok = true
	}
	code := http.StatusServiceUnavailable
	if ok {
		code = http.StatusOK
	}
	patroniRole := map[string]string{"primary": "master", "replica": "replica"}[role]
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"state": state, "role": patroniRole})
}

func startSessionMember(t *testing.T, name, addr string, pgPort, bouncerPort, restPort int, role string) *sessionMember {
	m := &sessionMember{name: name, role: role, state: "running"}
	rest := listen(t, fmt.Sprintf("%s:%d", addr, restPort))
	srv := &http.Server{Handler: m, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(rest) }()
	t.Cleanup(func() { srv.Close() })
	var conns sync.WaitGroup
	for _, p := range []int{pgPort, bouncerPort} {
		ln := listen(t, fmt.Sprintf("%s:%d", addr, p))
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				conns.Add(1)
				go func() {
					defer conns.Done()
					defer c.Close()
					if _, err := c.Write([]byte(name + "\n")); err != nil {
						return
					}
					br := bufio.NewReader(c)
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if _, err := c.Write([]byte(line)); err != nil {
							return
						}
					}
				}()
			}
		}()
	}
	return m
}

// session is one long-lived client connection through an HAProxy service.
type session struct {
	c      net.Conn
	br     *bufio.Reader
	member string
}

func openSession(addr string) (*session, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, err
	}
	return &session{c: c, br: br, member: strings.TrimSpace(line)}, nil
}

// alive sends a line and reports whether it came back.
func (s *session) alive() bool {
	_ = s.c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := s.c.Write([]byte("ping\n")); err != nil {
		return false
	}
	line, err := s.br.ReadString('\n')
	return err == nil && line == "ping\n"
}

// cutWithin waits up to d for the session to be closed by the other side
// (HAProxy): true when it was.
func (s *session) cutWithin(d time.Duration) bool {
	_ = s.c.SetReadDeadline(time.Now().Add(d))
	_, err := s.br.ReadByte()
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return err != nil
}

// sessionTo opens sessions to addr until one lands on member (at most 20).
func sessionTo(t *testing.T, addr, member string) *session {
	t.Helper()
	for range 20 {
		s, err := openSession(addr)
		if err != nil {
			t.Fatalf("session through %s: %v", addr, err)
		}
		if s.member == member {
			t.Cleanup(func() { s.c.Close() })
			return s
		}
		s.c.Close()
	}
	t.Fatalf("no session through %s landed on %s in 20 tries", addr, member)
	return nil
}

// putMembers writes pg-test's member keys on 127.0.1.11-13 (REST on
// restPort) with leader as the primary, and the leader key ("" deletes it).
func putMembers(t *testing.T, cli *clientv3.Client, restPort int, leader string, timeline int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 1; i <= 3; i++ {
		name, role := fmt.Sprintf("pg-test-%d", i), "replica"
		if name == leader {
			role = "master"
		}
		v := fmt.Sprintf(`{"conn_url":"postgres://127.0.1.1%d:5432/postgres","api_url":"http://127.0.1.1%d:%d/patroni","state":"running","role":%q,"version":"3.0.2","timeline":%d}`,
			i, i, restPort, role, timeline)
		if _, err := cli.Put(ctx, "/pg/pg-test/members/"+name, v); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if leader == "" {
		_, err = cli.Delete(ctx, "/pg/pg-test/leader")
	} else {
		_, err = cli.Put(ctx, "/pg/pg-test/leader", leader)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestFenceCutsWriteSessions: real etcd, real HAProxy 2.6 and `controller
// run`'s Serve, through the direct driver and the real Data Plane API 2.9.x
// and 3.x. A switchover is requested; nothing is fenced until Patroni says
// it stops the old primary's PostgreSQL (its /primary still answers 200):
// then the old primary is forced DOWN in the write services and an
// established session through the primary service is cut (Pigsty's
// on-marked-down shutdown-sessions; the direct driver also cuts it with
// `shutdown sessions server`, so in the write service without that option
// too; through the API it cannot, and the session stays: the controller
// warns about such a service). A session through the replica service to
// a member whose role does not change survives the whole switchover.
func TestFenceCutsWriteSessions(t *testing.T) { forEachDriver(t, testFenceCutsWriteSessions) }

func testFenceCutsWriteSessions(t *testing.T, bin, apiBin string) {
	pgPort, bouncerPort, restPort := freePort(t), freePort(t), freePort(t)
	primaryPort, replicaPort, write2Port := freePort(t), freePort(t), freePort(t)
	members := map[string]*sessionMember{}
	for i, role := range []string{"primary", "replica", "replica"} {
		name := fmt.Sprintf("pg-test-%d", i+1)
		members[name] = startSessionMember(t, name, fmt.Sprintf("127.0.1.1%d", i+1), pgPort, bouncerPort, restPort, role)
	}
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	putMembers(t, cli, restPort, "pg-test-1", 1)

	dir := t.TempDir()
	text := fmt.Sprintf(fenceInventory, pgPort, bouncerPort, restPort, primaryPort, replicaPort, write2Port)
	cfg := &config.Config{Listen: "127.0.0.1:0", Etcd: config.Etcd{Endpoints: []string{srv.ClientURL}}}
	rt := startTarget(t, cfg, dir, bin, apiBin, text, 20*time.Second)
	cfg.Controller.Debounce.Duration = 5 * time.Millisecond
	startServe(t, cfg)
	primary, replica, write2 := fmt.Sprintf("127.0.1.10:%d", primaryPort), fmt.Sprintf("127.0.1.10:%d", replicaPort), fmt.Sprintf("127.0.1.10:%d", write2Port)
	// status returns "UP", "DOWN", ... for backend/server in the running HAProxy.
	status := func(backend, server string) string {
		rows, err := rt.ShowStat(context.Background())
		if err != nil {
			return "error: " + err.Error()
		}
		for _, r := range rows {
			if r.Proxy == backend && r.Name == server {
				return r.Status
			}
		}
		return "absent"
	}
	eventually(t, "the primary service on pg-test-1 and every server UP", func() bool {
		return whoAnswers(primary) == "pg-test-1" && whoAnswers(write2) == "pg-test-1" &&
			strings.HasPrefix(status("pg-test-replica", "pg-test-3"), "UP") && strings.HasPrefix(status("pg-test-replica", "pg-test-2"), "UP")
	})
	write := sessionTo(t, primary, "pg-test-1")
	write2Sess := sessionTo(t, write2, "pg-test-1")
	read := sessionTo(t, replica, "pg-test-3")

	// The request: Patroni checkpoints first; the write path is untouched
	// (the unit tests check that nothing is fenced at the request).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/pg/pg-test/failover", `{"leader":"pg-test-1","member":"pg-test-2"}`); err != nil {
		t.Fatal(err)
	}
	if !write.alive() {
		t.Fatal("the write session died at the request")
	}
	// Patroni stops PostgreSQL: /primary still answers 200, body "stopping".
	stopping := time.Now()
	members["pg-test-1"].set("primary", "stopping")
	if !write.cutWithin(10 * time.Second) {
		t.Fatalf("the write session through the primary service was not cut within 10s of Patroni stopping PostgreSQL (pg-test-1 %s)",
			status("pg-test-primary", "pg-test-1"))
	}
	t.Logf("write session cut %s after Patroni said stopping", time.Since(stopping).Round(time.Millisecond))
	if st := status("pg-test-primary", "pg-test-1"); !strings.HasPrefix(st, "DOWN") {
		t.Errorf("pg-test-1 %q in the primary service after the cut, want DOWN (forced: its /primary answers 200)", st)
	}
	eventually(t, "pg-test-1 forced DOWN in write2", func() bool { return strings.HasPrefix(status("pg-test-write2", "pg-test-1"), "DOWN") })
	if apiBin == "" {
		if !write2Sess.cutWithin(5 * time.Second) {
			t.Error("direct driver: the session through write2 (no on-marked-down shutdown-sessions) was not cut")
		}
	} else if !write2Sess.alive() {
		// HAProxy 2.6 cuts a server's sessions on a forced health down
		// only with on-marked-down shutdown-sessions, and the API cannot
		// send `shutdown sessions`: if this changes, the warning is wrong.
		t.Error("Data Plane API: the session through write2 (no on-marked-down shutdown-sessions) was cut; the warning says it is not")
	}
	if whoAnswers(primary) == "pg-test-1" {
		t.Error("a new connection through the primary service reached the fenced pg-test-1")
	}
	if !read.alive() {
		t.Fatal("the read session to pg-test-3 (role unchanged) died with the fence")
	}
	// Something brings it UP while the fence lasts (an operator here; its
	// checks could): it is forced DOWN again.
	if out, err := rt.Exec(ctx, "set server pg-test-primary/pg-test-1 health up"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("set server health up: %q %v", out, err)
	}
	if st := status("pg-test-primary", "pg-test-1"); !strings.HasPrefix(st, "UP") {
		t.Fatalf("pg-test-1 %q right after set server health up", st)
	}
	eventually(t, "pg-test-1 forced DOWN again while fenced", func() bool { return strings.HasPrefix(status("pg-test-primary", "pg-test-1"), "DOWN") })

	// Patroni finishes: pg-test-1 demoted, pg-test-2 promoted, the keys move.
	members["pg-test-1"].set("replica", "running")
	putMembers(t, cli, restPort, "", 1)
	members["pg-test-2"].set("primary", "running")
	putMembers(t, cli, restPort, "pg-test-2", 2)
	if _, err := cli.Delete(ctx, "/pg/pg-test/failover"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "writes reach pg-test-2", func() bool { return whoAnswers(primary) == "pg-test-2" })
	if !read.alive() {
		t.Error("the read session to pg-test-3 (role unchanged) died in the switchover")
	}
}

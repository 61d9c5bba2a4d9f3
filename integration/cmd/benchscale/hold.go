package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// fakeCluster makes one cluster's members answer: Patroni's REST health
// checks by role on :8008, and postgres (:5432) and pgbouncer (:6432)
// listeners that greet each connection with the member's name and hold it
// open. It lets the benchmark keep client sessions through every service
// across a switchover: which survive, and how many old HAProxy workers
// they keep alive.
type fakeCluster struct {
	mu      sync.Mutex
	roles   map[string]string // member name -> primary or replica
	servers []*http.Server
	lns     []net.Listener
	conns   []net.Conn
}

func startFakeCluster(f *fleet, i int) (*fakeCluster, error) {
	fc := &fakeCluster{roles: map[string]string{}}
	for seq := 1; seq <= 3; seq++ {
		name, addr := f.memberName(i, seq), f.addr(i, seq)
		fc.roles[name] = "replica"
		if seq == f.leader[i] {
			fc.roles[name] = "primary"
		}
		rest, err := net.Listen("tcp", addr+":8008")
		if err != nil {
			fc.close()
			return nil, err
		}
		srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fc.mu.Lock()
			role := fc.roles[name]
			fc.mu.Unlock()
			ok := false
			switch r.URL.Path {
			case "/primary", "/", "/read-write", "/master":
				ok = role == "primary"
			case "/replica":
				ok = role == "replica"
			case "/read-only":
				ok = true
			}
			// Patroni's REST API answers every health endpoint with the
			// member's status document; the controller's transition probes
			// read role and state from it to confirm a new primary.
			w.Header().Set("Content-Type", "application/json")
			if ok {
				w.WriteHeader(http.StatusOK)
			} else {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			patroniRole := "replica"
			if role == "primary" {
				patroniRole = "master" // Patroni 3.0.2
			}
			fmt.Fprintf(w, `{"state":"running","role":%q,"server_version":150000,"patroni":{"version":"3.0.2","scope":%q}}`, patroniRole, f.clusterName(i))
		})}
		fc.servers = append(fc.servers, srv)
		go func() { _ = srv.Serve(rest) }()
		for _, port := range []int{5432, 6432} {
			ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", addr, port))
			if err != nil {
				fc.close()
				return nil, err
			}
			fc.lns = append(fc.lns, ln)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					fc.mu.Lock()
					fc.conns = append(fc.conns, c)
					fc.mu.Unlock()
					_, _ = c.Write([]byte(name + "\n"))
				}
			}()
		}
	}
	return fc, nil
}

func (fc *fakeCluster) setRole(member, role string) {
	fc.mu.Lock()
	fc.roles[member] = role
	fc.mu.Unlock()
}

func (fc *fakeCluster) close() {
	if fc == nil {
		return
	}
	for _, s := range fc.servers {
		_ = s.Close()
	}
	for _, l := range fc.lns {
		_ = l.Close()
	}
	fc.mu.Lock()
	for _, c := range fc.conns {
		_ = c.Close()
	}
	fc.mu.Unlock()
}

// session is one client connection held through a service.
type session struct {
	service string
	member  string // who greeted it
	conn    net.Conn
}

// openSessions connects once to each service address and reads the
// member's greeting; bounded by d, retried while the service has no UP
// server yet.
func openSessions(ctx context.Context, addrs map[string]string, d time.Duration) ([]*session, error) {
	var out []*session
	names := make([]string, 0, len(addrs))
	for n := range addrs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, svc := range names {
		var s *session
		err := waitFor(ctx, d, 250*time.Millisecond, func() (bool, error) {
			c, err := net.DialTimeout("tcp", addrs[svc], time.Second)
			if err != nil {
				return false, nil
			}
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				c.Close()
				return false, nil
			}
			_ = c.SetReadDeadline(time.Time{})
			s = &session{service: svc, member: strings.TrimSpace(line), conn: c}
			return true, nil
		})
		if err != nil {
			closeSessions(out)
			return nil, fmt.Errorf("session through %s (%s): %w", svc, addrs[svc], err)
		}
		out = append(out, s)
	}
	return out, nil
}

// alive reports whether the session is still open: a read that times out
// means nobody closed it.
func (s *session) alive() bool {
	_ = s.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var b [1]byte
	_, err := s.conn.Read(b[:])
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

func closeSessions(ss []*session) {
	for _, s := range ss {
		_ = s.conn.Close()
	}
}

// sessionsText says which sessions survived, e.g.
// "primary→pg-b0500-1 cut, replica→pg-b0500-3 kept".
func sessionsText(ss []*session, kept []bool) string {
	var parts []string
	for i, s := range ss {
		st := "cut"
		if kept[i] {
			st = "kept"
		}
		parts = append(parts, fmt.Sprintf("%s→%s %s", s.service, s.member, st))
	}
	return strings.Join(parts, ", ")
}

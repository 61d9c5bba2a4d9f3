package dataplaneapi_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// statsCommand runs one command on HAProxy's admin socket.
func statsCommand(sock, cmd string) (string, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return strings.TrimSpace(string(b)), err
}

// passingCheck serves a Patroni REST double on ip that answers every check
// 200, until the test ends, and returns its port.
func passingCheck(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Skipf("cannot listen on %s: %v", ip, err)
	}
	check := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }),
		ReadHeaderTimeout: time.Second}
	go func() { _ = check.Serve(ln) }()
	t.Cleanup(func() { _ = check.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// opStateOf is a server's srv_op_state in `show servers state` on the
// stats socket sock: 0 stopped, 1 starting, 2 running.
func opStateOf(sock, backend, server string) string {
	out, err := statsCommand(sock, "show servers state "+backend)
	if err != nil {
		return err.Error()
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[3] == server {
			return f[5]
		}
	}
	return "absent"
}

// TestRealAPIForceDownWithAReload: the write fence through the real API
// (2.9.9 and 3.2.0): the old primary, UP by its passing checks, is forced
// DOWN in the write services by runtime PUTs (operational_state down) made
// before the configuration write of the same apply (backup flips, one
// reload), and is still DOWN in the new worker after the reload, with its
// weight unchanged (100: no weight 0 in the file). While fenced nothing
// more is done; lifted, it is left to its checks, which bring it back UP.
func TestRealAPIForceDownWithAReload(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		tg := dataplaneapi.NewTarget(rs.c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadPollInterval: 100 * time.Millisecond})
		// pg-f-1's Patroni answers every check 200 (it is the primary).
		checkPort := passingCheck(t, "127.0.1.11")
		place := func(svcs []services.Service, fence bool) []services.Service {
			for i := range svcs {
				svcs[i].IP = "127.0.0.1"
				svcs[i].Port = rs.svcPorts[i%4]
				for j := range svcs[i].Servers {
					sv := &svcs[i].Servers[j]
					if sv.Name == "pg-f-1" {
						sv.CheckPort = checkPort
						sv.ForceDown = fence && services.WriteCheck(svcs[i].Check)
					}
				}
			}
			return svcs
		}
		admin := filepath.Join(rs.dir, "admin.sock")
		stat := func(backend string) string {
			out, err := statsCommand(admin, "show servers state "+backend)
			if err != nil {
				return err.Error()
			}
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) > 7 && f[3] == "pg-f-1" {
					return "op " + f[5] + " weight " + f[7] // srv_op_state (0 stopped, 2 running), srv_uweight
				}
			}
			return "absent: " + out
		}
		if _, err := tg.Apply(ctx, place(cluster("pg-f", 1, 3, 1), false)); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 40*time.Second, func() bool { return stat("pg-f-primary") == "op 2 weight 100" })
		// Fence and switchover in one apply (backup flips: a reload).
		res, err := tg.Apply(ctx, place(cluster("pg-f", 1, 3, 2), true))
		if err != nil || !res.Reloaded || res.ReloadResult != "succeeded" {
			t.Fatalf("fence + switchover: %+v %v", res, err)
		}
		var downs []string
		for _, c := range res.Changes {
			if c.Kind == "force_down" {
				downs = append(downs, c.Backend+"/"+c.Server)
			}
		}
		if strings.Join(downs, " ") != "pg-f-primary/pg-f-1 pg-f-default/pg-f-1" || res.ForcedDown.IsZero() {
			t.Errorf("force_down %v (at %v), want pg-f-1 in the primary and default services", downs, res.ForcedDown)
		}
		for _, b := range []string{"pg-f-primary", "pg-f-default"} {
			if got := stat(b); got != "op 0 weight 100" {
				t.Errorf("%s/pg-f-1 after the reload: %s, want stopped at weight 100 (its checks pass: forced)", b, got)
			}
		}
		if got := stat("pg-f-replica"); got != "op 2 weight 100" {
			t.Errorf("pg-f-replica/pg-f-1: %s, want running: the fence is for write services only", got)
		}
		if again, err := tg.Apply(ctx, place(cluster("pg-f", 1, 3, 2), true)); err != nil || len(again.Changes) != 0 {
			t.Errorf("while fenced: %+v %v, want no change", again.Changes, err)
		}
		// Lifted: no write; its checks (rise 3) bring it back.
		if res, err := tg.Apply(ctx, place(cluster("pg-f", 1, 3, 2), false)); err != nil || len(res.Changes) != 0 {
			t.Errorf("lift: %+v %v, want no change", res.Changes, err)
		}
		waitUntil(t, 60*time.Second, func() bool { return stat("pg-f-primary") == "op 2 weight 100" })
	})
}

// TestRealAPIForceUpReadsOnlyTheirHealth: forcing new primaries UP in
// several backends (a mass failover) reads the health of those backends
// only, one runtime GET each (8 in flight), not every server's.
func TestRealAPIForceUpReadsOnlyTheirHealth(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		tg := dataplaneapi.NewTarget(rs.c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadPollInterval: 100 * time.Millisecond})
		ports := []int{rs.svcPorts[0], rs.svcPorts[1], rs.svcPorts[2], rs.svcPorts[3], freePort(t), freePort(t), freePort(t), freePort(t)}
		fleet := func(primary int, force bool) []services.Service {
			var out []services.Service
			for i, name := range []string{"pg-m1", "pg-m2"} {
				svcs := cluster(name, 5+i, 3, primary)
				for j := range svcs {
					svcs[j].IP, svcs[j].Port = "127.0.0.1", ports[i*4+j]
					if force && (svcs[j].Service == "primary" || svcs[j].Service == "default") {
						for k := range svcs[j].Servers {
							svcs[j].Servers[k].ForceUp = svcs[j].Servers[k].Name == fmt.Sprintf("%s-%d", name, primary)
						}
					}
				}
				out = append(out, svcs...)
			}
			return out
		}
		if _, err := tg.Apply(ctx, fleet(1, false)); err != nil {
			t.Fatal(err)
		}
		// Nothing listens: wait until the checks have taken the servers DOWN
		// (fall 3 after the reload's first checks; a cold machine needs more
		// than the ~10 s this takes here).
		var seen string
		defer func() {
			if t.Failed() {
				t.Logf("last runtime state seen: %s", seen)
			}
		}()
		waitUntil(t, 90*time.Second, func() bool {
			for _, c := range []string{"pg-m1", "pg-m2"} {
				for _, svc := range []string{"primary", "default"} {
					r, err := rs.c.GetRuntimeServer(ctx, c+"-"+svc, c+"-2")
					if err != nil {
						seen = fmt.Sprintf("%s-%s/%s-2: %v", c, svc, c, err)
						return false
					}
					if r.OperationalState != "down" {
						seen = fmt.Sprintf("%s-%s/%s-2: %+v", c, svc, c, *r)
						return false
					}
				}
			}
			return true
		})
		rs.rt.reset(nil)
		res, err := tg.Apply(ctx, fleet(2, true))
		if err != nil {
			t.Fatal(err)
		}
		forced := 0
		for _, c := range res.Changes {
			if c.Kind == "force_up" {
				forced++
			}
		}
		if forced != 4 {
			t.Errorf("forced up %d servers, want 4 (the new primary in 2 write services × 2 clusters): %+v", forced, res.Changes)
		}
		// Health is read once, before the write; after a reload the
		// running HAProxy is read back (polled) until it serves the file.
		stats, perBackend, written := 0, 0, false
		for _, r := range rs.rt.requests() {
			switch {
			case strings.HasPrefix(r, "POST ") || strings.HasPrefix(r, "PUT "):
				written = true
			case strings.Contains(r, "/stats/native") && !written:
				stats++
			case strings.HasPrefix(r, "GET ") && strings.Contains(r, "servers") && strings.Contains(r, "/runtime/") && !written:
				perBackend++
			}
		}
		// Only the backends forcing up are read (not every server of the
		// HAProxy: native stats took 10 s at 1,000 clusters).
		if stats != 0 || perBackend != 4 {
			t.Errorf("health reads before the write: %d native stats, %d per backend; want 0 and 4 (the write services of the 2 clusters)", stats, perBackend)
		}
	})
}

package dataplaneapi_test

import (
	"context"
	"fmt"
	"io"
	"net"
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

// TestRealAPIFenceLiftWithAReload: a write fence (weight 0, applied at
// runtime) lifted in the same apply as backup flips that reload HAProxy
// must be lifted in the running HAProxy too, not only in the file.
func TestRealAPIFenceLiftWithAReload(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		tg := dataplaneapi.NewTarget(rs.c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadPollInterval: 100 * time.Millisecond})
		place := func(svcs []services.Service) []services.Service {
			for i := range svcs {
				svcs[i].IP = "127.0.0.1"
				svcs[i].Port = rs.svcPorts[i%4]
			}
			return svcs
		}
		admin := filepath.Join(rs.dir, "admin.sock")
		weight := func() string {
			out, err := statsCommand(admin, "get weight pg-f-primary/pg-f-1")
			if err != nil {
				return err.Error()
			}
			return out
		}
		if _, err := tg.Apply(ctx, place(cluster("pg-f", 1, 3, 1))); err != nil {
			t.Fatal(err)
		}
		fenced := place(cluster("pg-f", 1, 3, 1))
		fenced[0].Servers[0].Weight = 0
		res, err := tg.Apply(ctx, fenced)
		if err != nil {
			t.Fatalf("fence: %v", err)
		}
		// The API applies a weight-only PUT at runtime; once in a while
		// (observed once on each, right after the create's reload) it
		// answers with a reload instead. Either way the lift below must
		// reach the running HAProxy.
		t.Logf("fence (weight 100 -> 0): reloaded %v", res.Reloaded)
		waitUntil(t, 20*time.Second, func() bool { return strings.HasPrefix(weight(), "0 ") })
		// Lift the fence and switch over in one apply (one reload).
		res, err = tg.Apply(ctx, place(cluster("pg-f", 1, 3, 2)))
		if err != nil || !res.Reloaded || res.ReloadResult != "succeeded" {
			t.Fatalf("lift + switchover: %+v %v", res, err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for !strings.HasPrefix(weight(), "100 ") {
			if time.Now().After(deadline) {
				t.Fatalf("the running HAProxy still has pg-f-1 at %q after the lift (the file says 100)", weight())
			}
			time.Sleep(100 * time.Millisecond)
		}
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

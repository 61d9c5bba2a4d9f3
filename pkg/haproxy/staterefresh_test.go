package haproxy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// stateFileServers reads the server-state file: backend/server -> its line.
func stateFileServers(t testing.TB, path string) map[string]StateServer {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseServersState(string(text))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]StateServer{}
	for _, s := range st {
		out[s.Backend+"/"+s.Server] = s
	}
	return out
}

// TestStateFileRefreshedAfterRuntimeApplies: runtime applies (a failover's
// fence and force-up, weights) refresh the server-state file in the
// background, at most once per StateFileRefresh and once after the last
// apply of a burst, so that an HAProxy restarted behind the controller's
// back starts with the live roles (the old primary DOWN, the new one UP),
// not with those of the last reload; Close makes the refresh still wanted.
func TestStateFileRefreshedAfterRuntimeApplies(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	const every = 300 * time.Millisecond
	opts := r.opts
	opts.StateFileRefresh = every
	d := NewDirect(opts, zaptest.NewLogger(t))
	t.Cleanup(func() { _ = d.Close() })
	r.direct = d
	m1 := newMember(t, "pg-t-1", "127.0.0.91", "primary")
	m2 := newMember(t, "pg-t-2", "127.0.0.92", "replica")
	pp, rp := freePort(t, frontIP), freePort(t, frontIP)
	desired := func(primary, fence, up string, weight2 int) []services.Service {
		svcs := twinCluster(pp, rp, m1, m2)
		for i := range svcs {
			svcs[i].DefaultServer = slowChecks // the file's states hold for seconds after a restart
		}
		for i := range svcs[0].Servers {
			sv := &svcs[0].Servers[i]
			sv.ForceDown, sv.ForceUp = sv.Name == fence, sv.Name == up
			if sv.Name == "pg-t-2" {
				sv.Weight = weight2
			}
		}
		for i := range svcs[1].Servers {
			sv := &svcs[1].Servers[i]
			sv.Disabled = (sv.Member == primary) != sv.Backup
		}
		return svcs
	}
	if res, err := d.Apply(ctx, desired("pg-t-1", "", "pg-t-1", 100)); err != nil || !res.Reloaded {
		t.Fatalf("first apply: %+v %v, want a reload", res, err)
	}
	if res, err := d.Apply(ctx, desired("pg-t-1", "", "pg-t-1", 100)); err != nil || kinds(res.Changes) != "force_up:pg-t-primary/pg-t-1" {
		t.Fatalf("force-up: %s %v", kinds(res.Changes), err)
	}
	r.waitStatus(t, map[string]bool{"pg-t-primary/pg-t-1": true, "pg-t-primary/pg-t-2": false})

	// A failover at runtime: pg-t-1 fenced, pg-t-2 forced UP.
	m1.setRole("replica")
	m2.setRole("primary")
	res, err := d.Apply(ctx, desired("pg-t-2", "pg-t-1", "pg-t-2", 100))
	if err != nil || res.Reloaded || !target.RuntimeOnly(res.Changes) {
		t.Fatalf("failover: %+v %v, want runtime changes", res, err)
	}
	eventually(t, 10*time.Second, "the state file with the failover's health", func() string {
		st := stateFileServers(t, r.opts.ServerStateFile)
		if a, b := st["pg-t-primary/pg-t-1"].OpState, st["pg-t-primary/pg-t-2"].OpState; a != 0 || b != 2 {
			return fmt.Sprintf("op_state pg-t-1 %d, pg-t-2 %d (want 0 and 2)", a, b)
		}
		return ""
	})

	// A burst of runtime applies (weights): a few refreshes, not one each,
	// and one after the last.
	const applies = 10
	for i := range applies {
		w := 50 + i
		if res, err := d.Apply(ctx, desired("pg-t-2", "pg-t-1", "pg-t-2", w)); err != nil || kinds(res.Changes) != "set_weight:pg-t-primary/pg-t-2" {
			t.Fatalf("weight %d: %s %v", w, kinds(res.Changes), err)
		}
	}
	last := 50 + applies - 1
	eventually(t, 10*time.Second, "the state file with the burst's last weight", func() string {
		if w := stateFileServers(t, r.opts.ServerStateFile)["pg-t-primary/pg-t-2"].UWeight; w != last {
			return fmt.Sprintf("weight %d, want %d", w, last)
		}
		return ""
	})
	d.refresh.mu.Lock()
	began := append([]time.Time(nil), d.refresh.began...)
	d.refresh.mu.Unlock()
	for i := 1; i < len(began); i++ {
		if gap := began[i].Sub(began[i-1]); gap < every {
			t.Errorf("refreshes %d and %d began %s apart, want at least %s", i-1, i, gap, every)
		}
	}
	// 12 runtime applies (the force-up, the failover, the burst).
	if n := len(began); n < 2 || n >= 2+applies {
		t.Errorf("%d refreshes for %d runtime applies", n, 2+applies)
	}
	t.Logf("%d refreshes for %d runtime applies", len(began), 2+applies)

	// HAProxy restarted (a host reboot, systemctl restart) loads that file.
	if err := r.proc.Stop(); err != nil {
		t.Fatal(err)
	}
	p, err := StartProcess(ctx, r.opts.HAProxyBin, r.opts.ConfigPath, r.opts.MasterSocket, filepath.Join(r.dir, "haproxy2.pid"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("stop haproxy: %v", err)
		}
	})
	st := r.stat(t)
	if got := st["pg-t-primary/pg-t-1"].Status; got != "DOWN" {
		t.Errorf("after a restart the fenced old primary is %q, want DOWN", got)
	}
	if got := st["pg-t-primary/pg-t-2"].Status; got != "UP" {
		t.Errorf("after a restart the new primary is %q, want UP", got)
	}

	// Close makes the refresh an apply still wanted, at once.
	if _, err := d.Apply(ctx, desired("pg-t-2", "pg-t-1", "pg-t-2", 100)); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if w := stateFileServers(t, r.opts.ServerStateFile)["pg-t-primary/pg-t-2"].UWeight; w != 100 {
		t.Errorf("state file weight %d after Close, want 100", w)
	}
}

package haproxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// TestTwinsEarlyReadBackOnlyItsFlips: the early flips of a replica service
// whose backup twins track the primary service ready the incoming normal
// twin at once and leave the outgoing one's drain for after the force-up
// that brings the tracker UP. Their read-back, which may run while the
// apply's fences are still being sent (a 1,000-cluster fence pipeline:
// here the fences wait until the early flips are done), reads the servers
// they flipped only: it does not find the outgoing twin still ready and
// drain it before the new primary's `health up` (which left the service
// without an active server when the old primary restarts), and logs no
// repair.
func TestTwinsEarlyReadBackOnlyItsFlips(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	core, logs := observer.New(zapcore.InfoLevel)
	r.direct.log = zap.New(core)
	m1 := newMember(t, "pg-t-1", "127.0.0.85", "primary")
	m2 := newMember(t, "pg-t-2", "127.0.0.86", "replica")
	pp, rp := freePort(t, frontIP), freePort(t, frontIP)
	desired := func(primary, fence, up string) []services.Service {
		svcs := twinCluster(pp, rp, m1, m2)
		for i := range svcs[0].Servers {
			sv := &svcs[0].Servers[i]
			sv.ForceDown, sv.ForceUp = sv.Name == fence, sv.Name == up
		}
		for i := range svcs[1].Servers {
			sv := &svcs[1].Servers[i]
			if sv.Backup {
				sv.Track, sv.CheckPort, sv.Disabled = "pg-t-primary/"+sv.Member, 0, false
			} else {
				sv.Disabled = sv.Member == primary
			}
		}
		return svcs
	}
	if _, err := r.direct.Apply(ctx, desired("pg-t-1", "", "")); err != nil {
		t.Fatal(err)
	}
	r.waitStatus(t, map[string]bool{"pg-t-primary/pg-t-1": true, "pg-t-replica/pg-t-2": true, "pg-t-replica/pg-t-1.backup": true})
	// The second apply leaves the read cache in step: the next one flips
	// early.
	if res, err := r.direct.Apply(ctx, desired("pg-t-1", "", "")); err != nil || len(res.Changes) != 0 {
		t.Fatalf("second apply: %s %v, want nothing to do", kinds(res.Changes), err)
	}

	ended := make(chan struct{})
	r.direct.earlyEnded = func() { close(ended) }
	defer func() { r.direct.earlyEnded = nil }()
	log := &cmdLog{}
	log.watch(t, r, func(cmds []string) {
		if !strings.HasSuffix(cmds[0], " health down") {
			return
		}
		// A slow fence pipeline: the early flips and their read-back end
		// first.
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Error("the early flips did not end within 10 s")
		}
	})
	// A failover: pg-t-1 restarts as a replica (its checks fail for now),
	// pg-t-2 is the new primary, forced UP.
	m1.setRole("restarting")
	m2.setRole("primary")
	res, err := r.direct.Apply(ctx, desired("pg-t-2", "pg-t-1", "pg-t-2"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.direct.earlyFlipped, " "); got != "pg-t-replica/pg-t-1" {
		t.Errorf("early flips %q, want pg-t-replica/pg-t-1's ready only", got)
	}
	if got := kinds(res.Changes); got != "force_down:pg-t-primary/pg-t-1 force_up:pg-t-primary/pg-t-2 set_state:pg-t-replica/pg-t-1 set_state:pg-t-replica/pg-t-2" {
		t.Errorf("changes %s", got)
	}
	up, drain := log.index("set server pg-t-primary/pg-t-2 health up"), log.index("set server pg-t-replica/pg-t-2 state drain")
	if up < 0 || drain < up {
		t.Errorf("pg-t-replica/pg-t-2 drained (command %d) before the new primary's health up (command %d):\n%s", drain, up, log)
	}
	if n := strings.Count(log.String()+"\n", "set server pg-t-replica/pg-t-2 state drain\n"); n != 1 {
		t.Errorf("pg-t-replica/pg-t-2 drained %d times, want once:\n%s", n, log)
	}
	if n := logs.FilterMessageSnippet("admin states").Len(); n != 0 {
		t.Errorf("%d admin-state repairs logged, want none: %v", n, logs.FilterMessageSnippet("admin states").All())
	}
	wantAdmins(t, r, map[string]string{"pg-t-1": "ready", "pg-t-2": "drain"})
}

// TestTwinsRepairKeepsWriteOrder: a read-back that finds flips not taken
// sets them again in the apply's order: in a role-dependent write service
// the outgoing twin's maint before the incoming twin's ready (never two
// primaries), a held new leader's hold right after its ready (never UP
// between two batches); readies before the read services' drains.
func TestTwinsRepairKeepsWriteOrder(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m1 := newMember(t, "pg-t-1", "127.0.0.87", "primary")
	m2 := newMember(t, "pg-t-2", "127.0.0.88", "replica")
	pp, rp, wp := freePort(t, frontIP), freePort(t, frontIP), freePort(t, frontIP)
	desired := func(primary, fence, up, hold string) []services.Service {
		return writerCluster(pp, rp, wp, slowChecks, primary, fence, up, hold, m1, m2)
	}
	for range 2 {
		if _, err := r.direct.Apply(ctx, desired("pg-t-1", "", "pg-t-1", "")); err != nil {
			t.Fatal(err)
		}
	}
	r.waitStatus(t, map[string]bool{"pg-t-primary/pg-t-1": true, "pg-t-writer/pg-t-1": true})
	// pg-t-2 the new leader, held: what the apply would flip, as if
	// HAProxy had taken none of it (the running HAProxy is still pg-t-1's).
	m2.setRole("primary")
	want := desired("pg-t-2", "pg-t-1", "", "pg-t-2")
	flip := func(b, s, detail string) target.Change {
		return target.Change{Kind: target.KindSetState, Backend: b, Server: s, Detail: detail, Runtime: true}
	}
	changes := []target.Change{
		{Kind: target.KindForceDown, Backend: "pg-t-writer", Server: "pg-t-2", Runtime: true, Held: true},
		flip("pg-t-replica", "pg-t-1", "drain -> ready"), flip("pg-t-replica", "pg-t-1.backup", "ready -> drain"),
		flip("pg-t-replica", "pg-t-2", "ready -> drain"), flip("pg-t-replica", "pg-t-2.backup", "drain -> ready"),
		flip("pg-t-writer", "pg-t-1", "ready -> maint"), flip("pg-t-writer", "pg-t-2", "maint -> ready"),
	}
	probe := &Runtime{Socket: r.opts.StatsSocket}
	log := &cmdLog{}
	look := func(when string) {
		up, err := upIn(probe, "pg-t-writer")
		if err != nil {
			t.Errorf("%s: %v", when, err)
		}
		if len(up) > 1 || strings.Contains(strings.Join(up, " "), "pg-t-2") {
			t.Errorf("%s: pg-t-writer has %v UP, want at most pg-t-1", when, up)
		}
	}
	log.watch(t, r, func(cmds []string) { look("before " + cmds[0]) })
	if err := r.direct.verifyStates(ctx, want, changes, false, nil); err != nil {
		t.Fatal(err)
	}
	r.rt.beforePipeline = nil
	look("after the repair")
	out, in := log.index("set server pg-t-writer/pg-t-1 state maint"), log.index("set server pg-t-writer/pg-t-2 state ready")
	if out < 0 || in < out {
		t.Errorf("the outgoing twin's maint (command %d) not before the incoming twin's ready (command %d):\n%s", out, in, log)
	}
	if hold := log.index("set server pg-t-writer/pg-t-2 health down"); in < 0 || hold != in+1 {
		t.Errorf("the held new leader's hold (command %d) not right after its ready (command %d):\n%s", hold, in, log)
	}
	if ready, drain := log.index("set server pg-t-replica/pg-t-2.backup state ready"), log.index("set server pg-t-replica/pg-t-1.backup state drain"); ready < 0 || drain < ready {
		t.Errorf("a read service's drain (command %d) before its ready (command %d):\n%s", drain, ready, log)
	}
	if a := r.admins(t, "pg-t-writer"); a["pg-t-1"] != "maint" || a["pg-t-2"] != "ready" {
		t.Errorf("writer admin states after the repair: %v", a)
	}
}

package haproxy

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// slowChecks keeps forced health states for seconds (rise 3 x 1 s): what
// a test sees right after a command is the command's doing, not a check's.
const slowChecks = "inter 1s fastinter 1s downinter 1s rise 3 fall 3 on-marked-down shutdown-sessions maxconn 3000 maxqueue 128 weight 100"

// cmdLog records every command the driver pipelines (shows left out), in
// the order the batches were sent, and lets a test look at the running
// HAProxy before each batch goes (what runs between two batches).
type cmdLog struct {
	mu    sync.Mutex
	cmds  []string
	notes []string
}

// watch makes r's driver record its commands in l, calling before (when
// not nil) with each batch of set/shutdown commands before it is sent.
func (l *cmdLog) watch(t testing.TB, r *rig, before func(cmds []string)) {
	r.rt.beforePipeline = func(cmds []string) {
		if before != nil && !strings.HasPrefix(cmds[0], "show ") {
			before(cmds)
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, c := range cmds {
			if !strings.HasPrefix(c, "show ") {
				l.cmds = append(l.cmds, c)
			}
		}
	}
	t.Cleanup(func() { r.rt.beforePipeline = nil })
}

func (l *cmdLog) note(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.notes = append(l.notes, s)
}

// index is the position of the first command cmd (-1: never sent).
func (l *cmdLog) index(cmd string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Index(l.cmds, cmd)
}

func (l *cmdLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.cmds, "\n")
}

// upIn is the servers of backend that take connections (UP, UP 1/3...)
// in the running HAProxy, read with a runtime of its own.
func upIn(probe *Runtime, backend string) ([]string, error) {
	rows, err := probe.ShowStat(context.Background())
	if err != nil {
		return nil, err
	}
	var up []string
	for _, row := range rows {
		if row.Proxy == backend && row.Type == TypeServer && strings.HasPrefix(row.Status, "UP") {
			up = append(up, row.Name)
		}
	}
	return up, nil
}

// writerCluster is twinCluster plus a role-dependent write service,
// pg-t-writer (check /primary, only the primary selected: the old primary
// leaves it in a failover), with primary's normal twin active. fence is
// forced DOWN, up forced UP, hold is the new leader held (forced DOWN
// again at every apply) in both write services.
func writerCluster(pp, rp, wp int, defaultServer string, primary, fence, up, hold string, ms ...*member) []services.Service {
	svcs := twinCluster(pp, rp, ms...)
	for i := range svcs {
		svcs[i].DefaultServer = defaultServer
	}
	for i := range svcs[1].Servers {
		sv := &svcs[1].Servers[i]
		sv.Disabled = (sv.Member == primary) != sv.Backup
	}
	w := svcs[1]
	w.Name, w.Service, w.Port, w.Check = "pg-t-writer", "writer", wp, "/primary"
	w.Servers = append([]services.Server(nil), w.Servers...)
	for i := range svcs[0].Servers {
		sv := &svcs[0].Servers[i]
		sv.ForceDown, sv.HoldDown, sv.ForceUp = sv.Name == fence || sv.Name == hold, sv.Name == hold, sv.Name == up
	}
	for i := range w.Servers {
		sv := &w.Servers[i]
		sv.Disabled = sv.Member != primary || sv.Backup
		on := func(m string) bool { return !sv.Disabled && sv.Member == m }
		sv.ForceDown, sv.HoldDown, sv.ForceUp = on(fence) || on(hold), on(hold), on(up)
	}
	return append(svcs, w)
}

// TestTwinsWriteServiceOutgoingFirst: in a role-dependent write service
// (a custom service on /primary whose selector drops the old primary) the
// outgoing twin leaves before the incoming one comes in, in the pipeline
// of the write fences: whatever runs between two of the driver's batches,
// the service never has two servers UP (the old primary's REST may still
// answer /primary: a hung Patroni loop). A held new leader readied from
// maint is forced DOWN in the same batch as its ready, right after it,
// so that between batches it is never UP. The fence and the force-up
// still work.
func TestTwinsWriteServiceOutgoingFirst(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m1 := newMember(t, "pg-t-1", "127.0.0.81", "primary")
	m2 := newMember(t, "pg-t-2", "127.0.0.82", "replica")
	pp, rp, wp := freePort(t, frontIP), freePort(t, frontIP), freePort(t, frontIP)
	desired := func(primary, fence, up, hold string) []services.Service {
		return writerCluster(pp, rp, wp, slowChecks, primary, fence, up, hold, m1, m2)
	}
	// The slow checks would take 3 s: the primary forced UP.
	for range 2 {
		if _, err := r.direct.Apply(ctx, desired("pg-t-1", "", "pg-t-1", "")); err != nil {
			t.Fatal(err)
		}
	}
	r.waitStatus(t, map[string]bool{"pg-t-primary/pg-t-1": true, "pg-t-writer/pg-t-1": true})

	probe := &Runtime{Socket: r.opts.StatsSocket}
	// step applies want, looking at pg-t-writer before each batch of
	// commands and once after: never two servers UP, never held UP.
	step := func(name string, want []services.Service, held string) *cmdLog {
		t.Helper()
		log := &cmdLog{}
		look := func(when string) {
			up, err := upIn(probe, "pg-t-writer")
			if err != nil {
				log.note(fmt.Sprintf("%s: %v", when, err))
				return
			}
			if len(up) > 1 {
				log.note(fmt.Sprintf("%s: pg-t-writer has %d servers UP: %v", when, len(up), up))
			}
			if held != "" && slices.Contains(up, held) {
				log.note(fmt.Sprintf("%s: the held new leader pg-t-writer/%s is UP", when, held))
			}
		}
		log.watch(t, r, func(cmds []string) { look("before " + cmds[0]) })
		if _, err := r.direct.Apply(ctx, want); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r.rt.beforePipeline = nil
		look("after the apply")
		for _, n := range log.notes {
			t.Errorf("%s: %s", name, n)
		}
		if t.Failed() {
			t.Logf("%s: commands sent:\n%s", name, log)
		}
		return log
	}

	// A failover: pg-t-2 the new primary, pg-t-1 fenced (its REST still
	// answers /primary).
	m2.setRole("primary")
	log := step("failover", desired("pg-t-2", "pg-t-1", "pg-t-2", ""), "")
	out, in := log.index("set server pg-t-writer/pg-t-1 state maint"), log.index("set server pg-t-writer/pg-t-2 state ready")
	if out < 0 || in < 0 || out > in {
		t.Errorf("failover: the outgoing twin's maint (command %d) not before the incoming twin's ready (command %d)", out, in)
	}
	if f := log.index("set server pg-t-primary/pg-t-1 health down"); f < 0 || f > in {
		t.Errorf("failover: the fence (command %d) not before the incoming twin's ready (command %d)", f, in)
	}
	st := r.stat(t)
	if got := st["pg-t-primary/pg-t-1"].Status; !strings.HasPrefix(got, "DOWN") {
		t.Errorf("failover: the fenced old primary is %q", got)
	}
	for _, k := range []string{"pg-t-primary/pg-t-2", "pg-t-writer/pg-t-2"} {
		if got := st[k].Status; !strings.HasPrefix(got, "UP") {
			t.Errorf("failover: the new primary %s is %q, want UP", k, got)
		}
	}
	m1.setRole("replica")

	// Back to pg-t-1, a new leader not read-write yet (its REST answers
	// /primary already): held, its writer twin readied out of maint.
	m1.setRole("primary")
	log = step("held new leader", desired("pg-t-1", "pg-t-2", "", "pg-t-1"), "pg-t-1")
	ready, hold := log.index("set server pg-t-writer/pg-t-1 state ready"), log.index("set server pg-t-writer/pg-t-1 health down")
	if ready < 0 || hold != ready+1 {
		t.Errorf("held new leader: its hold (command %d) not right after its ready (command %d)", hold, ready)
	}
	if out := log.index("set server pg-t-writer/pg-t-2 state maint"); out < 0 || out > ready {
		t.Errorf("held new leader: the outgoing twin's maint (command %d) not before the incoming twin's ready (command %d)", out, ready)
	}
	if a := r.admins(t, "pg-t-writer"); a["pg-t-1"] != "ready" || a["pg-t-2"] != "maint" {
		t.Errorf("held new leader: writer admin states %v", a)
	}
	m2.setRole("replica")

	// The hold released: pg-t-1 forced UP.
	step("release", desired("pg-t-1", "pg-t-2", "pg-t-1", ""), "")
	r.waitStatus(t, map[string]bool{"pg-t-writer/pg-t-1": true, "pg-t-primary/pg-t-1": true, "pg-t-writer/pg-t-2": false, "pg-t-primary/pg-t-2": false})
}

// TestTwinsWriteServiceReloadOldWorker: a failover whose apply also
// reloads (an inventory change elsewhere) flips the role-dependent write
// service's twins in the running worker before the reload, not only in the
// state file: the old worker, which serves until the new one does and
// keeps its sessions after, sends no new write to the old primary and cuts
// the session it had there (maint, on-marked-down shutdown-sessions, as in
// a runtime apply); the new primary takes the writes at once. The new
// worker has the same roles.
func TestTwinsWriteServiceReloadOldWorker(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m1 := newMember(t, "pg-t-1", "127.0.0.83", "primary")
	m2 := newMember(t, "pg-t-2", "127.0.0.84", "replica")
	port1, closed1 := holder(t, m1.ip)
	port2, _ := holder(t, m2.ip)
	pp, rp, wp := freePort(t, frontIP), freePort(t, frontIP), freePort(t, frontIP)
	desired := func(primary, fence, up string, maxconn int) []services.Service {
		svcs := writerCluster(pp, rp, wp, slowChecks, primary, fence, up, "", m1, m2)
		w := &svcs[2]
		for i := range w.Servers {
			w.Servers[i].Port = map[string]int{"pg-t-1": port1, "pg-t-2": port2}[w.Servers[i].Member]
		}
		svcs[0].Maxconn = maxconn
		return svcs
	}
	for range 2 {
		if _, err := r.direct.Apply(ctx, desired("pg-t-1", "", "pg-t-1", 500)); err != nil {
			t.Fatal(err)
		}
	}
	r.waitStatus(t, map[string]bool{"pg-t-primary/pg-t-1": true, "pg-t-writer/pg-t-1": true})
	// A session through the write service to the primary.
	c, err := net.Dial("tcp", addr(frontIP, wp))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the session on the primary", func() string {
		if n := r.stat(t)["pg-t-writer/pg-t-1"].CurrentSessions; n != 1 {
			return fmt.Sprintf("%d sessions", n)
		}
		return ""
	})

	// The failover (the old primary's REST still answers /primary), and
	// pg-t-primary's maxconn changed: a reload.
	m2.setRole("primary")
	var inOld []string
	cut := false
	r.direct.beforeReload = func() {
		// The stats socket is the old worker's until the reload.
		up, err := upIn(r.rt, "pg-t-writer")
		if err != nil {
			t.Errorf("read the old worker: %v", err)
		}
		inOld = up
		select {
		case <-closed1:
			cut = true
		case <-time.After(5 * time.Second):
		}
	}
	res, err := r.direct.Apply(ctx, desired("pg-t-2", "pg-t-1", "pg-t-2", 600))
	r.direct.beforeReload = nil
	if err != nil {
		t.Fatal(err)
	}
	if !res.Reloaded {
		t.Fatalf("failover: %s, want a reload", kinds(res.Changes))
	}
	if !slices.Equal(inOld, []string{"pg-t-2"}) {
		t.Errorf("servers UP in the old worker's pg-t-writer before the reload: %v, want the new primary's only", inOld)
	}
	if !cut {
		t.Error("the old worker kept the session to the old primary through pg-t-writer (5 s)")
	}
	st := r.stat(t)
	if got := st["pg-t-primary/pg-t-1"].Status; !strings.HasPrefix(got, "DOWN") {
		t.Errorf("the fenced old primary is %q in the new worker", got)
	}
	if up, _ := upIn(r.rt, "pg-t-writer"); !slices.Equal(up, []string{"pg-t-2"}) {
		t.Errorf("servers UP in the new worker's pg-t-writer: %v", up)
	}
	if a := r.admins(t, "pg-t-writer"); a["pg-t-1"] != "maint" || a["pg-t-2"] != "ready" {
		t.Errorf("writer admin states in the new worker: %v", a)
	}
}

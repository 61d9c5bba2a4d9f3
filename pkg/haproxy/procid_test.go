package haproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// nsHAProxy is a master-worker HAProxy in its own pid namespace, as the
// shipped container runs it (docker/haproxy/entrypoint.sh): its worker has
// the same pid on every start.
type nsHAProxy struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// startNSHAProxy starts HAProxy on r's files in a new pid namespace (the
// master is its init) and waits until both sockets answer; the test is
// skipped where a pid namespace cannot be made (not root).
func startNSHAProxy(t *testing.T, r *rig, name string) *nsHAProxy {
	t.Helper()
	logPath := filepath.Join(r.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Foreground (-db): a daemonizing master would leave the namespace's
	// init, which ends the namespace.
	cmd := exec.Command(r.opts.HAProxyBin, "-W", "-db", "-S", r.opts.MasterSocket, "-f", r.opts.ConfigPath)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) {
			t.Skipf("cannot run HAProxy in its own pid namespace here (CLONE_NEWPID needs root or CAP_SYS_ADMIN): %v", err)
		}
		t.Fatal(err)
	}
	p := &nsHAProxy{cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t, syscall.SIGTERM) })
	eventually(t, 10*time.Second, "HAProxy in its pid namespace answers", func() string {
		select {
		case <-p.done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("HAProxy exited at start: %s", b)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		pr, err := r.rt.ShowProc(ctx)
		if err != nil {
			return err.Error()
		}
		if len(pr.Workers) == 0 {
			return "no worker yet"
		}
		if _, err := r.rt.ShowWorker(ctx); err != nil {
			return err.Error()
		}
		return ""
	})
	return p
}

// stop sends sig to the master (the namespace's init: SIGKILL ends every
// process of the namespace with it, a crash) and waits until it is gone (the
// kernel reaps an init once the other processes of its namespace are). A
// second call does nothing.
func (p *nsHAProxy) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// workerOf is what `show info` tells of the stats socket's worker (its pid
// in its namespace).
func workerOf(t *testing.T, r *rig) Worker {
	t.Helper()
	w, err := r.rt.ShowWorker(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestTwinsRestartKeepingPID runs HAProxy as the shipped container does, in
// its own pid namespace, where a restarted HAProxy's worker has the pid of
// the one before. After a runtime switchover (the fence and the new
// primary forced UP, the twins flipped) HAProxy crashes and is restarted
// on the same config and state file (the state file of before the
// switchover: the new primary DOWN until its rise checks): the restarted
// process is another one, told apart by its start time, so the next apply
// reads it whole and forces the new primary UP again, instead of trusting
// the read cache and the force-up record of the process before. After it
// the restarted HAProxy serves desired (a driver that never read it finds
// nothing to change), and an idle apply reads from the cache again.
func TestTwinsRestartKeepingPID(t *testing.T) {
	requireHAProxy(t)
	if os.Geteuid() != 0 {
		t.Skip("HAProxy in its own pid namespace (CLONE_NEWPID) needs root")
	}
	dir, opts := rigFiles(t)
	// The state file stays as the test writes it: a crash comes before the
	// refresh after the switchover.
	opts.StateFileRefresh = -1
	r := &rig{dir: dir, opts: opts}
	r.newDirect(t)
	ctx := context.Background()
	hap := startNSHAProxy(t, r, "haproxy1")

	m1 := newMember(t, "pg-t-1", "127.0.0.101", "primary")
	m2 := newMember(t, "pg-t-2", "127.0.0.102", "replica")
	pp, rp := freePort(t, frontIP), freePort(t, frontIP)
	// Fast to fall, slow to rise: a server the state file has DOWN stays
	// DOWN for 9 s after a restart, unless forced UP.
	const checks = "inter 300ms fastinter 300ms downinter 300ms rise 30 fall 2 on-marked-down shutdown-sessions maxconn 3000 maxqueue 128 weight 100"
	desired := func() []services.Service {
		svcs := twinCluster(pp, rp, m1, m2)
		for i := range svcs {
			svcs[i].DefaultServer = checks
		}
		// The write service: the primary forced UP, pg-t-1 fenced once
		// it is no longer the primary.
		for i := range svcs[0].Servers {
			sv := &svcs[0].Servers[i]
			primary := sv.Name == "pg-t-1" && m1.role.Load() == "primary" || sv.Name == "pg-t-2" && m2.role.Load() == "primary"
			sv.ForceUp, sv.ForceDown = primary, sv.Name == "pg-t-1" && !primary
		}
		return svcs
	}
	if res, err := r.direct.Apply(ctx, desired()); err != nil || !res.Reloaded {
		t.Fatalf("create: %+v %v, want a reload", res, err)
	}
	// New servers start DOWN: the primary is forced UP (not 30 checks).
	if res, err := r.direct.Apply(ctx, desired()); err != nil || kinds(res.Changes) != "force_up:pg-t-primary/pg-t-1" {
		t.Fatalf("force-up after the create: %s %v", kinds(res.Changes), err)
	}
	r.waitStatus(t, map[string]bool{"pg-t-primary/pg-t-1": true, "pg-t-primary/pg-t-2": false})
	// The state file as the driver's refresh writes it, before the
	// switchover: pg-t-2 DOWN in the write service, pg-t-1 the primary.
	dump, err := r.rt.ShowServersState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := FixServersState(dump, desired())
	if err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(r.opts.ServerStateFile, []byte(fixed), 0o600); err != nil {
		t.Fatal(err)
	}
	// Restarted once, so that the worker running at the crash is a fresh
	// start's, as the worker after the crash will be (a reload's has
	// another pid).
	hap.stop(t, syscall.SIGTERM)
	hap = startNSHAProxy(t, r, "haproxy2")
	pid := workerOf(t, r).PID
	full := r.direct.Reads().Full
	if res, err := r.direct.Apply(ctx, desired()); err != nil || len(res.Changes) != 0 {
		t.Fatalf("after the first restart: %s %v, want nothing to change", kinds(res.Changes), err)
	}
	if got := r.direct.Reads().Full; got != full+1 {
		t.Fatalf("full reads %d -> %d after the first restart (another pid), want one", full, got)
	}

	// A switchover at runtime.
	m1.setRole("replica")
	m2.setRole("primary")
	res, err := r.direct.Apply(ctx, desired())
	if err != nil || res.Reloaded || !target.RuntimeOnly(res.Changes) {
		t.Fatalf("switchover: %+v %v, want runtime changes", res, err)
	}
	if got := kinds(res.Changes); !strings.Contains(got, "force_up:pg-t-primary/pg-t-2") || !strings.Contains(got, "force_down:pg-t-primary/pg-t-1") {
		t.Fatalf("switchover: %s, want the fence and the force-up", got)
	}
	r.waitStatus(t, map[string]bool{"pg-t-primary/pg-t-1": false, "pg-t-primary/pg-t-2": true})
	full = r.direct.Reads().Full
	if res, err := r.direct.Apply(ctx, desired()); err != nil || len(res.Changes) != 0 {
		t.Fatalf("idle after the switchover: %s %v", kinds(res.Changes), err)
	}
	if got := r.direct.Reads().Full; got != full {
		t.Fatalf("the idle apply read the whole HAProxy (%d -> %d full reads)", full, got)
	}

	// A restart keeping the pid is told apart when it starts a few
	// seconds after the process before (procSlack).
	eventually(t, 15*time.Second, "the worker's uptime", func() string {
		if w := workerOf(t, r); w.Uptime < 4 {
			return fmt.Sprintf("uptime %d s", w.Uptime)
		}
		return ""
	})
	// The crash: SIGKILL to the namespace's init kills the worker with it.
	hap.stop(t, syscall.SIGKILL)
	if c, err := net.DialTimeout("unix", r.opts.StatsSocket, time.Second); err == nil {
		c.Close()
		t.Fatal("the crashed HAProxy's stats socket still answers")
	}
	startNSHAProxy(t, r, "haproxy3")
	if got := workerOf(t, r).PID; got != pid {
		t.Fatalf("the restarted worker has pid %d, the one before %d: the pid did not repeat, the test shows nothing", got, pid)
	}
	// What runs is not desired: the state file's new primary is DOWN.
	fresh := NewDirect(r.opts, zaptest.NewLogger(t))
	changes, err := fresh.Diff(ctx, desired())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(kinds(changes), "force_up:pg-t-primary/pg-t-2") {
		t.Fatalf("the restarted HAProxy already serves the switchover (%s): the test shows nothing", kinds(changes))
	}
	t.Logf("the restarted HAProxy (pid %d again) differs from desired by: %s", pid, kinds(changes))

	full = r.direct.Reads().Full
	res, err = r.direct.Apply(ctx, desired())
	if err != nil {
		t.Fatal(err)
	}
	if got := r.direct.Reads().Full; got != full+1 {
		t.Errorf("full reads %d -> %d after a restart keeping the pid, want one (the read cache is of the process before)", full, got)
	}
	if got := kinds(res.Changes); !strings.Contains(got, "force_up:pg-t-primary/pg-t-2") {
		t.Errorf("after a restart keeping the pid: %s, want the new primary forced UP again (the record is of the process before)", got)
	}
	st := r.stat(t)
	if got := st["pg-t-primary/pg-t-2"].Status; got != "UP" {
		t.Errorf("the new primary is %q in the restarted HAProxy, want UP", got)
	}
	if got := st["pg-t-primary/pg-t-1"].Status; !strings.HasPrefix(got, "DOWN") {
		t.Errorf("the old primary is %q in the restarted HAProxy, want DOWN", got)
	}
	if left, err := NewDirect(r.opts, zaptest.NewLogger(t)).Diff(ctx, desired()); err != nil || len(left) != 0 {
		t.Errorf("the restarted HAProxy still differs from desired: %s %v", kinds(left), err)
	}
	wantAdmins(t, r, map[string]string{"pg-t-1": "ready", "pg-t-2.backup": "ready"})
	for name, a := range r.admins(t, "pg-t-replica") {
		if active := name == "pg-t-1" || name == "pg-t-2.backup"; !active && a == "ready" {
			t.Errorf("pg-t-replica/%s is %s in the restarted HAProxy, want it inactive", name, a)
		}
	}
	// The new process is cached in turn.
	full = r.direct.Reads().Full
	if res, err := r.direct.Apply(ctx, desired()); err != nil || len(res.Changes) != 0 {
		t.Errorf("idle after the restart: %s %v", kinds(res.Changes), err)
	}
	if got := r.direct.Reads().Full; got != full {
		t.Errorf("the idle apply after the restart read the whole HAProxy (%d -> %d full reads)", full, got)
	}
}

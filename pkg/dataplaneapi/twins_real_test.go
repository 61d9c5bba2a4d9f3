package dataplaneapi_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haproxytech/client-native/v5/models"
	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// twinned turns cluster()'s services into what target.WithTwins hands a
// driver: replica and offline (role-dependent) get every member as a twin
// pair, exactly one active per member Pigsty's layout has.
func twinned(t testing.TB, svcs []services.Service) []services.Service {
	t.Helper()
	primary := map[string]bool{} // the replica service's backup
	for _, s := range svcs {
		for _, sv := range s.Servers {
			if s.Service == "replica" && sv.Backup {
				primary[sv.Name] = true
			}
		}
	}
	for i := range svcs {
		if svcs[i].Service != "replica" && svcs[i].Service != "offline" {
			continue
		}
		svcs[i].RoleDependent = true
		for _, sv := range svcs[0].Servers { // primary: every member
			sv.Port = svcs[i].DestPort
			sv.Primary = primary[sv.Name] // as Build marks candidates
			svcs[i].Candidates = append(svcs[i].Candidates, sv)
		}
	}
	out, err := services.Twins(svcs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRealTwins: the twin layout through each real Data Plane API (2.9.x
// and 3.x) over a real HAProxy 2.6: a switchover is runtime admin states
// only (no configuration write, version unchanged, no reload), read back;
// an operator's runtime change is repaired; an inventory change rewrites
// the file with `disabled` in step and the reload keeps the live roles.
func TestRealTwins(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		c := rs.c
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		clk := &clock{now: time.Now()}
		tg := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadTimeout: 30 * time.Second, ReloadPollInterval: 100 * time.Millisecond,
			AdminReadEvery: time.Hour, Now: clk.Now})
		place := func(svcs []services.Service) []services.Service {
			for i := range svcs {
				svcs[i].IP, svcs[i].Port = "127.0.0.1", rs.svcPorts[i%4]
			}
			return svcs
		}
		admins := func(backend string) map[string]string {
			t.Helper()
			rts, err := c.GetRuntimeServers(ctx, backend)
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]string{}
			for _, r := range rts {
				out[r.Name] = r.AdminState
			}
			return out
		}
		wantActive := func(step string, active ...string) {
			t.Helper()
			on := map[string]bool{}
			for _, a := range active {
				on[a] = true
			}
			got := admins("pg-tw-replica")
			for name, st := range got {
				if on[name] != (st == "ready") {
					t.Errorf("%s: pg-tw-replica/%s admin %s, want active=%v (all: %v)", step, name, st, on[name], got)
				}
			}
		}
		converged := func(step string, desired []services.Service) {
			t.Helper()
			if ch, err := tg.Diff(ctx, desired); err != nil || len(ch) != 0 {
				t.Fatalf("%s: not converged: %+v %v", step, ch, err)
			}
		}

		first := place(twinned(t, cluster("pg-tw", 1, 3, 1)))
		res, err := tg.Apply(ctx, first)
		if err != nil || !res.Reloaded || res.ReloadResult != "succeeded" {
			t.Fatalf("create: %+v %v", res, err)
		}
		converged("create", first)
		wantActive("create", "pg-tw-1.backup", "pg-tw-2", "pg-tw-3")
		if text, _, err := c.GetRawConfig(ctx); err != nil || !strings.Contains(text, "server pg-tw-2.backup ") || !strings.Contains(text, "disabled") {
			t.Fatalf("file lacks the disabled twins: %v\n%s", err, text)
		}

		v0, err := c.GetVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rs.rt.reset(nil)
		sw := place(twinned(t, cluster("pg-tw", 1, 3, 2)))
		res, err = tg.Apply(ctx, sw)
		if err != nil {
			t.Fatalf("switchover: %v", err)
		}
		if res.Reloaded || !target.RuntimeOnly(res.Changes) {
			t.Errorf("switchover: %+v, want runtime admin states only", res)
		}
		reads := 0
		for _, r := range rs.rt.requests() {
			if !strings.HasPrefix(r, "GET ") && !strings.Contains(r, "/runtime/") {
				t.Errorf("switchover sent a configuration write: %s", r)
			}
			if strings.HasPrefix(r, "GET ") && strings.Contains(r, "servers") && strings.Contains(r, "runtime") {
				reads++
			}
		}
		// Read back: the PUTs' answers (the API reads the server's state from
		// HAProxy after changing it), no GET of the backends.
		if reads != 0 {
			t.Errorf("switchover: %d runtime server reads, want 0: %v", reads, rs.rt.requests())
		}
		rs.rt.reset(nil)
		if res, err := tg.Apply(ctx, sw); err != nil || len(res.Changes) != 0 {
			t.Fatalf("idle: %+v %v", res, err)
		}
		if got := rs.rt.requests(); len(got) != 2 {
			t.Errorf("idle apply: %d requests, want 2 (version, runtime info): %v", len(got), got)
		}
		if v1, err := c.GetVersion(ctx); err != nil || v1 != v0 {
			t.Errorf("configuration version %d -> %d (%v): the file was written", v0, v1, err)
		}
		converged("switchover", sw)
		wantActive("switchover", "pg-tw-1", "pg-tw-2.backup", "pg-tw-3")

		// An operator readies the drained normal twin of the new primary:
		// the periodic full read of the admin states finds and repairs it.
		if _, err := c.ReplaceRuntimeServer(ctx, "pg-tw-replica", "pg-tw-2", &models.RuntimeServer{AdminState: "ready"}); err != nil {
			t.Fatal(err)
		}
		clk.add(time.Hour)
		res, err = tg.Apply(ctx, sw)
		if err != nil || res.Reloaded || len(res.Changes) != 1 || res.Changes[0].Server != "pg-tw-2" {
			t.Errorf("repair: %+v %v", res, err)
		}
		wantActive("repair", "pg-tw-1", "pg-tw-2.backup", "pg-tw-3")

		// HAProxy reloaded behind the API's back (master CLI, no state
		// dump: the new worker takes the file's roles, from before the
		// switchover): the new pid makes the next apply read every twin
		// backend and set the live roles again, without waiting for the
		// periodic read.
		pid := socketPID(t, filepath.Join(rs.dir, "admin.sock"))
		socketCmd(t, filepath.Join(rs.dir, "master.sock"), "reload")
		waitUntil(t, 30*time.Second, func() bool {
			p, err := trySocketPID(filepath.Join(rs.dir, "admin.sock"))
			return err == nil && p != pid
		})
		wantActive("outside reload (before the repair)", "pg-tw-1.backup", "pg-tw-2", "pg-tw-3")
		res, err = tg.Apply(ctx, sw)
		if err != nil || res.Reloaded || !target.RuntimeOnly(res.Changes) || len(res.Changes) == 0 {
			t.Errorf("repair after an outside reload: %+v %v", res, err)
		}
		wantActive("repair after an outside reload", "pg-tw-1", "pg-tw-2.backup", "pg-tw-3")
		converged("repair after an outside reload", sw)

		// A write fence on the demoted primary and its lift are weight
		// changes: the file and the running HAProxy, no reload.
		admin := filepath.Join(rs.dir, "admin.sock")
		for _, w := range []int{0, 100} {
			pid := socketPID(t, admin)
			fenced := place(twinned(t, cluster("pg-tw", 1, 3, 2)))
			for i := range fenced {
				if fenced[i].Service == "primary" || fenced[i].Service == "default" {
					for j := range fenced[i].Servers {
						if fenced[i].Servers[j].Name == "pg-tw-1" {
							fenced[i].Servers[j].Weight = w
						}
					}
				}
			}
			res, err := tg.Apply(ctx, fenced)
			if err != nil || res.Reloaded || len(res.Changes) != 2 {
				t.Fatalf("weight %d: %+v %v", w, res, err)
			}
			for _, b := range []string{"pg-tw-primary", "pg-tw-default"} {
				if got := socketCmd(t, admin, "get weight "+b+"/pg-tw-1"); !strings.HasPrefix(got, fmt.Sprintf("%d ", w)) {
					t.Errorf("weight %d: running %s/pg-tw-1: %q", w, b, got)
				}
			}
			if p := socketPID(t, admin); p != pid {
				t.Errorf("weight %d: the worker changed (%d -> %d): reloaded", w, pid, p)
			}
			converged(fmt.Sprintf("weight %d", w), fenced)
		}

		// Inventory change: a fourth member; the reload keeps the roles.
		grown := place(twinned(t, cluster("pg-tw", 1, 4, 2)))
		res, err = tg.Apply(ctx, grown)
		if err != nil || !res.Reloaded || res.ReloadResult != "succeeded" {
			t.Fatalf("grow: %+v %v", res, err)
		}
		converged("grow", grown)
		wantActive("grow", "pg-tw-1", "pg-tw-2.backup", "pg-tw-3", "pg-tw-4")
		text, _, err := c.GetRawConfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text, "server pg-tw-2 ") {
			t.Fatalf("no pg-tw-2 in the file:\n%s", text)
		}
		// The new primary's normal twin is disabled in the file now, its
		// backup twin not (in the replica backend).
		rep := text[strings.Index(text, "backend pg-tw-replica"):]
		if i := strings.Index(rep[1:], "\nbackend "); i > 0 {
			rep = rep[:i+1]
		}
		for _, want := range []struct {
			server   string
			disabled bool
		}{{"pg-tw-2", true}, {"pg-tw-2.backup", false}, {"pg-tw-1", false}, {"pg-tw-1.backup", true}} {
			for _, l := range strings.Split(rep, "\n") {
				f := strings.Fields(l)
				if len(f) > 1 && f[0] == "server" && f[1] == want.server {
					if has := strings.Contains(l, " disabled"); has != want.disabled {
						t.Errorf("file: %q: disabled=%v, want %v", strings.TrimSpace(l), has, want.disabled)
					}
				}
			}
		}
	})
}

// socketCmd sends one command to an HAProxy UNIX socket and returns the answer.
func socketCmd(t *testing.T, path, cmd string) string {
	t.Helper()
	out, err := trySocketCmd(path, cmd)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func trySocketCmd(path, cmd string) (string, error) {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(cmd + "\n")); err != nil {
		return "", err
	}
	_ = conn.(*net.UnixConn).CloseWrite()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String(), nil
}

func socketPID(t *testing.T, path string) int {
	t.Helper()
	p, err := trySocketPID(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func trySocketPID(path string) (int, error) {
	out, err := trySocketCmd(path, "show info")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "Pid: "); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("show info: no Pid in %q", out)
}

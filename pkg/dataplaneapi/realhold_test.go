package dataplaneapi_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// TestRealAPIHoldIsDrain: a new leader held through the real API (2.9.9 and
// 3.2.0) takes no connection while held, although its check (Patroni's
// /primary, here an HTTP server on its loopback address) answers 200 and
// HAProxy's checks (rise 3, fastinter 100 ms) raise it many times over
// during the hold: the hold drains it. Released (forced UP, read-write),
// it takes connections at once. A drain left by a controller that died
// mid-hold is kept by a new controller while the leader is not read-write
// and lifted once Patroni reports it running as primary.
func TestRealAPIHoldIsDrain(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		newTarget := func() *dataplaneapi.Target {
			return dataplaneapi.NewTarget(rs.c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadPollInterval: 100 * time.Millisecond})
		}
		tg := newTarget()
		// pg-h-2's PostgreSQL (a listener counting connections) and its
		// Patroni (/primary 503 until promoted, then 200).
		pg, err := net.Listen("tcp", "127.0.1.32:0")
		if err != nil {
			t.Skipf("cannot listen on 127.0.1.32: %v", err)
		}
		defer pg.Close()
		var accepted atomic.Int64
		go func() {
			for {
				c, err := pg.Accept()
				if err != nil {
					return
				}
				accepted.Add(1)
				c.Close()
			}
		}()
		api, err := net.Listen("tcp", "127.0.1.32:0")
		if err != nil {
			t.Fatal(err)
		}
		var leader atomic.Bool
		check := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if leader.Load() {
				w.WriteHeader(http.StatusOK)
				return
			}
			w.WriteHeader(http.StatusServiceUnavailable)
		}), ReadHeaderTimeout: time.Second}
		go func() { _ = check.Serve(api) }()
		defer check.Close()
		const rise, fastinter = 3, 100 * time.Millisecond
		// mk: pg-h-2 leads when primary is 2; hold, up and writable as
		// the controller's desired says them.
		mk := func(primary int, hold, up, writable bool) []services.Service {
			svcs := cluster("pg-h", 31, 2, primary)
			for i := range svcs {
				svcs[i].IP, svcs[i].Port = "127.0.0.1", rs.svcPorts[i%4]
				svcs[i].DefaultServer = fmt.Sprintf("inter 200ms fastinter %dms downinter 200ms rise %d fall 2 on-marked-down shutdown-sessions weight 100", fastinter.Milliseconds(), rise)
				write := services.WriteCheck(svcs[i].Check)
				for j := range svcs[i].Servers {
					sv := &svcs[i].Servers[j]
					if sv.Name != "pg-h-2" {
						continue
					}
					sv.Address, sv.Port, sv.CheckPort = "127.0.1.32", pg.Addr().(*net.TCPAddr).Port, api.Addr().(*net.TCPAddr).Port
					sv.ForceDown, sv.HoldDown = hold && write, hold && write
					sv.ForceUp, sv.Writable = up && write, writable && write
				}
			}
			return svcs
		}
		state := func() string {
			r, err := rs.c.GetRuntimeServer(ctx, "pg-h-primary", "pg-h-2")
			if err != nil {
				return err.Error()
			}
			return r.AdminState + "/" + r.OperationalState
		}
		front := fmt.Sprintf("127.0.0.1:%d", rs.svcPorts[0])
		dial := func() {
			c, err := net.DialTimeout("tcp", front, time.Second)
			if err == nil {
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				_, _ = c.Read(make([]byte, 1))
				c.Close()
			}
		}
		apply := func(name string, d []services.Service) {
			t.Helper()
			if _, err := tg.Apply(ctx, d); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		apply("create", mk(1, false, false, false))
		waitUntil(t, 30*time.Second, func() bool { return state() == "ready/down" })

		// Promotion: /primary answers 200, PostgreSQL not read-write yet.
		leader.Store(true)
		apply("hold", mk(2, true, false, false))
		// (Its checks may have raised it since: drained all the same.)
		if got := state(); !strings.HasPrefix(got, "drain/") {
			t.Fatalf("held: %s, want drained", got)
		}
		// Its checks raise it (drained): wait for that, then hold on for
		// 10 x rise x fastinter, re-applied as the controller does, with
		// connections through the write service all along.
		held := time.Now()
		waitUntil(t, 20*time.Second, func() bool { dial(); return state() == "drain/up" })
		raised := time.Since(held)
		end := time.Now().Add(10 * rise * fastinter)
		dials := 0
		for time.Now().Before(end) {
			apply("hold, again", mk(2, true, false, false))
			dial()
			dials++
			if got := state(); got == "ready/up" {
				t.Fatalf("held, yet %s", got)
			}
		}
		if n := accepted.Load(); n != 0 {
			t.Fatalf("held: %d connections reached pg-h-2 through the write service, want 0", n)
		}
		t.Logf("held %v: its checks raised it after %v (drained); %d connections, none reached it", time.Since(held).Round(time.Millisecond), raised.Round(time.Millisecond), dials)

		// Read-write: forced UP and readied in one PUT; live at once.
		rs.rt.reset(nil)
		released := time.Now()
		apply("release", mk(2, false, true, true))
		if got := state(); got != "ready/up" {
			t.Fatalf("released: %s, want ready/up at once", got)
		}
		dial()
		if accepted.Load() == 0 {
			t.Fatalf("released: the first connection through the write service did not reach pg-h-2")
		}
		t.Logf("released: live %v after the release apply began", time.Since(released).Round(time.Millisecond))
		apply("settled", mk(2, false, false, true))
		if got := state(); got != "ready/up" {
			t.Fatalf("settled: %s", got)
		}

		// A controller dies mid-hold: its drain stays; a new controller
		// keeps it while the leader is not read-write, then lifts it.
		apply("hold again", mk(2, true, false, false))
		if got := state(); !strings.HasPrefix(got, "drain/") {
			t.Fatalf("held again: %s", got)
		}
		// A reload during the hold (a configuration change): the drain
		// goes to the new worker through the server-state file.
		reloadDuringHold := mk(2, true, false, false)
		for i := range reloadDuringHold {
			reloadDuringHold[i].Maxconn = 4000
		}
		if res, err := tg.Apply(ctx, reloadDuringHold); err != nil || !res.Reloaded {
			t.Fatalf("reload during the hold: %+v %v", res, err)
		}
		if got := state(); !strings.HasPrefix(got, "drain/") {
			t.Fatalf("after a reload during the hold: %s, want still drained", got)
		}
		tg = newTarget()
		apply("restarted, not read-write", mk(2, false, false, false))
		waitUntil(t, 20*time.Second, func() bool { return state() == "drain/up" })
		apply("restarted, not read-write, again", mk(2, false, false, false))
		if got := state(); got != "drain/up" {
			t.Fatalf("restarted controller, leader not read-write: %s, want the drain kept", got)
		}
		apply("restarted, read-write", mk(2, false, false, true))
		if got := state(); got != "ready/up" {
			t.Fatalf("restarted controller, leader read-write: %s, want the drain lifted", got)
		}
		before := accepted.Load()
		dial()
		if accepted.Load() == before {
			t.Fatalf("after the restarted controller's release no connection reached pg-h-2")
		}
	})
}

// TestRealAPIHoldIsDrainTwins: the same in the twin layout through the
// real API (2.9.9 and 3.2.0), where the write service "replica" (made one:
// its backup is the primary) has the new leader as a twin pair: the held
// leader's active twin leaves maint drained, never ready, and takes no
// connection while its checks pass; released, it is ready and UP at once.
func TestRealAPIHoldIsDrainTwins(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		tg := dataplaneapi.NewTarget(rs.c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{ReloadPollInterval: 100 * time.Millisecond})
		pg, err := net.Listen("tcp", "127.0.1.42:0")
		if err != nil {
			t.Skipf("cannot listen on 127.0.1.42: %v", err)
		}
		defer pg.Close()
		var accepted atomic.Int64
		go func() {
			for {
				c, err := pg.Accept()
				if err != nil {
					return
				}
				accepted.Add(1)
				c.Close()
			}
		}()
		api, err := net.Listen("tcp", "127.0.1.42:0")
		if err != nil {
			t.Fatal(err)
		}
		var leader atomic.Bool
		check := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if leader.Load() {
				w.WriteHeader(http.StatusOK)
				return
			}
			w.WriteHeader(http.StatusServiceUnavailable)
		}), ReadHeaderTimeout: time.Second}
		go func() { _ = check.Serve(api) }()
		defer check.Close()
		const rise, fastinter = 3, 100 * time.Millisecond
		mk := func(primary int, hold, up bool) []services.Service {
			svcs := cluster("pg-ht", 41, 2, primary)
			for i := range svcs {
				svcs[i].IP, svcs[i].Port = "127.0.0.1", rs.svcPorts[i%4]
				svcs[i].DefaultServer = fmt.Sprintf("inter 200ms fastinter %dms downinter 200ms rise %d fall 2 on-marked-down shutdown-sessions weight 100", fastinter.Milliseconds(), rise)
				if svcs[i].Service == "replica" {
					svcs[i].Check = "/primary"
				}
				write := services.WriteCheck(svcs[i].Check)
				for j := range svcs[i].Servers {
					sv := &svcs[i].Servers[j]
					if sv.Name != "pg-ht-2" {
						continue
					}
					sv.Address, sv.Port, sv.CheckPort = "127.0.1.42", pg.Addr().(*net.TCPAddr).Port, api.Addr().(*net.TCPAddr).Port
					sv.ForceDown, sv.HoldDown, sv.ForceUp, sv.Writable = hold && write, hold && write, up && write, !hold && write && primary == 2
				}
			}
			out := twinned(t, svcs)
			for i := range out {
				for j := range out[i].Servers {
					if sv := &out[i].Servers[j]; strings.HasPrefix(sv.Name, "pg-ht-2") {
						// (twinned takes the twins' ports from the service.)
						sv.Port = pg.Addr().(*net.TCPAddr).Port
					}
				}
			}
			return out
		}
		state := func() string {
			r, err := rs.c.GetRuntimeServer(ctx, "pg-ht-replica", "pg-ht-2.backup")
			if err != nil {
				return err.Error()
			}
			return r.AdminState + "/" + r.OperationalState
		}
		front := fmt.Sprintf("127.0.0.1:%d", rs.svcPorts[1]) // pg-ht-replica
		dial := func() {
			c, err := net.DialTimeout("tcp", front, time.Second)
			if err == nil {
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				_, _ = c.Read(make([]byte, 1))
				c.Close()
			}
		}
		apply := func(name string, d []services.Service) {
			t.Helper()
			if _, err := tg.Apply(ctx, d); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		apply("create", mk(1, false, false))
		apply("settle", mk(1, false, false))
		if got := state(); got != "maint/down" {
			t.Fatalf("inactive twin: %s, want maint/down", got)
		}
		leader.Store(true)
		res, err := tg.Apply(ctx, mk(2, true, false))
		if err != nil {
			t.Fatal(err)
		}
		// Measured (2.9.9, 3.2.0 over 2.6): `set server state drain` does
		// not take a twin `disabled` in the file out of maint; it stays
		// inactive (no check, no traffic), which holds it all the same.
		first := state()
		if strings.HasPrefix(first, "ready/") {
			t.Fatalf("held twin: %s, want drained or in maint (changes %+v)", first, res.Changes)
		}
		held := time.Now()
		end := time.Now().Add(10 * rise * fastinter)
		for time.Now().Before(end) {
			apply("hold, again", mk(2, true, false))
			dial()
			if got := state(); strings.HasPrefix(got, "ready/") {
				t.Fatalf("held twin: %s", got)
			}
		}
		t.Logf("held twin: %s at first, %s after %v", first, state(), time.Since(held).Round(time.Millisecond))
		if n := accepted.Load(); n != 0 {
			t.Fatalf("held: %d connections reached pg-ht-2 through the write service, want 0", n)
		}
		t.Logf("held twin %v, drained, no connection", time.Since(held).Round(time.Millisecond))
		apply("release", mk(2, false, true))
		if got := state(); got != "ready/up" {
			t.Fatalf("released twin: %s, want ready/up at once", got)
		}
		// (The old primary's twin, readied as a replica, is UP until its
		// checks fail: the backup takes connections then.)
		waitUntil(t, 20*time.Second, func() bool { dial(); return accepted.Load() > 0 })
		apply("settled", mk(2, false, false))
		if got := state(); got != "ready/up" {
			t.Fatalf("settled twin: %s", got)
		}
	})
}

// Package app wires the controller together: config -> inventory, etcd
// watchers, HAProxy targets, the reconcile loop and the status server. The
// binary and the end-to-end tests both run it through Serve.
package app

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/controller"
	"github.com/pgsvc/pgsvc/pkg/election"
	"github.com/pgsvc/pgsvc/pkg/haproxy"
	"github.com/pgsvc/pgsvc/pkg/metrics"
	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// NewLogger builds the zap logger the config asks for, writing to w.
func NewLogger(cfg config.Log, w io.Writer) *zap.Logger {
	level := zapcore.InfoLevel
	_ = level.Set(cfg.Level)
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder = zapcore.NewJSONEncoder(encCfg)
	if cfg.Format == "console" {
		enc = zapcore.NewConsoleEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level))
}

// Serve runs the controller until ctx is done. ready, when set, receives the
// bound status address once it listens (tests).
func Serve(ctx context.Context, cfg *config.Config, log *zap.Logger, ready chan<- string) error {
	return ServeHUP(ctx, cfg, log, ready, nil)
}

// ServeHUP is Serve with the caller's SIGHUP channel (each signal re-reads
// the inventory once the controller runs; one that came earlier is kept
// by the channel's buffer). The run command registers it first thing, so
// that a SIGHUP right after the start does not kill the process (the
// default action) before Serve is far enough to handle it. With hup nil,
// Serve registers SIGHUP itself.
func ServeHUP(ctx context.Context, cfg *config.Config, log *zap.Logger, ready chan<- string, hup <-chan os.Signal) error {
	// Taken before the load: watch_inventory reloads an edit made after
	// it, also one made before the watch starts.
	loaded := inventorySum(cfg.Inventory)
	inv, err := plan.LoadInventory(cfg.Inventory, topology.ParseOptions{PigstyVersion: cfg.PigstyVersion})
	if err != nil {
		return err
	}
	if err := CheckTargetClusters(cfg, inv); err != nil {
		return err
	}
	dp, warnings, err := ExpandDataPlaneAPI(cfg, inv)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		log.Warn("inventory placement", zap.String("warning", w))
	}
	for _, t := range dp {
		if t.Host != "" {
			log.Info("target from the inventory", zap.String("entry", t.Field), zap.String("host", t.Host),
				zap.String("url", config.Redact(t.URL)), zap.Strings("clusters", t.Clusters))
		}
	}
	for _, w := range ElectionDirectWarnings(cfg) {
		log.Warn("election with a direct target", zap.String("warning", w))
	}
	placed := TargetsKey(dp)
	targets, directs, err := buildTargetsClosing(cfg, dp, log)
	if err != nil {
		return err
	}
	// Once the controller stopped: the direct drivers' last server-state
	// file refresh, none after Serve returns.
	defer func() {
		for _, d := range directs {
			_ = d.Close()
		}
	}()
	password, err := cfg.Etcd.EtcdPassword()
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.File, err)
	}
	cli, err := patroni.NewClient(patroni.ClientConfig{
		Endpoints: cfg.Etcd.Endpoints, CACert: cfg.Etcd.CAFile, Cert: cfg.Etcd.CertFile, Key: cfg.Etcd.KeyFile,
		Username: cfg.Etcd.Username, Password: password, DialTimeout: cfg.Etcd.DialTimeout.Duration,
	})
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer cli.Close()

	opts := ControllerOptions(cfg, log)
	var elector *election.Elector
	if cfg.Election.Enabled {
		elector = election.New(cli, election.Options{Key: cfg.Election.Key, Identity: cfg.Election.Identity, TTL: cfg.Election.TTL, Log: log})
		opts.Gate = elector.IsLeader
		opts.Term = elector.Term
		lc := newLeaderCache(elector, time.Duration(cfg.Election.TTL)*time.Second)
		// Stopped and waited for on every return (an early listen error
		// included), before the deferred cli.Close.
		lctx, cancelLC := context.WithCancel(ctx)
		lcDone := make(chan struct{})
		go func() {
			defer close(lcDone)
			lc.run(lctx)
		}()
		defer func() {
			cancelLC()
			<-lcDone
		}()
		opts.LeaderInfo = lc.info
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var ctl *controller.Controller
	m := metrics.New(reg, func() controller.Status { return ctl.Status() })
	opts.Metrics = m
	ctl = controller.New(inv, targets, opts)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: ctl.Handler(map[string]http.Handler{"/metrics": m.Handler()}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("controller starting", zap.String("inventory", inv.File), zap.Int("clusters", len(inv.Clusters)),
		zap.Strings("etcd", redactAll(cfg.Etcd.Endpoints)), zap.Int("targets", len(targets)), zap.String("status", "http://"+ln.Addr().String()+"/status"),
		zap.Bool("dry_run", cfg.DryRun))
	if ready != nil {
		ready <- ln.Addr().String()
	}

	if elector != nil {
		elector.OnChange(func(isLeader bool) {
			log.Info("controller leadership changed", zap.Bool("leader", isLeader), zap.String("identity", elector.Identity()))
			if isLeader {
				ctl.Trigger() // re-check every target now that we apply
			}
		})
	}
	namespaces := controller.Namespaces(inv)
	snaps := make(chan patroni.Snapshot, 16)
	wctx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()
	done := make(chan struct{}, len(namespaces))
	for _, ns := range namespaces {
		w := patroni.NewWatcher(cli, ns, log.With(zap.String("namespace", ns)), patroni.WatcherOptions{})
		ctl.SetHealth(ns, w.Status)
		ctl.SetCatchUp(ns, w.CatchUp)
		go func() {
			defer func() { done <- struct{}{} }()
			_ = w.Run(wctx, snaps)
		}()
	}
	go func() {
		for {
			select {
			case <-wctx.Done():
				return
			case s := <-snaps:
				ctl.Observe(s)
			}
		}
	}()

	if hup == nil {
		own := make(chan os.Signal, 1)
		signal.Notify(own, syscall.SIGHUP)
		defer signal.Stop(own)
		hup = own
	}
	go func() {
		for {
			select {
			case <-wctx.Done():
				return
			case <-hup:
				reloadInventory(ctl, cfg, namespaces, placed, log)
			}
		}
	}()
	if cfg.WatchInventory {
		go watchInventory(wctx, ctl, cfg, namespaces, placed, loaded, log)
	}

	var elect func(context.Context) error
	if elector != nil {
		elect = elector.Run
	}
	err = runLeading(ctx, ctl.Run, elect)
	cancelWatch()
	for range namespaces {
		<-done
	}
	log.Info("controller stopped")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// ElectionDirectWarnings explains, for each direct target of a config with
// the election on, that only the elected instance writes: the direct driver
// manages the HAProxy on its own host, so with one instance per node the
// standbys' HAProxies never follow a failover. Supported only when every
// instance drives the same HAProxy (same host and files, as
// TestPausedLeaderDropsStaleApply does); one HAProxy per node needs
// dataplaneapi targets.
func ElectionDirectWarnings(cfg *config.Config) []string {
	if !cfg.Election.Enabled {
		return nil
	}
	var out []string
	for i, d := range cfg.Direct {
		out = append(out, fmt.Sprintf("election.enabled with direct[%d] (%s): only the elected instance writes, so this "+
			"HAProxy follows failovers only while this instance leads, unless every instance drives this same HAProxy; "+
			"for one HAProxy per node use dataplaneapi targets (all HAProxies from the leader)", i, d.ConfigPath))
	}
	return out
}

// redactAll is config.Redact of each URL.
func redactAll(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = config.Redact(u)
	}
	return out
}

// runLeading runs the controller (run) until ctx ends, and the election
// (elect, nil without election) on a context of its own, ended (the elector
// resigns) only once run has returned, i.e. once its target workers
// finished: a write in flight at the stop (past its last lease check) must
// land while this instance still holds the lease, not after the next
// leader may have started writing. It returns run's error once both ended.
//
// The workers' writes are not cut off at the stop: a request or socket
// command already sent when ctx ends is waited for until its answer
// (target.SendContext, used by both drivers for every write), and no
// further write is sent. The other side carries a write out whether or not
// its client still waits, so one abandoned at the stop could land after
// this resignation, when only configuration writes would be refused as
// stale (they carry the API's version; a runtime `set server` carries
// nothing). So every write answered has landed before the resignation, and
// the stop waits for one only as long as it is in flight, bounded by its
// request timeout (Data Plane API 10s, socket 5s) and the apply's; with
// none in flight the elector resigns at once. A write that gets no answer
// within that bound is abandoned, as it would be while leading.
func runLeading(ctx context.Context, run, elect func(context.Context) error) error {
	if elect == nil {
		return run(ctx)
	}
	ectx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = elect(ectx)
	}()
	err := run(ctx)
	cancel()
	<-done
	return err
}

// ControllerOptions maps the config's controller settings onto the
// controller's options (every field of config.Controller is passed on).
func ControllerOptions(cfg *config.Config, log *zap.Logger) controller.Options {
	return controller.Options{
		Log: log, Debounce: cfg.Controller.Debounce.Duration, ResyncInterval: cfg.Controller.ResyncInterval.Duration,
		StaleAfter: cfg.Controller.StaleAfter.Duration, ApplyTimeout: cfg.Controller.ApplyTimeout.Duration,
		FenceHold: cfg.Controller.FenceHold.Duration, PromoteWindow: cfg.Controller.PromoteWindow.Duration,
		PatroniCAFile:  cfg.Controller.PatroniCAFile,
		IncludeUnknown: cfg.IncludeUnknown, DryRun: cfg.DryRun, HistorySize: cfg.Controller.HistorySize,
		RuntimeRoles: runtimeRoles(cfg),
	}
}

// runtimeRoles reports whether every target of cfg has the twins layout,
// where a role change is applied at runtime, never by a reload.
func runtimeRoles(cfg *config.Config) bool {
	n := 0
	for _, d := range cfg.Direct {
		if d.Layout != "twins" {
			return false
		}
		n++
	}
	for _, d := range cfg.DataPlaneAPI {
		if d.Layout != "twins" {
			return false
		}
		n++
	}
	return n > 0
}

// loadInventory reads and validates an inventory file (a variable for the
// tests).
var loadInventory = plan.LoadInventory

// reloadInventory re-reads and validates the inventory; a bad file is
// rejected with its error and the running inventory is kept.
func reloadInventory(ctl *controller.Controller, cfg *config.Config, namespaces []string, placed string, log *zap.Logger) {
	if inv := checkReload(cfg, namespaces, placed, log); inv != nil {
		ctl.SetInventory(inv)
	}
}

// checkReload reads and checks the new inventory for reloadInventory: nil
// (and the reason logged) when it is rejected. A panic while reading or
// checking it (a bug on hostile input) rejects it as a bad file would be,
// logged with its stack: it runs on the SIGHUP and watch_inventory
// goroutines, where it would otherwise kill the controller of every
// cluster.
func checkReload(cfg *config.Config, namespaces []string, placed string, log *zap.Logger) (inv *topology.Inventory) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("inventory reload rejected: reading or checking it panicked (a bug); keeping the running inventory",
				zap.String("file", cfg.Inventory), zap.String("panic", fmt.Sprint(r)), zap.String("stack", string(debug.Stack())))
			inv = nil
		}
	}()
	inv, err := loadInventory(cfg.Inventory, topology.ParseOptions{PigstyVersion: cfg.PigstyVersion})
	if err != nil {
		log.Error("inventory reload rejected; keeping the running inventory", zap.Error(err))
		return nil
	}
	if got := controller.Namespaces(inv); !reflect.DeepEqual(got, namespaces) {
		log.Error("inventory reload rejected: the set of pg_namespace values changed; restart the controller for that",
			zap.Strings("running", namespaces), zap.Strings("new", got))
		return nil
	}
	if err := CheckTargetClusters(cfg, inv); err != nil {
		log.Error("inventory reload rejected; keeping the running inventory", zap.Error(err))
		return nil
	}
	if err := checkPlacementUnchanged(cfg, inv, placed); err != nil {
		log.Error("inventory reload rejected; keeping the running inventory", zap.Error(err))
		return nil
	}
	return inv
}

// InventoryPoll is how often watch_inventory looks at the file.
const InventoryPoll = 2 * time.Second

// inventorySum is the hash of the inventory file's content (zero when it
// cannot be read).
func inventorySum(path string) [32]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return [32]byte{}
	}
	return sha256.Sum256(b)
}

// watchInventory reloads the inventory when its content changes from loaded
// (the inventorySum taken before the running inventory was read), as SIGHUP
// does (the content is compared, not the mtime, so editors that rewrite a
// file in place or by rename are both seen). An edit made between that
// load and this watch's start is reloaded at its first look.
func watchInventory(ctx context.Context, ctl *controller.Controller, cfg *config.Config, namespaces []string, placed string, loaded [32]byte, log *zap.Logger) {
	last := loaded
	t := time.NewTicker(InventoryPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if now := inventorySum(cfg.Inventory); now != last {
				last = now
				log.Info("inventory file changed; reloading", zap.String("file", cfg.Inventory))
				reloadInventory(ctl, cfg, namespaces, placed, log)
			}
		}
	}
}

// buildTargets builds the Data Plane API targets dp (see
// ExpandDataPlaneAPI) and the direct HAProxies.
func buildTargets(cfg *config.Config, dp []DataPlaneAPITarget, log *zap.Logger) ([]target.Target, error) {
	out, _, err := buildTargetsClosing(cfg, dp, log)
	return out, err
}

// buildTargetsClosing is buildTargets, with the direct drivers, to be
// closed when the controller stops (haproxy.Direct.Close: their server-state
// file refresh).
func buildTargetsClosing(cfg *config.Config, dp []DataPlaneAPITarget, log *zap.Logger) ([]target.Target, []*haproxy.Direct, error) {
	out, err := newDataPlaneAPITargets(cfg, dp, log)
	if err != nil {
		return nil, nil, err
	}
	var directs []*haproxy.Direct
	for _, d := range cfg.Direct {
		direct := haproxy.NewDirect(haproxy.Options{
			ConfigPath: d.ConfigPath, StatsSocket: d.StatsSocket, MasterSocket: d.MasterSocket,
			ServerStateFile: d.ServerStateFile, HAProxyBin: d.HAProxyBin, Maxconn: d.Maxconn, NoStrictLimits: d.NoStrictLimits,
			FullReadEvery: d.RuntimeReadEvery.Duration,
		}, log)
		directs = append(directs, direct)
		var t target.Target = direct
		if d.Layout == "twins" {
			t = target.WithTwins(t)
		}
		out = append(out, target.OnlyClusters(t, d.Clusters))
	}
	return out, directs, nil
}

// CheckTargetClusters rejects a target limited to a cluster the inventory
// does not have (a typo would silently leave that HAProxy unmanaged).
func CheckTargetClusters(cfg *config.Config, inv *topology.Inventory) error {
	known := map[string]bool{}
	for _, c := range inv.Clusters {
		known[c.Name] = true
	}
	check := func(field string, names []string) error {
		for i, n := range names {
			if !known[n] {
				return fmt.Errorf("%s: %s.clusters[%d]: cluster %q is not in the inventory %s", cfg.File, field, i, n, inv.File)
			}
		}
		return nil
	}
	for i, d := range cfg.DataPlaneAPI {
		if err := check(fmt.Sprintf("dataplaneapi[%d]", i), d.Clusters); err != nil {
			return err
		}
	}
	for i, d := range cfg.Direct {
		if err := check(fmt.Sprintf("direct[%d]", i), d.Clusters); err != nil {
			return err
		}
	}
	return nil
}

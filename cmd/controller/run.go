package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/app"
	"github.com/pgsvc/pgsvc/pkg/config"
)

func init() {
	commands["run"] = command{summary: "watch Patroni in etcd and keep HAProxy's services in step", run: runRun}
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// runFlags are the flags of `controller run`; they override the config file.
type runFlags struct {
	config, inventory, etcd, listen, logLevel, logFormat string
	dpapi                                                stringList
	direct                                               config.Direct
	dryRun, includeUnknown, watchInventory               bool
	pigstyVersion                                        string
	// pprof is the loopback address of the Go profiling endpoints ("" = off).
	pprof string
	// memoryLimit is the Go runtime's soft memory limit ("" = GOMEMLIMIT,
	// else none; see setMemoryLimit).
	memoryLimit string
	// heapTarget is the heap size the collector aims at
	// (defaultHeapTarget unless given; "" or "0": none; see heapTuner).
	heapTarget string
	// keepFreed keeps the memory a burst freed instead of returning it to
	// the OS when the controller is quiet again (releaser).
	keepFreed bool
}

func parseRunFlags(args []string, stderr io.Writer) (*config.Config, error) {
	cfg, _, err := parseRun(args, stderr)
	return cfg, err
}

// parseRun parses the flags of `controller run`: the config they make and
// the profiling address ("" when off).
func parseRun(args []string, stderr io.Writer) (*config.Config, string, error) {
	cfg, f, err := parseRunAll(args, stderr)
	if err != nil {
		return nil, "", err
	}
	return cfg, f.pprof, nil
}

// parseRunAll is parseRun, with the process-level flags (profiling,
// memory limit) as given.
func parseRunAll(args []string, stderr io.Writer) (*config.Config, runFlags, error) {
	var f runFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "config", "", "YAML config file (see config/controller.yml)")
	fs.StringVar(&f.inventory, "inventory", "", "Pigsty inventory (pigsty.yml)")
	fs.StringVar(&f.etcd, "etcd", "", "etcd endpoints, comma-separated (http://127.0.0.1:2379)")
	fs.Var(&f.dpapi, "dataplaneapi", "Data Plane API URL of one HAProxy, repeatable (http://user@host:5555; a password here is visible in /proc/PID/cmdline: use PGSVC_DATAPLANEAPI_PASSWORD or password_file)")
	fs.StringVar(&f.direct.ConfigPath, "haproxy-config", "", "direct driver: the haproxy.cfg the controller owns")
	fs.StringVar(&f.direct.StatsSocket, "stats-socket", "", "direct driver: HAProxy admin stats socket")
	fs.StringVar(&f.direct.MasterSocket, "master-socket", "", "direct driver: HAProxy master socket (haproxy -W -S)")
	fs.StringVar(&f.direct.ServerStateFile, "server-state-file", "", "direct driver: server-state file dumped before each reload")
	fs.StringVar(&f.direct.HAProxyBin, "haproxy-bin", "", "direct driver: haproxy binary (haproxy)")
	fs.StringVar(&f.listen, "listen", "", "status and metrics address (127.0.0.1:9876)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "watch and compute, log and expose the plan, change nothing")
	fs.BoolVar(&f.includeUnknown, "include-unknown", false, "serve members Patroni reports that the inventory lacks")
	fs.BoolVar(&f.watchInventory, "watch-inventory", false, "reload the inventory when the file changes (SIGHUP always does)")
	fs.StringVar(&f.pigstyVersion, "pigsty-version", "", "render health checks as Pigsty auto|v3|v4 does (auto: from the inventory)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (info)")
	fs.StringVar(&f.logFormat, "log-format", "", "json or console (json)")
	fs.StringVar(&f.pprof, "pprof", "", "serve Go's profiling endpoints (/debug/pprof/) on this loopback address, e.g. 127.0.0.1:6060 (off)")
	fs.BoolVar(&f.keepFreed, "keep-freed-memory", false, "do not return freed memory and garbage (a mass failover's, the idle resyncs') to the OS while the controller is quiet")
	fs.StringVar(&f.memoryLimit, "memory-limit", "", "soft limit of the Go runtime's memory, e.g. 96MiB; 0 for none (default: GOMEMLIMIT if set, else none)")
	fs.StringVar(&f.heapTarget, "heap-target", defaultHeapTarget, "the heap size the Go collector aims at: it collects more often (down to GOGC=25) as the live heap nears it, costing CPU for memory; 0: Go's own pacing (GOGC)")
	if err := fs.Parse(args); err != nil {
		return nil, f, err
	}
	if f.heapTarget != "" {
		if _, err := parseMemoryLimit(f.heapTarget); err != nil {
			return nil, f, fmt.Errorf("-heap-target %w", err)
		}
	}
	if f.memoryLimit != "" {
		if _, err := parseMemoryLimit(f.memoryLimit); err != nil {
			return nil, f, fmt.Errorf("-memory-limit %w", err)
		}
	}
	if f.pprof != "" {
		if err := checkLoopback(f.pprof); err != nil {
			return nil, f, fmt.Errorf("-pprof: %w", err)
		}
	}
	cmdlineWarnings = cmdlinePasswordWarnings(f.dpapi, f.etcd)
	cfg := &config.Config{}
	if f.config != "" {
		var err error
		if cfg, err = config.Load(f.config); err != nil {
			return nil, f, err
		}
	}
	if f.inventory != "" {
		cfg.Inventory = f.inventory
	}
	if f.etcd != "" {
		cfg.Etcd.Endpoints = strings.Split(f.etcd, ",")
	}
	for _, u := range f.dpapi {
		cfg.DataPlaneAPI = append(cfg.DataPlaneAPI, config.DataPlaneAPI{URL: u})
	}
	if f.direct.ConfigPath != "" || f.direct.StatsSocket != "" || f.direct.MasterSocket != "" || f.direct.ServerStateFile != "" {
		cfg.Direct = append(cfg.Direct, f.direct)
	}
	if f.listen != "" {
		cfg.Listen = f.listen
	}
	cfg.DryRun = cfg.DryRun || f.dryRun
	cfg.IncludeUnknown = cfg.IncludeUnknown || f.includeUnknown
	cfg.WatchInventory = cfg.WatchInventory || f.watchInventory
	if f.pigstyVersion != "" {
		cfg.PigstyVersion = f.pigstyVersion
	}
	if f.logLevel != "" {
		cfg.Log.Level = f.logLevel
	}
	if f.logFormat != "" {
		cfg.Log.Format = f.logFormat
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, f, err
	}
	return cfg, f, nil
}

func runRun(args []string, stdout, stderr io.Writer) int {
	// First: SIGHUP's default action kills the process, and systemctl
	// reload may send one right after the start. Serve handles it (and a
	// buffered early one) once running.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, f, err := parseRunAll(args, stderr)
	pprofAddr := f.pprof
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "controller: %v\n", err)
		return 2
	}
	log := app.NewLogger(cfg.Log, stderr)
	defer func() { _ = log.Sync() }()
	for _, w := range cmdlineWarnings {
		log.Warn(w)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if limit, from, err := setMemoryLimit(f.memoryLimit); err != nil {
		fmt.Fprintf(stderr, "controller: %v\n", err)
		return 2
	} else if limit > 0 {
		log.Info("soft memory limit", zap.Int64("bytes", limit), zap.String("from", from))
	}
	if _, err := startHeapTarget(ctx, f.heapTarget, log); err != nil { // defaultHeapTarget unless given (heaptarget.go)
		fmt.Fprintf(stderr, "controller: %v\n", err)
		return 2
	}
	if !f.keepFreed {
		go newReleaser().run(ctx)
	}
	if pprofAddr != "" {
		addr, closePprof, err := servePprof(pprofAddr)
		if err != nil {
			fmt.Fprintf(stderr, "controller: -pprof: %v\n", err)
			return 1
		}
		defer closePprof()
		log.Info("profiling endpoints on", zap.String("url", "http://"+addr+"/debug/pprof/"))
	}
	if err := app.ServeHUP(ctx, cfg, log, nil, hup); err != nil {
		fmt.Fprintf(stderr, "controller: %v\n", err)
		return 1
	}
	return 0
}

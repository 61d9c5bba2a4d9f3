package haproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unique"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// Options configure a Direct driver.
type Options struct {
	// ConfigPath is the controller's own haproxy.cfg: the driver owns the
	// whole file and rewrites it from haproxycfg.Render on every change.
	ConfigPath string
	// StatsSocket is the admin stats socket (rendered into the file).
	StatsSocket string
	// MasterSocket is the master CLI of a `haproxy -W -S` process, used to reload.
	MasterSocket string
	// ServerStateFile keeps health and admin states across reloads ("" =
	// none, which leaves the reload hazard open: see FixServersState).
	ServerStateFile string
	// HAProxyBin runs `haproxy -c` on new configs (default "haproxy").
	HAProxyBin string
	// Maxconn and NoStrictLimits go into the rendered global section.
	Maxconn        int
	NoStrictLimits bool
	// Timeout bounds one socket command (DefaultTimeout when 0).
	Timeout time.Duration
	// ReloadTimeout bounds a reload until the new worker serves the new
	// backends (default 30s).
	ReloadTimeout time.Duration
	// FullReadEvery bounds how long the running state is taken from what
	// the driver last read and applied (see readCache): after this the
	// next apply reads the whole running HAProxy again, which finds an
	// operator's runtime change (default DefaultFullReadEvery, 10m). A
	// reload or restart of HAProxy is found at once (the worker's pid and
	// start time: procTable).
	FullReadEvery time.Duration
	// StateFileRefresh bounds how often the server-state file is dumped
	// again after runtime applies (stateRefresher), so that an HAProxy
	// restarted behind the controller's back loads the live roles, not
	// those of the last reload: at most once per StateFileRefresh, in the
	// background (default DefaultStateFileRefresh; negative: never).
	StateFileRefresh time.Duration
}

// Direct keeps a local master-worker HAProxy 2.6 in step without the Data
// Plane API. It implements target.Target.
//
// The config file at ConfigPath is the controller's own: Direct renders it
// whole with haproxycfg.Render. Sections that a later desired set no longer
// names are read back from the file and rendered again unchanged (the
// target contract never deletes sections it was not asked about); any other
// hand edit of the file is lost at the next write.
//
// Current state comes from the live process (`show stat` for servers,
// backup flags, weights and frontends, `show servers state` for check ports)
// plus the service-level settings read back from the file. Weight-only
// changes go through the stats socket and the file is rewritten without a
// reload; anything else is one validated write and one reload through the
// master socket, with the server-state file dumped right before it. After
// runtime changes the server-state file is dumped again in the background
// (stateRefresher); Close makes the last one wanted.
type Direct struct {
	opts  Options
	rt    *Runtime
	log   *zap.Logger
	mu    sync.Mutex
	cache readCache
	reads ReadStats
	// render keeps each section's text: a write renders only the services
	// that changed (a role change: a few of 4,000 at 1,000 clusters).
	render haproxycfg.Renderer
	// forced: the force-ups done, once per promotion and worker.
	forced forcedUp
	// procs tells apart the worker processes `show info` answers from.
	procs procTable
	// validated is the last desired that passed haproxycfg.Check (under
	// mu): the next is validated where it differs (checkChanged).
	validated []services.Service
	// checkIncremental makes every apply compare its incremental diff with
	// the full one (tests).
	checkIncremental bool
	// incremental counts the applies diffed incrementally (tests).
	incremental int
	// earlyFlipped lists the servers flipped early, "backend/server" (tests).
	earlyFlipped []string
	// beforeReload, when set, is called right before the driver asks the
	// master to reload (tests: what the old worker runs then).
	beforeReload func()
	// earlyEnded, when set, is called when the early flips and their
	// read-back are done (tests).
	earlyEnded func()
	// stateMu serializes the writes of the server-state file: a reload
	// holds it from its dump to the end of the reload, a refresh from its
	// dump to the file installed.
	stateMu sync.Mutex
	// refresh refreshes the state file after runtime applies (nil: no
	// state file, or StateFileRefresh < 0).
	refresh *stateRefresher
}

var _ target.Target = (*Direct)(nil)

// NewDirect returns a driver for the HAProxy described by opts. It does not
// contact HAProxy; bad options are reported by the first Diff or Apply.
func NewDirect(opts Options, log *zap.Logger) *Direct {
	if opts.HAProxyBin == "" {
		opts.HAProxyBin = "haproxy"
	}
	if opts.ReloadTimeout <= 0 {
		opts.ReloadTimeout = 30 * time.Second
	}
	if opts.FullReadEvery <= 0 {
		opts.FullReadEvery = DefaultFullReadEvery
	}
	if opts.StateFileRefresh == 0 {
		opts.StateFileRefresh = DefaultStateFileRefresh
	}
	if log == nil {
		log = zap.NewNop()
	}
	d := &Direct{
		opts: opts,
		rt:   &Runtime{Socket: opts.StatsSocket, MasterSocket: opts.MasterSocket, Timeout: opts.Timeout},
		log:  log.With(zap.String("target", "direct:"+opts.ConfigPath)),
	}
	if opts.ServerStateFile != "" && opts.StateFileRefresh > 0 {
		d.refresh = &stateRefresher{every: opts.StateFileRefresh, write: d.refreshStateFile, log: d.log}
	}
	return d
}

// Name identifies the target by its config path.
func (d *Direct) Name() string { return "direct:" + d.opts.ConfigPath }

// Runtime returns the driver's socket client.
func (d *Direct) Runtime() *Runtime { return d.rt }

func (d *Direct) check() error {
	var missing []string
	if d.opts.ConfigPath == "" {
		missing = append(missing, "config_path")
	}
	if d.opts.StatsSocket == "" {
		missing = append(missing, "stats_socket")
	}
	if d.opts.MasterSocket == "" {
		missing = append(missing, "master_socket")
	}
	if len(missing) > 0 {
		return fmt.Errorf("direct haproxy: missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// snapshot is what the driver knows about the running HAProxy.
type snapshot struct {
	current map[string]*target.Backend
	// file is the services read back from the controller's own file.
	file []services.Service
	// cached: from the read cache, so file is what the last apply wrote
	// (and the file on disk still has its size and mtime).
	cached bool
	// proc is the worker read (procTable: its pid and start time; 0:
	// unknown).
	proc procID
	// base is the desired state the last successful apply left current in
	// step with (from the read cache; nil after a full read): the services
	// of a new desired equal to base's need no diff (incremental.go).
	base []services.Service
	// gen is the read cache's generation the snapshot came from.
	gen uint64
}

func (d *Direct) read(ctx context.Context) (*snapshot, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	rows, err := d.rt.ShowStat(ctx)
	if err != nil {
		return nil, fmt.Errorf("read current state: %w", err)
	}
	stateText, err := d.rt.ShowServersState(ctx)
	if err != nil {
		return nil, fmt.Errorf("read current state: %w", err)
	}
	checkPort := map[string]int{}
	admin := map[string]string{}
	err = EachServerState(stateText, func(s StateServer) bool {
		checkPort[s.Backend+"/"+s.Server] = s.CheckPort
		admin[s.Backend+"/"+s.Server] = AdminWord(s.AdminSt)
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("read current state: %w", err)
	}
	// The snapshot is cached until the next full read: its strings are
	// copied out of the answers (substrings would keep the whole 6 MB
	// `show stat` text of 1,000 clusters alive).
	cur := map[string]*target.Backend{}
	get := func(n string) *target.Backend {
		b := cur[n]
		if b == nil {
			n = strings.Clone(n)
			b = &target.Backend{Name: n, Servers: map[string]services.Server{}}
			cur[n] = b
		}
		return b
	}
	for _, r := range rows {
		switch r.Type {
		case TypeFrontend:
			get(r.Proxy).HasFrontend = true
		case TypeBackend:
			get(r.Proxy)
		case TypeServer:
			name := strings.Clone(r.Name)
			get(r.Proxy).Servers[name] = services.Server{
				Name: name, Address: strings.Clone(r.Addr), Port: r.Port, CheckPort: checkPort[r.Proxy+"/"+r.Name],
				Weight: r.Weight, Backup: r.Backup, Down: strings.HasPrefix(r.Status, "DOWN"),
				Admin: admin[r.Proxy+"/"+r.Name],
			}
		}
	}
	snap := &snapshot{current: cur}
	text, err := os.ReadFile(d.opts.ConfigPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// No file of ours yet: settings unknown, compared as nil.
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", d.opts.ConfigPath, err)
	default:
		file, err := ParseOwnConfig(string(text))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.opts.ConfigPath, err)
		}
		snap.file = file
		for _, s := range file {
			b := cur[s.Name]
			if b == nil {
				continue
			}
			if b.HasFrontend {
				// Kept with the snapshot until the next full read: one
				// copy of each text, shared by the backends that repeat
				// it (substrings of text would keep the whole file alive:
				// 2.6 MB at 1,000 clusters).
				st := target.SettingsOf(s)
				st.IP, st.Check, st.Balance, st.DefaultServer = canonical(st.IP), canonical(st.Check), canonical(st.Balance), canonical(st.DefaultServer)
				b.Settings = &st
			}
			// The runtime does not show how a server is checked: the
			// file HAProxy runs says whether over TLS.
			// Stored under sv.Name, the map's own copy: a map assignment
			// replaces a string key with the one given, and fs.Name is
			// cut from text.
			for _, fs := range s.Servers {
				if sv, ok := b.Servers[fs.Name]; ok {
					sv.CheckSSL, sv.CAFile, sv.Track = fs.CheckSSL, canonical(fs.CAFile), canonical(fs.Track)
					b.Servers[sv.Name] = sv
				}
			}
		}
	}
	return snap, nil
}

// Diff reads the running HAProxy and returns the changes Apply would make.
func (d *Direct) Diff(ctx context.Context, desired []services.Service) ([]target.Change, error) {
	snap, err := d.readFor(ctx, desired)
	if err != nil {
		return nil, err
	}
	d.forced.settle(snap, desired)
	return d.withTrackerResyncs(ctx, snap, desired, target.Diff(snap.current, desired))
}

// Apply makes the running HAProxy serve desired (see Direct for how).
func (d *Direct) Apply(ctx context.Context, desired []services.Service) (target.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	start := time.Now()
	ph := phases{last: start}
	// What the last successful apply validated and left HAProxy in step
	// with: only the services that differ from it are validated and diffed
	// (a switchover among 1,000 clusters: 4 services of 4,000).
	if err := checkChanged(d.validated, desired); err != nil {
		return target.Result{}, target.Reject(err)
	}
	d.validated = desired
	ph.mark("check")
	snap, health, err := d.readBase(ctx, desired)
	if err != nil {
		return target.Result{}, err
	}
	var earlyTook time.Duration // flips and read-back, set before earlyDone returns
	// While the live health of the write services is read (2,000 backends
	// in a 1,000-cluster mass failover), the flips of the services that
	// take no writes go out on a connection of their own (earlyFlips).
	early, taken, earlyDone := d.startEarlyFlips(ctx, snap, health, desired, &earlyTook)
	defer earlyDone()
	if err := d.readHealth(ctx, snap, health); err != nil {
		return target.Result{}, err
	}
	ph.mark("read")
	d.forced.settle(snap, desired)
	changes, err := d.diff(snap, desired)
	if err != nil {
		return target.Result{}, err
	}
	if changes, err = d.withTrackerResyncs(ctx, snap, desired, changes); err != nil {
		return target.Result{}, err
	}
	ph.mark("diff")
	res := target.Result{Changes: changes}
	if len(changes) == 0 {
		d.inStep(snap, desired)
		// Nothing to do; still report whether the running file keeps server
		// state across reloads, so status can warn about a file set up by hand.
		if preserved, err := fileStatePreserved(d.opts.ConfigPath); err == nil {
			res.StatePreserved = &preserved
		}
		res.Duration = time.Since(start)
		return res, nil
	}
	all := mergeKept(desired, snap.file)
	// Global and defaults say whether the file keeps server states.
	preserved := statePreserved(haproxycfg.Head(len(all), d.renderOptions()))
	res.StatePreserved = &preserved
	log := d.log.With(zap.Int("changes", len(changes)))

	if target.RuntimeOnly(changes) {
		if err := target.CheckWrite(ctx); err != nil {
			return res, err
		}
		// Until it is all applied and read back, what runs is not known.
		var saved cacheState
		if taken != nil {
			saved = *taken // by the early flips
		} else {
			saved = d.takeCache()
		}
		// The write fences first, with the outgoing twins of the write
		// services (no write must reach the old primary; a write service
		// may be without a server until the next batch, never with two
		// primaries); then the incoming twins, a fenced one forced DOWN
		// right after its own ready; then weights; then the other
		// outgoing twins, so that a service that takes no writes never
		// has zero active servers (fenceAndFlip). (The early flips, each
		// backend's also incoming first, are under way.)
		ups, downs := flipsOf(withoutFlips(changes, early))
		writeDowns, downs := splitWrite(downs, desired)
		if err := d.fenceAndFlip(ctx, changes, writeDowns, ups, &res); err != nil {
			return res, err
		}
		var weights []Weight
		weightOf := desiredWeights(desired)
		for _, c := range changes {
			if c.Kind == target.KindForceUp || c.Kind == target.KindSetState || c.Kind == target.KindForceDown {
				continue // before or after the weights
			}
			w, err := weightOf(c.Backend, c.Server)
			if err != nil {
				return res, fmt.Errorf("apply %s %s/%s: %w", c.Kind, c.Backend, c.Server, err)
			}
			weights = append(weights, Weight{Backend: c.Backend, Server: c.Server, Weight: w})
		}
		// One pipelined connection (a mass failover fences and lifts 2 per
		// cluster; one connection each took 0.4-10 ms apiece).
		if err := d.rt.SetWeights(ctx, weights); err != nil {
			return res, fmt.Errorf("apply set_weight: %w", err)
		}
		// The deactivations of backends whose incoming server may be a
		// tracker (target.TrackedBy) follow the force-ups that bring it UP.
		downs, trackedDowns := splitTracked(downs, desired)
		if err := d.rt.SetStates(ctx, downs); err != nil {
			return res, fmt.Errorf("apply set_state: %w", err)
		}
		if err := d.forceUp(ctx, snap.proc, changes, &res); err != nil {
			return res, err
		}
		if err := d.rt.SetStates(ctx, trackedDowns); err != nil {
			return res, fmt.Errorf("apply set_state: %w", err)
		}
		// Trackers out of step last: a tracked server the apply forced
		// moved its trackers already.
		if err := d.resyncTrackers(ctx, changes); err != nil {
			return res, err
		}
		ph.mark("runtime")
		// The early flips are read back by their own goroutine, right
		// after they are made; these are the rest's.
		if err := d.verifyStates(ctx, desired, withoutFlips(changes, early), false, early); err != nil {
			return res, err
		}
		ph.mark("verify")
		if err := earlyDone(); err != nil {
			return res, err
		}
		if len(early) > 0 {
			ph.mark("early_wait")
			ph.steps = append(ph.steps, zap.Int("early_flips", len(early)), zap.Duration("early_took", earlyTook))
		}
		// The file must carry the weights too, or the next reload (whose
		// state file is fixed to the file's weights) would bring old ones
		// back. Only weights differ from the running file, so no `haproxy -c`.
		// Streamed from the render cache: only changed sections are rendered.
		// Not when the apply only forced health (a write fence, a held or
		// released new leader): health is not in the file, which the cached
		// read says is the last one written, so it is unchanged (writing
		// 2.6 MB at 1,000 clusters held up the force-up coming right after).
		if !snap.cached || !target.HealthOnly(changes) {
			if err := d.writeConfig(all); err != nil {
				return res, fmt.Errorf("runtime weights applied, but writing %s failed: %w", d.opts.ConfigPath, err)
			}
		}
		ph.mark("write")
		d.keepCache(saved, desired, all, changes)
		// The state file still has the states of the last reload: dumped
		// again in the background, at most once per StateFileRefresh.
		d.refresh.want(all, func() error { return target.CheckWrite(ctx) })
		log.Info("applied at runtime, no reload", ph.field())
		res.Duration = time.Since(start)
		return res, nil
	}

	// A reload: the next read is a full one. (Early flips, if any, are
	// runtime changes of desired's: done before the state dump.)
	if err := earlyDone(); err != nil {
		res.Duration = time.Since(start)
		return res, err
	}
	d.forgetCache()
	cfg, err := d.renderConfig(all)
	if err != nil {
		res.Duration = time.Since(start)
		return res, fmt.Errorf("render %s: %w", d.opts.ConfigPath, err)
	}
	if err := probeBinds(desired, snap.current); err != nil {
		res.Duration = time.Since(start)
		return res, target.Reject(err)
	}
	leave, enter := writeFlipsNow(changes, desired, snap.current)
	// A new primary first: a reload takes hundreds of milliseconds, and the
	// server-state dump right before it carries the forced UP over to the
	// new worker (a forced-up server always exists already: only a server
	// HAProxy has DOWN is forced).
	// The write fence too, and first (the state file carries it over; see
	// FixServersState), and with it the write services' flips, to the
	// running worker (writeFlipsNow): it serves until the reload is done
	// (~1 s at 1,000 clusters) and keeps its sessions after it.
	if err := d.fenceAndFlip(ctx, changes, leave, enter, &res); err != nil {
		res.Duration = time.Since(start)
		return res, err
	}
	if err := d.forceUp(ctx, snap.proc, changes, &res); err != nil {
		res.Duration = time.Since(start)
		return res, err
	}
	if err := d.reloadWith(ctx, cfg, all, &res); err != nil {
		res.Duration = time.Since(start)
		return res, err
	}
	if err := d.verifyStates(ctx, desired, changes, false, nil); err != nil {
		res.Duration = time.Since(start)
		return res, err
	}
	// Trackers found out of step (resync_tracker changes) need no maint
	// and ready here, which would cut the sessions the new worker gave
	// them: the state file had each tracker's line from the server it
	// tracks (FixServersState), so the new worker starts them in step.
	// Read the new worker whole now, so that the next apply (a role
	// change, the one that must be fast) starts from the cache.
	if _, err := d.readFor(ctx, nil); err != nil {
		d.log.Warn("could not read the reloaded HAProxy; the next apply reads it", zap.Error(err))
	}
	log.Info("reloaded haproxy", zap.String("reload_id", res.ReloadID), zap.Bool("state_preserved", preserved))
	res.Duration = time.Since(start)
	return res, nil
}

// phases times the steps of an apply, for its log line: at 1,000 clusters
// an apply's time is mostly waiting (HAProxy, the disk), which a CPU profile
// does not show.
type phases struct {
	last  time.Time
	steps []zap.Field
}

func (p *phases) mark(step string) {
	now := time.Now()
	p.steps = append(p.steps, zap.Duration(step, now.Sub(p.last)))
	p.last = now
}

func (p *phases) field() zap.Field { return zap.Dict("steps", p.steps...) }

func (d *Direct) renderOptions() haproxycfg.Options {
	return haproxycfg.Options{StatsSocket: d.opts.StatsSocket, ServerStateFile: d.opts.ServerStateFile,
		Maxconn: d.opts.Maxconn, NoStrictLimits: d.opts.NoStrictLimits}
}

// reloadWith validates cfg, saves server states, installs cfg and reloads,
// then waits until the new worker serves every service in all. On any error
// before the reload nothing changed; on a failed reload the previous file is
// put back (the old worker keeps serving it).
func (d *Direct) reloadWith(ctx context.Context, cfg []byte, all []services.Service, res *target.Result) error {
	ctx, cancel := context.WithTimeout(ctx, d.opts.ReloadTimeout)
	defer cancel()
	dir := filepath.Dir(d.opts.ConfigPath)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(d.opts.ConfigPath)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write new config: %w", err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // a no-op once renamed
	// CreateTemp makes it 0600: the file writeConfig writes is 0644 (HAProxy
	// may run as another user, and its master reads it at every reload).
	err = tmp.Chmod(configMode)
	if err == nil {
		_, err = tmp.Write(cfg)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write new config %s: %w", tmpName, err)
	}
	if err := checkConfig(ctx, d.opts.HAProxyBin, tmpName); err != nil {
		return target.Reject(nameSections(err, cfg))
	}
	if err := target.CheckWrite(ctx); err != nil {
		return err // paused during the check and no longer leading
	}
	if d.opts.ServerStateFile != "" {
		// No refresh of the state file (stateRefresher) from this dump to
		// the end of the reload: it would dump the old worker for the new
		// file, or the new worker for the old one.
		d.stateMu.Lock()
		defer d.stateMu.Unlock()
		// Right before the reload, so the states are as fresh as possible.
		// Fixed (FixServersState) as it is streamed into the temp file.
		fix, err := d.dumpStateFix(ctx, all)
		if err != nil {
			return err
		}
		if err := writeAtomicFunc(d.opts.ServerStateFile, 0o600, fix.writeTo); err != nil {
			return fmt.Errorf("write server state file: %w", err)
		}
	}
	old, oldErr := os.ReadFile(d.opts.ConfigPath)
	// Last look at the lease before the file is installed and HAProxy
	// reloaded: this apply may have been paused since it began.
	if err := target.CheckWrite(ctx); err != nil {
		return err
	}
	if err := os.Rename(tmpName, d.opts.ConfigPath); err != nil {
		return fmt.Errorf("install new config: %w", err)
	}
	d.refresh.setAll(all)
	if err := syncDir(dir); err != nil {
		// Installed but maybe not durable: not reloaded (the next apply
		// reads everything again and reloads).
		return fmt.Errorf("install new config: %w", err)
	}
	if d.beforeReload != nil {
		d.beforeReload()
	}
	proc, err := d.rt.Reload(ctx)
	res.Reloaded = true
	res.ReloadID = strconv.Itoa(proc.Reloads)
	if err != nil {
		res.ReloadResult = "failed"
		if errors.Is(err, ErrReloadFailed) && oldErr == nil {
			d.refresh.setAll(nil) // the previous file: its services are not at hand
			if werr := writeAtomic(d.opts.ConfigPath, old, configMode); werr != nil {
				return fmt.Errorf("%w; restoring the previous %s also failed: %w", err, d.opts.ConfigPath, werr)
			}
		} else if !errors.Is(err, ErrReloadFailed) {
			res.ReloadResult = "in_progress"
		}
		if errors.Is(err, ErrReloadFailed) {
			// HAProxy refused to load the new file (e.g. a bind that fails):
			// the old worker serves the previous one, restored above.
			return target.Reject(err)
		}
		return err
	}
	if err := d.waitServing(ctx, all); err != nil {
		res.ReloadResult = "in_progress"
		return err
	}
	res.ReloadResult = "succeeded"
	return nil
}

// waitServing polls show stat until every service in all has its frontend,
// its backend and exactly its servers.
func (d *Direct) waitServing(ctx context.Context, all []services.Service) error {
	t := time.NewTicker(ReloadPollInterval)
	defer t.Stop()
	var last string
	for {
		rows, err := d.rt.ShowStat(ctx)
		if err == nil {
			last = missingServing(rows, all)
			if last == "" {
				return nil
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("new worker does not serve the new config: %w (last: %s)", ctx.Err(), last)
		case <-t.C:
		}
	}
}

func missingServing(rows []StatRow, all []services.Service) string {
	have := map[string]bool{}
	servers := map[string]int{}
	for _, r := range rows {
		have[r.Proxy+"/"+r.Name] = true
		if r.Type == TypeServer {
			servers[r.Proxy]++
		}
	}
	for _, s := range all {
		if !have[s.Name+"/FRONTEND"] || !have[s.Name+"/BACKEND"] {
			return "service " + s.Name + " missing"
		}
		for _, sv := range s.Servers {
			if !have[s.Name+"/"+sv.Name] {
				return "server " + s.Name + "/" + sv.Name + " missing"
			}
		}
		if servers[s.Name] != len(s.Servers) {
			return fmt.Sprintf("backend %s has %d servers, want %d", s.Name, servers[s.Name], len(s.Servers))
		}
	}
	return ""
}

// checkConfig runs `haproxy -c -f path`; its message is the error.
func checkConfig(ctx context.Context, bin, path string) error {
	cmd := exec.CommandContext(ctx, bin, "-c", "-f", path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("new config rejected by %s -c (nothing changed): %w: %s", bin, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// mergeKept returns desired followed by the services of the current file
// that desired does not name, so Apply never drops a section it was not
// asked about.
func mergeKept(desired, file []services.Service) []services.Service {
	// The common case, the file being the last desired (the controller
	// names every section of its file): desired itself, never modified (a
	// map of 4,000 names and a copy per apply at 1,000 clusters otherwise).
	if len(file) == len(desired) {
		same := true
		for i := range file {
			if file[i].Name != desired[i].Name {
				same = false
				break
			}
		}
		if same {
			return desired
		}
	}
	named := map[string]bool{}
	for _, s := range desired {
		named[s.Name] = true
	}
	out := append([]services.Service(nil), desired...)
	for _, s := range file {
		if !named[s.Name] {
			out = append(out, s)
		}
	}
	return out
}

// fenceAndFlip sends the write fences of changes and the flips leave and
// enter in two pipelined batches, the order that keeps a write service
// from ever having two primaries:
//
//  1. the fences (fenceCmds), but those of servers enter readies, then
//     leave: the outgoing twins of write services (a member that left the
//     primary's role may still pass /primary for a few checks: a hung
//     Patroni loop, so only its maint keeps writes off it);
//  2. enter, each readied server with a fence forced DOWN right after its
//     own ready (a held new leader's twin: leaving maint brings a server
//     UP at once, measured on HAProxy 2.6), in the same batch.
//
// A write service may be without a server between the two batches (a
// round trip), never with two primaries. res.ForcedDown is when the last
// fence was sent.
func (d *Direct) fenceAndFlip(ctx context.Context, changes []target.Change, leave, enter []Flip, res *target.Result) error {
	readied := make(map[[2]string]bool, len(enter))
	for _, f := range enter {
		readied[[2]string{f.Backend, f.Server}] = true
	}
	var first, second []string
	afterReady := map[[2]string]bool{}
	for _, c := range changes {
		if c.Kind != target.KindForceDown {
			continue
		}
		if k := [2]string{c.Backend, c.Server}; readied[k] {
			afterReady[k] = true
			continue
		}
		first = append(first, fenceCmds(c.Backend, c.Server)...)
	}
	fencedFirst := len(first) > 0
	for _, f := range leave {
		first = append(first, stateCmd(f))
	}
	for _, f := range enter {
		second = append(second, stateCmd(f))
		if afterReady[[2]string{f.Backend, f.Server}] {
			second = append(second, fenceCmds(f.Backend, f.Server)...)
		}
	}
	for i, batch := range [][]string{first, second} {
		if len(batch) == 0 {
			continue
		}
		if err := target.CheckWrite(ctx); err != nil {
			return err
		}
		if err := d.rt.PipelineQuiet(ctx, batch); err != nil {
			return fmt.Errorf("force down and set_state: %w", err)
		}
		if i == 0 && fencedFirst || i == 1 && len(afterReady) > 0 {
			res.ForcedDown = time.Now()
		}
	}
	return nil
}

// fenceCmds are the commands of the write fence of backend/server, which
// fences an old primary from a write service: `set server B/S health down`
// (no new connection goes to it from this command on; its queued ones are
// redistributed), then `shutdown sessions server B/S`, so a session opened
// in the last moments before Patroni stopped PostgreSQL (pgbouncer queues
// its writes for the restarted standby) is cut whatever the service's
// on-marked-down says. HAProxy's checks still run; the controller forces
// it DOWN again while the fence lasts.
func fenceCmds(backend, server string) []string {
	return []string{"set server " + backend + "/" + server + " health down",
		"shutdown sessions server " + backend + "/" + server}
}

// stateCmd is the command of a flip (its state is one flipsOf made:
// ready, drain or maint).
func stateCmd(f Flip) string {
	return "set server " + f.Backend + "/" + f.Server + " state " + f.State
}

// forceUp marks the new primary UP in write services at once (`set server
// B/S health up`) instead of waiting for its rise checks; the next checks
// still run, so a wrong nudge is undone after `fall` failures, and it is
// not forced again in worker proc (forcedUp).
func (d *Direct) forceUp(ctx context.Context, proc procID, changes []target.Change, res *target.Result) error {
	var cmds []string
	for _, c := range changes {
		if c.Kind == target.KindForceUp {
			cmds = append(cmds, fmt.Sprintf("set server %s/%s health up", c.Backend, c.Server))
		}
	}
	if len(cmds) == 0 {
		return nil
	}
	if err := target.CheckWrite(ctx); err != nil {
		return err
	}
	// One pipelined connection (a mass failover forces 2 per cluster).
	if err := d.rt.PipelineQuiet(ctx, cmds); err != nil {
		return fmt.Errorf("force up: %w", err)
	}
	res.ForcedUp = time.Now()
	d.forced.note(proc, changes)
	return nil
}

// desiredWeights returns the lookup of a server's weight in desired (a
// walk of desired per weight change was O(changes x fleet): 7 million
// comparisons for a mass failover's 1,744 weights at 1,000 clusters).
func desiredWeights(desired []services.Service) func(backend, server string) (int, error) {
	var byName map[string]*services.Service
	return func(backend, server string) (int, error) {
		if byName == nil {
			byName = make(map[string]*services.Service, len(desired))
			for i := range desired {
				if _, dup := byName[desired[i].Name]; !dup {
					byName[desired[i].Name] = &desired[i]
				}
			}
		}
		if s := byName[backend]; s != nil {
			for _, sv := range s.Servers {
				if sv.Name == server {
					return sv.Weight, nil
				}
			}
		}
		return 0, fmt.Errorf("server %s/%s not in desired services", backend, server)
	}
}

// statePreserved reports whether a rendered config keeps server states
// across reloads: server-state-file in global and load-server-state-from-file
// in defaults.
func statePreserved(cfg []byte) bool {
	var file, load bool
	rest := cfg
	for len(rest) > 0 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte("\n"))
		line := string(l) // one line: the proxies (2.6 MB) are not copied
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == "frontend" || f[0] == "backend" || f[0] == "listen") && line[0] != ' ' && line[0] != '\t' {
			// Both live in global and defaults, which come first: the
			// proxies (2.6 MB at 1,000 clusters) need no scan.
			break
		}
		if len(f) >= 2 && f[0] == "server-state-file" {
			file = true
		}
		if len(f) >= 2 && f[0] == "load-server-state-from-file" && f[1] != "none" {
			load = true
		}
	}
	return file && load
}

// fileStatePreserved is statePreserved of the file at path, read up to
// its first proxy.
func fileStatePreserved(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var head []byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		head = append(append(head, line...), '\n')
		if f := bytes.Fields(line); len(f) > 0 && line[0] != ' ' && line[0] != '\t' &&
			(string(f[0]) == "frontend" || string(f[0]) == "backend" || string(f[0]) == "listen") {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	return statePreserved(head), nil
}

// renderConfig is the file of all, as writeConfig writes it, for a reload
// to check and write.
func (d *Direct) renderConfig(all []services.Service) ([]byte, error) {
	var buf bytes.Buffer
	if err := d.renderTo(&buf, all); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeConfig streams the file of all to the config path, atomically.
func (d *Direct) writeConfig(all []services.Service) error {
	return writeAtomicFunc(d.opts.ConfigPath, configMode, func(w io.Writer) error { return d.renderTo(w, all) })
}

// renderTo writes the file of all to w: the sections that did not change
// are copied from the file at the config path (which the last write made:
// the render cache keeps where, not the ~5 MB of text of 1,000 clusters),
// the others rendered. (writeConfig's rename replaces the name, not the
// file open here.)
func (d *Direct) renderTo(w io.Writer, all []services.Service) error {
	var prev io.ReaderAt
	if f, err := os.Open(d.opts.ConfigPath); err == nil {
		defer f.Close()
		prev = f
	}
	return d.render.WriteFrom(w, all, d.renderOptions(), prev)
}

// configMode is the mode of the config file, whichever writer writes it.
const configMode os.FileMode = 0o644

// writeAtomic writes data to a temp file in path's directory, syncs it and
// renames it over path, then syncs the directory: readers (and HAProxy)
// see the old or the new file, never a partial one, also after a crash.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	return writeAtomicFunc(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// writeAtomicFunc is writeAtomic of what write writes (buffered).
func writeAtomicFunc(path string, mode os.FileMode, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name)
	bw := bufio.NewWriterSize(tmp, 64<<10)
	if err = write(bw); err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Chmod(name, mode); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir fsyncs a directory, so that a rename in it survives a crash.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// canonical returns the one copy of s (unique.Make copies it): the few
// texts a fleet's settings repeat, kept without what they were cut from.
func canonical(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgsvc/pgsvc/pkg/haproxy"
	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// bench holds everything one run started; teardown stops it all by PID.
type bench struct {
	o    options
	out  io.Writer
	logw io.Writer
	dir  string
	// notLiveAt: when waitLive last read HAProxy and found it not live.
	notLiveAt time.Time
	// backupOf: backend/server -> backup, from the last full read (see
	// stateRows); follow: the follow reads of the phase (waitAllLive).
	backupOf map[string]bool
	follow   followStats

	etcd       *etcdServer
	cli        *clientv3.Client
	hap        *haproxy.Process
	rt         *haproxy.Runtime
	br         *backendReader
	api        *child
	count      *counter
	controller *child
	rssMon     *rssMonitor // the controller's RSS, every rssEvery
	statusURL  string
	apiURL     string // the Data Plane API itself (not the counter)

	fleet *fleet
	inv   *topology.Inventory
	fake  *fakeCluster
	w     *writer
}

func (b *bench) logf(format string, a ...any) {
	fmt.Fprintf(b.logw, "[%s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

func (b *bench) teardown() {
	b.fake.close()
	b.rssMon.close()
	if b.controller != nil {
		b.controller.stop()
	}
	if b.api != nil {
		b.api.stop()
	}
	b.count.close()
	if b.hap != nil {
		if err := b.hap.Stop(); err != nil {
			b.logf("stop haproxy: %v", err)
		}
	}
	if b.cli != nil {
		b.cli.Close()
	}
	b.etcd.stop()
}

// phase is what one phase cost.
type phase struct {
	name        string
	took        time.Duration // to live (or to the end of the phase)
	ready       time.Duration // controller /readyz (initial convergence)
	settled     time.Duration // switchover: until every running weight was the plan's
	requests    int           // Data Plane API requests
	requestsBy  string
	reloads     int // HAProxy master reload counter delta
	reconciles  int // controller reconciles
	applies     int // controller applies that changed something
	applyErrors int
	oldWorkers  int
	// applied summarises the controller's own "applied" log lines.
	applied string
	// offWeight counts active servers whose running weight is not the
	// plan's once the phase settled; offExample names one.
	offWeight  int
	offExample string
	// cpu is the CPU time each process used during the phase: on a
	// shared machine a steadier figure than the wall clock.
	cpu cpuTimes
}

type result struct {
	o         options
	machine   string
	fdLimit   uint64
	setupKeys time.Duration
	initial   phase
	switchov  phase
	mass      phase
	massFirst time.Duration // from the first failover write
	// massNotYet is when the last poll that found it not live read
	// HAProxy (from the last leader key; < 0: none did): the mass failover
	// became live between this and mass.took (a poll reads 24,000 servers
	// at 1,000 clusters; what is not live is then followed by reads of the
	// admin states only, every few ms: waitAllLive).
	massNotYet time.Duration
	// massApplied: the end of the controller's last apply (its log) with a
	// role change (any change but force_up and set_weight) up to 10 s
	// after the benchmark saw it live, read once the fleet settled, from
	// the last leader key (< 0: none found). It may end after live: the
	// deactivations of the crashed members' twins go last (they move no
	// traffic, and the benchmark's live leaves those twins out).
	massApplied time.Duration
	// massMoved: when the apply that made the mass failover live had made
	// every change that moves traffic (its log's traffic_moved_at: the
	// crashed members' drains, which the comparison leaves out, came
	// after), from the last leader key (< 0: the log has none).
	massMoved time.Duration
	// switchApplied: the end of the controller's last apply (its log)
	// between the new leader key and the switchover seen live, from the
	// leader key (< 0: none found).
	switchApplied time.Duration
	// switchNotYet: the start of the last read that found the switchover
	// not live, from the leader key (< 0: none did).
	switchNotYet time.Duration
	// massNotLive says what still differed when the mass failover was not
	// live within its bound ("" when it was).
	massNotLive string
	idle        phase
	// sessions: which client sessions held through the switching cluster's
	// services survived its switchover ("" when not measured).
	sessions string
	fence    time.Duration // switchover: leader key released -> old primary DOWN in write services (the fence)
	idleFor  time.Duration
	notReady int
	samples  int
	cpuCtl   float64 // fraction of one core while idle
	cpuAPI   float64
	cpuHAP   float64
	// rssIdle is the controller's RSS at the end of the idle window
	// (probed by /readyz once a second, as an orchestrator would), read
	// before the phase's closing reads: those scrape /metrics three times
	// and read back the state, and their garbage is there in rss.
	rssIdle float64
	// heapInuse, heapAlloc: the controller's Go heap (its /metrics, read
	// after rssIdle), MB: spans in use, and objects (live and not yet
	// collected).
	heapInuse, heapAlloc float64
	// rssIdleLo, rssIdleHi: the least and greatest of the controller's RSS
	// read every rssEvery over the idle window (rssIdle is one read at its
	// end); rssMassHi: the greatest over the mass failover, from its first
	// write to the end of the phase's reads. MB; 0 when not read.
	rssIdleLo, rssIdleHi, rssMassHi float64
	// rssMassFile: the file-backed part of rssMassHi (the controller
	// binary's mapped pages, which no heap change moves).
	rssMassFile float64
	rss, hwm    float64 // controller MB, after the closing reads; peak
	apiRSS      float64
	hapRSS      float64 // current worker
	version     string
	floor       *floor // the API's own floor (nil: not measured)
}

func (b *bench) run(ctx context.Context) (*result, error) {
	o := b.o
	res := &result{o: o, machine: machine()}
	var err error
	if res.fdLimit, err = raiseFileLimit(); err != nil {
		b.logf("raise file limit: %v (HAProxy runs with no strict-limits)", err)
	}
	if o.dir != "" {
		b.dir = absPath(o.dir)
		if err := os.MkdirAll(b.dir, 0o755); err != nil {
			return nil, err
		}
	} else if b.dir, err = os.MkdirTemp("", "benchscale-"); err != nil {
		return nil, err
	}
	ctlBin, err := exec.LookPath(o.controllerBin)
	if err != nil {
		return nil, fmt.Errorf("controller binary %s: %w (run make build)", o.controllerBin, err)
	}
	ctlBin = absPath(ctlBin)
	hapBin, err := exec.LookPath(o.haproxyBin)
	if err != nil {
		return nil, fmt.Errorf("haproxy: %w (apt-get install haproxy)", err)
	}
	apiBin := ""
	switch o.driver {
	case "v2":
		apiBin = o.dpapiV2
	case "v3":
		apiBin = o.dpapiV3
	}
	if o.driver != "direct" {
		if apiBin == "" {
			return nil, fmt.Errorf("driver %s needs the Data Plane API binary: -dataplaneapi-%s PATH", o.driver, o.driver)
		}
		if _, err := os.Stat(apiBin); err != nil {
			return nil, fmt.Errorf("driver %s: %w", o.driver, err)
		}
		apiBin = absPath(apiBin)
		// Its -v prints no version in these builds: the file name says it.
		res.version = filepath.Base(apiBin)
	}
	b.logf("work directory %s; %s; file limit %d", b.dir, res.machine, res.fdLimit)

	// etcd and the fleet's keys.
	if b.etcd, err = startEtcd(ctx, o.etcdBin, b.dir); err != nil {
		return nil, err
	}
	if b.cli, err = b.etcd.client(); err != nil {
		return nil, err
	}
	b.fleet = newFleet(o.n, o.octet)
	invPath := filepath.Join(b.dir, "pigsty.yml")
	if err := os.WriteFile(invPath, []byte(b.fleet.inventory()), 0o600); err != nil {
		return nil, err
	}
	if b.inv, err = topology.Load(invPath); err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	lease, err := b.cli.Grant(lctx, 4*3600)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("etcd lease: %w", err)
	}
	b.fleet.lease = lease.ID
	b.w = &writer{cli: b.cli}
	start := time.Now()
	if _, err := b.w.commit(ctx, b.fleet.initial()); err != nil {
		return nil, err
	}
	res.setupKeys = time.Since(start)
	b.logf("wrote Patroni keys of %d clusters in %s (etcd %s)", o.n, res.setupKeys.Round(time.Millisecond), o.etcdBin)

	// HAProxy, empty but for the stats socket and the server-state file.
	cfgPath := filepath.Join(b.dir, "haproxy.cfg")
	stats, master := filepath.Join(b.dir, "admin.sock"), filepath.Join(b.dir, "master.sock")
	state := filepath.Join(b.dir, "server-state")
	const maxconn = 8000
	initial := haproxycfg.Render(nil, haproxycfg.Options{StatsSocket: stats, ServerStateFile: state, Maxconn: maxconn, NoStrictLimits: true})
	if err := os.WriteFile(cfgPath, initial, 0o600); err != nil {
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	b.hap, err = haproxy.StartProcess(hctx, hapBin, cfgPath, master, filepath.Join(b.dir, "haproxy.pid"))
	cancel()
	if err != nil {
		return nil, err
	}
	// show stat of 1,000 clusters is a few MB: a generous socket timeout.
	b.rt = &haproxy.Runtime{Socket: stats, MasterSocket: master, Timeout: 60 * time.Second}
	b.br = &backendReader{rt: b.rt}

	// The controller's config: the direct driver, or the API behind the counter.
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	b.statusURL = "http://" + listen
	ctlCfg := fmt.Sprintf("inventory: %s\nlisten: %q\netcd:\n  endpoints: [%q]\nlog:\n  level: info\n", invPath, listen, b.etcd.url)
	if o.driver == "direct" {
		ctlCfg += fmt.Sprintf("direct:\n  - {config_path: %q, stats_socket: %q, master_socket: %q, server_state_file: %q, haproxy_bin: %q, maxconn: %d, no_strict_limits: true%s}\n",
			cfgPath, stats, master, state, hapBin, maxconn, layoutField(o.layout))
	} else {
		var apiURL string
		b.api, apiURL, err = startDataplaneAPI(ctx, apiBin, o.driver, b.dir, cfgPath, hapBin, stats, master, state, o.reloadDelay)
		if err != nil {
			return nil, err
		}
		b.apiURL = apiURL
		ctlAPI := strings.TrimPrefix(apiURL, "http://")
		if o.count {
			if b.count, err = startCounter(apiURL); err != nil {
				return nil, err
			}
			ctlAPI = b.count.addr
		}
		ctlCfg += fmt.Sprintf("dataplaneapi:\n  - {url: %q%s}\n", "http://admin:adminpwd@"+ctlAPI, layoutField(o.layout))
	}
	ctlCfgPath := filepath.Join(b.dir, "controller.yml")
	if err := os.WriteFile(ctlCfgPath, []byte(ctlCfg), 0o600); err != nil {
		return nil, err
	}

	// 1. Initial convergence.
	want, err := b.fleet.modelWanted(b.inv, nil)
	if err != nil {
		return nil, err
	}
	if o.layout == "twins" {
		if trackers, trackerBackends, allTrackers, err = b.fleet.trackingTwins(b.inv); err != nil {
			return nil, err
		}
	}
	before := b.mark(ctx)
	start = time.Now()
	if b.controller, err = startChild("controller", b.dir, ctlBin, "run", "--config", ctlCfgPath); err != nil {
		return nil, err
	}
	b.rssMon = startRSS(b.controller.pid())
	b.logf("controller started (pid %d); waiting for %d backends to be live", b.controller.pid(), len(want))
	res.initial.name = "initial convergence"
	var ready time.Duration
	live, err := b.waitLive(ctx, want, nil, start, b.pollEvery(), func() {
		if ready == 0 && b.ready(ctx) {
			ready = time.Since(start)
		}
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("initial convergence: %w", err)
	}
	if err := waitFor(ctx, o.timeout, 100*time.Millisecond, func() (bool, error) {
		if ready == 0 && b.ready(ctx) {
			ready = time.Since(start)
		}
		return ready > 0, b.controllerGone()
	}); err != nil {
		return nil, fmt.Errorf("controller never ready: %w", err)
	}
	res.initial.took, res.initial.ready = live, ready
	b.settle(ctx)
	b.fill(ctx, &res.initial, before)
	b.logf("initial: ready %s, live %s, %d API requests, %d reloads", ready.Round(time.Millisecond), live.Round(time.Millisecond), res.initial.requests, res.initial.reloads)
	if err := b.crossCheck(ctx, nil); err != nil {
		return nil, err
	}

	// 2. One cluster's switchover.
	target := o.n / 2
	steps, leaderStep := b.fleet.switchover(target)
	only := map[int]bool{target: true}
	want, err = b.fleet.modelWanted(b.inv, only)
	if err != nil {
		return nil, err
	}
	backends := backendNames(want)
	var held []*session
	if o.sessions {
		// The switching cluster's members answer (checks pass) and one
		// client session is held through each of its services.
		oldLeader := b.fleet.memberName(target, (b.fleet.leader[target]+1)%3+1)
		if b.fake, err = startFakeCluster(b.fleet, target); err != nil {
			return nil, fmt.Errorf("fake members: %w", err)
		}
		// The model already moved to the new leader: roles as before the switchover.
		for seq := 1; seq <= 3; seq++ {
			b.fake.setRole(b.fleet.memberName(target, seq), "replica")
		}
		b.fake.setRole(oldLeader, "primary")
		addrs := map[string]string{}
		ip := b.fleet.addr(target, 0)
		for svc, port := range map[string]int{"primary": portPrimary, "replica": portReplica, "default": portDefault, "offline": portOffline} {
			addrs[svc] = fmt.Sprintf("%s:%d", ip, port)
		}
		if held, err = openSessions(ctx, addrs, 2*time.Minute); err != nil {
			return nil, err
		}
		defer closeSessions(held)
		b.logf("holding %d client sessions through %s's services", len(held), b.fleet.clusterName(target))
	}
	before = b.mark(ctx)
	// Patroni takes a while between releasing the leader key and the
	// candidate taking it (1.8 s in the end-to-end runs, RESULTS.md): the
	// gap is polled to see the write fence go live.
	var leaderAt, releasedAt time.Time
	// The fence is the old primary forced DOWN in the write services: seen
	// only where its checks pass until then (-sessions: its fake members
	// answer; otherwise every member is DOWN by its checks from the start).
	fenceAddr := ""
	if b.fake != nil {
		fenceAddr = b.fleet.addr(target, (b.fleet.leader[target]+1)%3+1)
	}
	seeFence := func(rows []haproxy.StatRow) {
		if res.fence == 0 && !releasedAt.IsZero() && fenced(rows, fenceAddr) {
			res.fence = time.Since(releasedAt)
		}
	}
	for i, st := range steps {
		at, err := b.w.commit(ctx, [][]clientv3.Op{st})
		if err != nil {
			return nil, err
		}
		switch i {
		case leaderStep - 2:
			if b.fake != nil { // the old primary stops serving as primary
				for seq := 1; seq <= 3; seq++ {
					b.fake.setRole(b.fleet.memberName(target, seq), "replica")
				}
			}
		case leaderStep - 1:
			releasedAt = at
			for time.Since(releasedAt) < o.gap {
				if rows, adm, err := b.readBackends(ctx, backends); err == nil {
					inactive = adm
					seeFence(rows)
				}
				time.Sleep(2 * time.Millisecond)
			}
		case leaderStep:
			leaderAt = at
			if b.fake != nil {
				b.fake.setRole(b.fleet.memberName(target, b.fleet.leader[target]), "primary")
			}
		}
	}
	res.switchov.name = "switchover of " + b.fleet.clusterName(target)
	saved := b.o.timeout
	b.o.timeout = min(saved, 2*time.Minute+time.Duration(o.n)*60*time.Millisecond)
	b.notLiveAt = time.Time{}
	expectTrackers = true
	res.switchov.took, err = b.waitLive(ctx, want, backends, leaderAt, 2*time.Millisecond, nil, seeFence)
	expectTrackers = false
	res.switchNotYet = -1
	if !b.notLiveAt.IsZero() {
		res.switchNotYet = b.notLiveAt.Sub(leaderAt)
	}
	b.o.timeout = saved
	if err != nil {
		return nil, fmt.Errorf("switchover: %w", err)
	}
	// Settled: every active server at its wanted weight. The fence is no
	// weight (a runtime forced DOWN, left to the checks once lifted), so this
	// is at once unless a weight is wrong. Bounded: a weight that stays off
	// the plan in the running HAProxy is a finding, not a reason to stop.
	liftWait := min(o.timeout, 2*time.Minute+time.Duration(o.n)*50*time.Millisecond)
	if err := waitFor(ctx, liftWait, 10*time.Millisecond, func() (bool, error) {
		rows, adm, err := b.readBackends(ctx, backends)
		if err != nil {
			return false, nil
		}
		inactive = adm
		seeFence(rows)
		for _, w := range weightsOf(rows) {
			if w != 100 {
				return false, b.controllerGone()
			}
		}
		return true, nil
	}); err != nil {
		if ctx.Err() != nil || b.controllerGone() != nil {
			return nil, fmt.Errorf("switchover: %w", err)
		}
		b.logf("switchover: a running weight still differs from the plan %s after the new leader took the key", time.Since(leaderAt).Round(time.Second))
		res.switchov.settled = -time.Since(leaderAt)
	}
	if res.switchov.settled == 0 {
		res.switchov.settled = time.Since(leaderAt)
	}
	res.switchApplied = -1
	// (Its log line follows the read-back, which may end after the poll
	// that saw it live: up to 250 ms past it.)
	if at := b.lastApply(leaderAt, leaderAt.Add(res.switchov.took+250*time.Millisecond)); !at.IsZero() {
		res.switchApplied = at.Sub(leaderAt)
	}
	b.settle(ctx)
	b.fill(ctx, &res.switchov, before)
	if held != nil {
		kept := make([]bool, len(held))
		for i, h := range held {
			kept[i] = h.alive()
		}
		res.sessions = sessionsText(held, kept)
		closeSessions(held)
		b.fake.close()
		b.fake = nil
	}
	b.logf("switchover: live %s after the leader key, weights at the plan's %s, %d API requests, %d reloads", res.switchov.took.Round(time.Millisecond),
		res.switchov.settled.Round(time.Millisecond), res.switchov.requests, res.switchov.reloads)
	if err := b.crossCheck(ctx, only); err != nil {
		return nil, err
	}

	// 3. Every cluster fails over at once.
	expire, promote := b.fleet.massFailover()
	if o.layout == "twins" {
		ignore = b.fleet.goneInTwinServices()
	}
	if want, err = b.fleet.modelWanted(b.inv, nil); err != nil {
		return nil, err
	}
	before = b.mark(ctx)
	first := time.Now()
	if _, err := b.w.commit(ctx, expire); err != nil {
		return nil, err
	}
	lastLeader, err := b.w.commit(ctx, promote)
	if err != nil {
		return nil, err
	}
	b.logf("mass failover written in %s", lastLeader.Sub(first).Round(time.Millisecond))
	res.mass.name = "mass failover"
	b.notLiveAt = time.Time{}
	b.follow = followStats{}
	massWait := min(o.timeout, 90*time.Second+time.Duration(o.n)*90*time.Millisecond)
	saved = b.o.timeout
	b.o.timeout = massWait
	expectTrackers = true
	if o.followMass {
		res.mass.took, err = b.waitLive(ctx, want, nil, lastLeader, b.pollEvery(), nil, nil)
	} else {
		res.mass.took, err = b.waitLogged(ctx, want, first, lastLeader)
	}
	expectTrackers = false
	b.o.timeout = saved
	b.logf("mass failover: %s", b.follow)
	if err != nil {
		if ctx.Err() != nil || b.controllerGone() != nil {
			return nil, fmt.Errorf("mass failover: %w", err)
		}
		// Not live in time is a finding: go on measuring.
		b.logf("mass failover: %v", err)
		res.mass.took, res.massNotLive = -time.Since(lastLeader), err.Error()
	}
	if res.mass.took > 0 {
		res.massFirst = res.mass.took + lastLeader.Sub(first)
	}
	res.massNotYet = -1
	if !b.notLiveAt.IsZero() {
		res.massNotYet = b.notLiveAt.Sub(lastLeader)
	}
	// Settled includes the lift of the write fences, fence_hold (5 s)
	// after the new leaders: a mass failover live sooner would otherwise
	// count the fences still (rightly) held as weights off the plan.
	if d := time.Until(lastLeader.Add(6 * time.Second)); d > 0 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(d):
		}
	}
	b.settle(ctx)
	res.massApplied = -1
	if res.mass.took > 0 {
		// The apply that made it live logs after its read-back (a follow
		// read every few tens of ms sees it first), and the crashed
		// members' twins go after live. The fence lifts, fence_hold (5 s)
		// after the new leaders, are no role change.
		if at := b.lastRoleApply(first, lastLeader.Add(res.mass.took+10*time.Second)); !at.IsZero() {
			res.massApplied = at.Sub(lastLeader)
		}
	}
	res.massMoved = -1
	if res.mass.took > 0 {
		if moved := b.movedAt(lastLeader.Add(res.mass.took)); !moved.IsZero() {
			res.massMoved = moved.Sub(lastLeader)
		}
	}
	b.fill(ctx, &res.mass, before)
	massEnd := time.Now()
	_, res.rssMassHi, _ = b.rssMon.span(first, massEnd)
	res.rssMassFile = b.rssMon.fileAtPeak(first, massEnd)
	b.logf("mass failover: live %s after the last leader key, %d API requests, %d reloads", res.mass.took.Round(time.Millisecond), res.mass.requests, res.mass.reloads)
	if err := b.crossCheck(ctx, nil); err != nil {
		return nil, err
	}

	// 4. Idle, from quietAfter past the last leader change: past the
	// controller's promote window (15 s) and fence hold (5 s), so nothing
	// is forced any more (a new primary is forced UP once per promotion;
	// here its checks fail afterwards: nobody listens).
	if wait := quietAfter - time.Since(lastLeader); wait > 0 {
		b.logf("waiting %s: idle starts %s after the last leader change", wait.Round(time.Second), quietAfter)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		b.settle(ctx)
	}
	b.logf("measuring the idle fleet for %s", o.idle)
	before = b.mark(ctx)
	cpu0 := b.cpu(ctx)
	t0 := time.Now()
	tick := time.NewTicker(time.Second)
	for time.Since(t0) < o.idle {
		select {
		case <-ctx.Done():
			tick.Stop()
			return nil, ctx.Err()
		case <-tick.C:
		}
		res.samples++
		if !b.ready(ctx) {
			res.notReady++
		}
		if err := b.controllerGone(); err != nil {
			tick.Stop()
			return nil, err
		}
	}
	tick.Stop()
	res.idleFor = time.Since(t0)
	res.rssIdle, _ = procStatus(b.controller.pid())
	res.rssIdleLo, res.rssIdleHi, _ = b.rssMon.span(t0, time.Now())
	res.heapInuse = b.metric(ctx, "go_memstats_heap_inuse_bytes") / 1e6
	res.heapAlloc = b.metric(ctx, "go_memstats_heap_alloc_bytes") / 1e6
	cpu1 := b.cpu(ctx)
	res.idle.name = "idle"
	res.idle.took = res.idleFor
	b.fill(ctx, &res.idle, before)
	frac := func(d time.Duration) float64 { return d.Seconds() / res.idleFor.Seconds() }
	res.cpuCtl, res.cpuAPI, res.cpuHAP = frac(cpu1.ctl-cpu0.ctl), frac(cpu1.api-cpu0.api), frac(cpu1.hap-cpu0.hap)
	res.rss, res.hwm = procStatus(b.controller.pid())
	if b.api != nil {
		res.apiRSS, _ = procStatus(b.api.pid())
	}
	if pid, err := b.rt.WorkerPID(ctx); err == nil {
		res.hapRSS, _ = procStatus(pid)
	}
	// 5. The API's own floor, last: it stops the controller and leaves the
	// roles wrong.
	if b.api != nil && o.floor {
		b.logf("measuring the Data Plane API's own floor (the controller stopped)")
		res.floor = b.apiFloor(ctx)
		b.logf("API floor: %s", res.floor)
	}
	return res, nil
}

// pollEvery is the least pause between two full `show stat` reads; waitLive
// also pauses at least pollShare times as long as the last read took, so
// that reading HAProxy never costs it more than about a tenth of a core (a
// full read of 1,000 clusters is ~15,000 rows).
func (b *bench) pollEvery() time.Duration { return 50 * time.Millisecond }

// quietAfter: the idle phase starts this long after the last leader change
// (past the controller's promote_window, 15 s, and fence_hold, 5 s).
const quietAfter = 25 * time.Second

// pollShare: pause >= pollShare x the last read; narrowShare for the reads
// of a few backends.
const (
	pollShare   = 9
	narrowShare = 2
)

// lastApplyError is the controller's last "apply failed" log line, if any.
func (b *bench) lastApplyError() string {
	f, err := os.Open(b.controller.log.Name())
	if err != nil {
		return ""
	}
	defer f.Close()
	last := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"apply failed`) {
			last = sc.Text()
		}
	}
	if last == "" {
		return ""
	}
	return "; controller: " + last
}

func (b *bench) controllerGone() error {
	if b.controller != nil && b.controller.exited() {
		return fmt.Errorf("the controller exited (see %s)", b.controller.log.Name())
	}
	return nil
}

// waitLive polls the running HAProxy until the backends of want show
// exactly the wanted servers and flags, and returns the time from since.
// backends limits the read to those backends (`show stat <backend>`);
// nil reads everything (waitAllLive).
func (b *bench) waitLive(ctx context.Context, want wanted, backends []string, since time.Time, every time.Duration, each func(), onRows func([]haproxy.StatRow)) (time.Duration, error) {
	if backends == nil {
		return b.waitAllLive(ctx, want, since, every, each, onRows)
	}
	deadline := time.Now().Add(b.o.timeout)
	var lastBad []string
	var example string
	var lastErr error
	for {
		// A read of a few backends (a switchover) costs HAProxy ~1 ms: it is
		// repeated after twice its time, so that the pause after a read does
		// not add tens of ms to when the change is seen live.
		readAt := time.Now()
		rows, adm, err := b.readBackends(ctx, backends)
		now := time.Now()
		if err == nil {
			inactive = adm
			if onRows != nil {
				onRows(rows)
			}
			lastBad, example = mismatch(rows, want)
			if len(lastBad) == 0 {
				return now.Sub(since), nil
			}
			b.notLiveAt = readAt
		} else {
			lastErr = err
		}
		if each != nil {
			each()
		}
		if err := b.controllerGone(); err != nil {
			return 0, err
		}
		if now.After(deadline) {
			return 0, fmt.Errorf("not live within %s: %d of %d backends differ (%s); last read error: %v", b.o.timeout, len(lastBad), len(want), example, lastErr)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(max(every, narrowShare*now.Sub(readAt))):
		}
	}
}

// waitLogged is the mass failover's live without follow reads
// (-follow-mass=false): it reads nothing from HAProxy until the
// controller's log has an apply of role changes since first (looked for
// every quietEvery), then reads everything once; when that read finds
// every backend live, the time returned is the end of the last such apply
// (its log line, written after the apply's last request was answered:
// live by then at the latest), from since. Else it waits for a later
// apply and reads again.
func (b *bench) waitLogged(ctx context.Context, want wanted, first, since time.Time) (time.Duration, error) {
	deadline := time.Now().Add(b.o.timeout)
	var seen time.Time // the last apply a full read was made after
	var lastBad []string
	var example string
	for {
		if at := b.lastRoleApply(first, time.Now().Add(time.Minute)); !at.IsZero() && at.After(seen) {
			seen = at
			readAt := time.Now()
			rows, err := b.fullRead(ctx)
			took := time.Since(readAt)
			b.follow.reads++
			b.follow.whole++
			b.follow.took += took
			b.follow.wholeTook += took
			b.follow.maxWhole = max(b.follow.maxWhole, took)
			if err == nil {
				if lastBad, example = mismatch(rows, want); len(lastBad) == 0 {
					return at.Sub(since), nil
				}
				b.notLiveAt = readAt
			}
		}
		if err := b.controllerGone(); err != nil {
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not live within %s: %d of %d backends differ (%s)", b.o.timeout, len(lastBad), len(want), example)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(quietEvery):
		}
	}
}

// quietEvery is how often waitLogged looks in the controller's log.
const quietEvery = 200 * time.Millisecond

// readBackends reads the server rows and the servers in maintenance or
// drain of a few backends: their `show servers state B` only (stateRows,
// ~0.1 ms each at 1,000 clusters) once a full read gave the backup flags,
// else `show stat <iid>` too (which walks all 4,000 proxies: ~10 ms for a
// switchover's 4 backends).
func (b *bench) readBackends(ctx context.Context, names []string) ([]haproxy.StatRow, map[string]bool, error) {
	if b.backupOf != nil {
		rows, adm, known, err := stateRows(ctx, b.rt, names, b.backupOf)
		if err != nil || known {
			return rows, adm, err
		}
	}
	return b.br.readAll(ctx, names)
}

// fullRead reads every server row (`show stat`) and admin state (`show
// servers state`: inactive), and keeps the backup flags (backupOf).
func (b *bench) fullRead(ctx context.Context) ([]haproxy.StatRow, error) {
	rows, err := b.rt.ShowStat(ctx)
	if err != nil {
		return nil, err
	}
	adm, err := adminStates(ctx, b.rt)
	if err != nil {
		return nil, err
	}
	inactive = adm
	b.backupOf = backupFlags(rows)
	return rows, nil
}

// waitAllLive is waitLive of every backend. A full read (`show stat` and
// `show servers state`) takes ~0.8 s at 1,000 clusters and is followed by a
// pause pollShare times as long; so what a full read finds not live is
// followed by reads of the admin states only (followLive: the whole `show
// servers state`, or that of each backend not live yet), and when those
// see it all live a full read confirms it. The time returned is the end of
// the first read that saw every backend live (a follow read applies the
// same criterion as a full one, see stateRows), and only once the full read
// right after it saw every backend live too. When the backup flags are
// known (an earlier full read), it starts by following every backend.
func (b *bench) waitAllLive(ctx context.Context, want wanted, since time.Time, every time.Duration, each func(), onRows func([]haproxy.StatRow)) (time.Duration, error) {
	deadline := time.Now().Add(b.o.timeout)
	var lastBad []string
	var example string
	var lastErr error
	progress := time.Now()
	var seenAt time.Time // the end of the follow read that saw it live (to confirm)
	if b.backupOf != nil {
		at, ok, err := b.followLive(ctx, want, nil, deadline)
		if ok {
			seenAt = at
		} else if err != nil {
			lastErr = err
		}
	}
	for {
		readAt := time.Now()
		rows, err := b.fullRead(ctx)
		now := time.Now()
		if err == nil && onRows != nil {
			onRows(rows)
		}
		if err == nil {
			lastBad, example = mismatch(rows, want)
			if len(lastBad) == 0 {
				if seenAt.IsZero() {
					seenAt = now
				}
				return seenAt.Sub(since), nil
			}
			b.notLiveAt = readAt
			at, ok, ferr := b.followLive(ctx, want, lastBad, deadline)
			seenAt = time.Time{}
			if ok {
				seenAt = at
				continue // the confirming full read
			}
			if ferr != nil {
				lastErr = ferr
			}
		} else {
			lastErr = err
			seenAt = time.Time{}
		}
		if each != nil {
			each()
		}
		if err := b.controllerGone(); err != nil {
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not live within %s: %d of %d backends differ (%s); last read error: %v", b.o.timeout, len(lastBad), len(want), example, lastErr)
		}
		if time.Since(progress) > 30*time.Second {
			progress = time.Now()
			b.logf("  ... %s: %d of %d backends not live yet (%s)%s", time.Since(since).Round(time.Second), len(lastBad), len(want), example, b.lastApplyError())
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(max(every, pollShare*now.Sub(readAt))):
		}
	}
}

// followEach: at most this many backends not live are read one `show
// servers state B` each; more, and the whole `show servers state` is read
// (one command).
const followEach = 400

// followEvery and followShare pace the follow reads: the next starts
// followEvery after one ends, or followShare times as long as it took,
// whichever is later. A read's time includes parsing it here: a whole
// read at 1,000 clusters is ~50 ms of HAProxy's time idle (~25 ms more
// here), 120-150 ms under a mass failover's load, so HAProxy spends well
// under a third of a thread on them. (A pause of 4x lost the resolution: a
// mass failover whose last apply flipped every cluster at once was seen
// live up to 0.8 s late.)
const (
	followEvery = 10 * time.Millisecond
	followShare = 2
)

// followPause is the pause after a follow read that took took and found
// bad backends not live, when the first whole read of this follow (at
// since) found first. While the whole state is read (more than followEach
// not live), it is at least a quarter of the time the progress so far
// predicts for the rest, at most followMax: the whole `show servers state`
// of 1,000 clusters costs HAProxy 120-160 ms under a mass failover's load,
// and read at the base pace (one read, a pause twice as long) it cut the
// Data Plane API's runtime PUTs from ~1,480 to ~980 a second on this
// machine (the API's every request is HAProxy CLI commands): the
// benchmark was slowing down what it measured. Near the end (followEach
// or fewer not live) the backends left are read one each at the base
// pace, so what ends gradually is seen as before; what ends all at once
// after a long pause is seen at most that pause late (the "last poll that
// found it not live" line brackets it).
func followPause(took time.Duration, whole bool, first, bad int, since, now time.Time) time.Duration {
	pause := max(followEvery, followShare*took)
	if !whole || first <= bad || now.Sub(since) < followWarm {
		return pause
	}
	rate := float64(first-bad) / now.Sub(since).Seconds() // backends a second
	rest := time.Duration(float64(bad) / rate * float64(time.Second))
	return max(pause, min(rest/4, followMax))
}

// followMax bounds followPause; followWarm: no backing off before this
// much of the follow has passed. A direct-driver mass failover is live in
// under a second, often after a small first apply whose progress predicts
// seconds more: backing off then saw it live up to followMax late.
const (
	followMax  = time.Second
	followWarm = time.Second
)

// followStats counts the follow reads of a phase (for the log).
type followStats struct {
	reads, whole      int
	took, wholeTook   time.Duration
	maxWhole, maxEach time.Duration
}

func (f followStats) String() string {
	if f.reads == 0 {
		return "no follow reads"
	}
	s := fmt.Sprintf("%d follow reads", f.reads)
	if f.whole > 0 {
		s += fmt.Sprintf(" (%d of the whole `show servers state`, %s each on average, max %s)", f.whole,
			(f.wholeTook / time.Duration(f.whole)).Round(100*time.Microsecond), f.maxWhole.Round(100*time.Microsecond))
	}
	if n := f.reads - f.whole; n > 0 {
		s += fmt.Sprintf(", %d per backend (%s each on average, max %s)", n,
			((f.took - f.wholeTook) / time.Duration(n)).Round(100*time.Microsecond), f.maxEach.Round(100*time.Microsecond))
	}
	return s
}

// followLive reads the admin states of the backends in names (nil: all of
// want) every few ms (followEvery, followShare) until they all show want,
// and returns when the read that found them so ended; ok false when that
// did not happen by deadline, a server is not known from the last full read
// (a reload: the caller reads everything), or a read failed (err).
func (b *bench) followLive(ctx context.Context, want wanted, names []string, deadline time.Time) (time.Time, bool, error) {
	// first, since: the first whole read's count not live and its start
	// (followPause).
	first, since := 0, time.Time{}
	for {
		whole := names == nil || len(names) > followEach
		sub := want
		var read []string // nil: the whole state
		if !whole {
			read = names
			sub = wanted{}
			for _, n := range names {
				sub[n] = want[n]
			}
		}
		readAt := time.Now()
		rows, adm, known, err := stateRows(ctx, b.rt, read, b.backupOf)
		end := time.Now()
		if err != nil || !known {
			return time.Time{}, false, err
		}
		took := end.Sub(readAt)
		b.follow.reads++
		b.follow.took += took
		if whole {
			b.follow.whole++
			b.follow.wholeTook += took
			b.follow.maxWhole = max(b.follow.maxWhole, took)
		} else {
			b.follow.maxEach = max(b.follow.maxEach, took)
		}
		inactive = adm
		bad, _ := mismatch(rows, sub)
		if len(bad) == 0 {
			return end, true, nil
		}
		b.notLiveAt = readAt
		if whole && since.IsZero() {
			first, since = len(bad), readAt
		}
		pause := followPause(took, whole, first, len(bad), since, readAt)
		if whole || len(bad) < len(names) {
			names = bad
		}
		if err := b.controllerGone(); err != nil {
			return time.Time{}, false, err
		}
		if time.Now().After(deadline) {
			return time.Time{}, false, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, false, ctx.Err()
		case <-time.After(pause):
		}
	}
}

// crossCheck compares the fleet model with what etcd really holds (the
// live checks above are against the model).
func (b *bench) crossCheck(ctx context.Context, only map[int]bool) error {
	var names map[string]bool
	if only != nil {
		names = map[string]bool{}
		for i := range only {
			names[b.fleet.clusterName(i)] = true
		}
	}
	fromEtcd, err := expected(ctx, b.cli, b.inv, names)
	if err != nil {
		return err
	}
	model, err := b.fleet.modelWanted(b.inv, only)
	if err != nil {
		return err
	}
	for name, w := range model {
		if !sameSet(w, fromEtcd[name]) {
			return fmt.Errorf("internal: the model of %s (%s) differs from the plan of etcd's keys (%s)", name, fmtSet(w), fmtSet(fromEtcd[name]))
		}
	}
	return nil
}

func (b *bench) ready(ctx context.Context) bool {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, b.statusURL+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// settle waits (bounded) until the controller is ready and has been quiet
// for 2 s: no reconcile and no API request.
func (b *bench) settle(ctx context.Context) {
	last := b.metric(ctx, "pgsvc_reconciles_total")
	quietFrom := time.Now()
	err := waitFor(ctx, b.o.timeout, 250*time.Millisecond, func() (bool, error) {
		if m := b.metric(ctx, "pgsvc_reconciles_total"); m != last {
			last, quietFrom = m, time.Now()
		}
		return time.Since(quietFrom) >= 2*time.Second && b.count.quietSince() >= 2*time.Second && b.ready(ctx), b.controllerGone()
	})
	if err != nil {
		b.logf("did not settle: %v", err)
	}
}

// marks are counters at the start of a phase.
type marks struct {
	at                   time.Time
	cpu                  cpuTimes
	req                  snap
	reloads              int
	reconciles, applies  float64
	applyErrors          float64
	haveReloads, haveMet bool
}

func (b *bench) mark(ctx context.Context) marks {
	m := marks{at: time.Now(), req: b.count.snapshot(), cpu: b.cpu(ctx)}
	if p, err := b.rt.ShowProc(ctx); err == nil {
		m.reloads, m.haveReloads = p.Reloads, true
	}
	m.reconciles = b.metric(ctx, "pgsvc_reconciles_total")
	m.applies = b.metric(ctx, "pgsvc_convergence_seconds_count")
	m.applyErrors = b.metric(ctx, "pgsvc_apply_errors_total")
	return m
}

func (b *bench) fill(ctx context.Context, p *phase, before marks) {
	after := b.mark(ctx)
	p.requests, p.requestsBy = after.req.since(before.req)
	p.cpu = cpuTimes{ctl: after.cpu.ctl - before.cpu.ctl, api: after.cpu.api - before.cpu.api, hap: max(after.cpu.hap-before.cpu.hap, 0), self: after.cpu.self - before.cpu.self}
	p.reloads = after.reloads - before.reloads
	p.reconciles = int(after.reconciles - max(before.reconciles, 0))
	p.applies = int(after.applies - max(before.applies, 0))
	p.applyErrors = int(after.applyErrors - max(before.applyErrors, 0))
	if proc, err := b.rt.ShowProc(ctx); err == nil {
		p.oldWorkers = len(proc.OldWorkers)
	}
	p.applied = b.appliedSince(before.at)
	if want, err := b.fleet.modelWeights(b.inv); err == nil {
		if rows, err := b.rt.ShowStat(ctx); err == nil {
			p.offWeight, p.offExample = offWeights(rows, want)
		}
	}
}

// appliedSince summarises the controller's "applied" log lines since t:
// how long each apply took, its convergence (first DCS event -> applied),
// whether it reloaded, and how many changes it made.
func (b *bench) appliedSince(t time.Time) string {
	var parts []string
	b.eachApplied(func(line []byte) {
		var l struct {
			TS          time.Time         `json:"ts"`
			Took        float64           `json:"took"`
			Convergence float64           `json:"convergence"`
			Reloaded    bool              `json:"reloaded"`
			Changes     []json.RawMessage `json:"changes"`
			Total       *int              `json:"changes_total"` // the line lists at most 32 changes
		}
		if json.Unmarshal(line, &l) != nil || l.TS.Before(t) {
			return
		}
		r := "runtime"
		if l.Reloaded {
			r = "reload"
		}
		n := len(l.Changes)
		if l.Total != nil {
			n = *l.Total
		}
		parts = append(parts, fmt.Sprintf("%d changes, %s, took %.2f s, convergence %.2f s", n, r, l.Took, l.Convergence))
	})
	if len(parts) > 6 {
		parts = append(parts[:6], fmt.Sprintf("+%d more", len(parts)-6))
	}
	return strings.Join(parts, "; ")
}

// eachApplied calls fn with each of the controller's "applied" log lines.
func (b *bench) eachApplied(fn func(line []byte)) {
	f, err := os.Open(b.controller.log.Name())
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"msg":"applied"`) {
			fn(sc.Bytes())
		}
	}
}

// movedAt is the traffic_moved_at of the controller's "applied" log line
// written at end (zero when that line has none).
func (b *bench) movedAt(end time.Time) time.Time {
	var moved time.Time
	b.eachApplied(func(line []byte) {
		var l struct {
			TS    time.Time `json:"ts"`
			Moved time.Time `json:"traffic_moved_at"`
		}
		if json.Unmarshal(line, &l) == nil && l.TS.Equal(end) {
			moved = l.Moved
		}
	})
	return moved
}

// lastApply is the time of the controller's last "applied" log line
// between from and to (zero if none). The line is written when the apply
// has ended, its changes read back from the running HAProxy.
func (b *bench) lastApply(from, to time.Time) time.Time {
	var last time.Time
	b.eachApplied(func(line []byte) {
		var l struct {
			TS time.Time `json:"ts"`
		}
		if json.Unmarshal(line, &l) == nil && !l.TS.Before(from) && !l.TS.After(to) {
			last = l.TS
		}
	})
	return last
}

// lastRoleApply is the time of the controller's last "applied" log line
// between from and to with a change other than force_up, set_weight, a
// held new leader's force_down (re-asserted while it is not read-write) and
// a fence forced DOWN again (the API driver re-asserts it once its checks
// could have raised it).
func (b *bench) lastRoleApply(from, to time.Time) time.Time {
	var last time.Time
	b.eachApplied(func(line []byte) {
		var l struct {
			TS      time.Time `json:"ts"`
			Changes []struct {
				Kind   string `json:"kind"`
				Detail string `json:"detail"`
			} `json:"changes"`
			ByKind map[string]int `json:"changes_by_kind"`
		}
		if json.Unmarshal(line, &l) != nil || l.TS.Before(from) || l.TS.After(to) {
			return
		}
		// The line lists at most 32 changes; the count per kind covers all:
		// a kind other than these three is a role change. A force_down is
		// one only when it is no hold or re-asserted fence: those are told
		// by their detail, listed for the first 32.
		for k, n := range l.ByKind {
			if n > 0 && k != "force_up" && k != "set_weight" && k != "force_down" {
				last = l.TS
				return
			}
		}
		for _, c := range l.Changes {
			held := c.Kind == "force_down" && (strings.Contains(c.Detail, "held") || strings.Contains(c.Detail, "forced DOWN again"))
			if c.Kind != "force_up" && c.Kind != "set_weight" && !held {
				last = l.TS
				break
			}
		}
	})
	return last
}

// metric sums every series of one metric family on the controller's /metrics
// (-1 when unreadable).
func (b *bench) metric(ctx context.Context, name string) float64 {
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(mctx, http.MethodGet, b.statusURL+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

type cpuTimes struct{ ctl, api, hap, self time.Duration }

// cpu is the CPU time used so far by the controller, the API, and HAProxy's
// master and current workers.
func (b *bench) cpu(ctx context.Context) cpuTimes {
	c := cpuTimes{self: procCPU(os.Getpid())}
	if b.controller != nil {
		c.ctl = procCPU(b.controller.pid())
	}
	if b.api != nil {
		c.api = procCPU(b.api.pid())
	}
	if p, err := b.rt.ShowProc(ctx); err == nil {
		c.hap = procCPU(p.MasterPID)
		for _, w := range append(p.Workers, p.OldWorkers...) {
			c.hap += procCPU(w.PID)
		}
	}
	return c
}

// layoutField is the controller config's layout setting ("" = its default).
func layoutField(layout string) string {
	if layout == "" || layout == "pigsty" {
		return ""
	}
	return ", layout: " + layout
}

func (r *result) driverName() string {
	name := r.o.driver
	if r.o.driver != "direct" && r.version != "" {
		name += " (" + r.version + ")"
	}
	if r.o.layout == "twins" {
		name += ", twins"
	}
	return name
}

func ms(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < 10*time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
}

// liftText: a negative duration means the fence was still there then.
func liftText(d time.Duration) string {
	if d < 0 {
		return "NOT lifted in the running HAProxy after " + ms(-d)
	}
	return ms(d)
}

func fenceText(d time.Duration) string {
	if d <= 0 {
		return "never seen (without -sessions every member is DOWN by its checks: nothing to fence)"
	}
	return ms(d)
}

func (r *result) reqs(p phase) string {
	if r.o.driver == "direct" {
		return "-"
	}
	s := strconv.Itoa(p.requests)
	if p.applies > 0 {
		s += fmt.Sprintf(" (%d per apply)", p.requests/p.applies)
	}
	return s
}

func (r *result) print(w io.Writer) {
	fmt.Fprintf(w, "\nbenchscale: %d clusters x 3 members (4 services, %d servers per cluster), driver %s, %s\n\n",
		r.o.n, 11, r.driverName(), r.machine)
	fmt.Fprintln(w, "| measure | value |")
	fmt.Fprintln(w, "|---|---|")
	row := func(k, v string, a ...any) { fmt.Fprintf(w, "| %s | %s |\n", k, fmt.Sprintf(v, a...)) }
	row("Patroni keys written (etcd)", "%s", ms(r.setupKeys))
	row("initial convergence: controller ready / all backends live", "%s / %s", ms(r.initial.ready), ms(r.initial.took))
	for _, p := range []phase{r.initial, r.switchov, r.mass, r.idle} {
		row(p.name+": reconciles / applies / apply errors", "%d / %d / %d", p.reconciles, p.applies, p.applyErrors)
		row(p.name+": HAProxy reloads / old workers left", "%d / %d", p.reloads, p.oldWorkers)
		row(p.name+": CPU used by controller / API / HAProxy (live processes) / this benchmark", "%.1f s / %.1f s / %.1f s / %.1f s", p.cpu.ctl.Seconds(), p.cpu.api.Seconds(), p.cpu.hap.Seconds(), p.cpu.self.Seconds())
		if p.offWeight > 0 {
			row(p.name+": servers whose running weight is not the plan's, once settled", "**%d** (%s)", p.offWeight, p.offExample)
		}
		if p.applied != "" {
			row(p.name+": the controller's applies", "%s", p.applied)
		}
		if r.o.driver != "direct" && r.o.count {
			row(p.name+": API requests", "%s: %s", r.reqs(p), p.requestsBy)
		}
	}
	row(r.switchov.name+": leader key moved -> live", "%s", ms(r.switchov.took))
	if r.switchNotYet >= 0 {
		row(r.switchov.name+": the last poll that found it not live read at", "%s (live between this and the line above)", ms(r.switchNotYet))
	}
	if r.switchApplied >= 0 {
		row(r.switchov.name+": leader key moved -> the controller's last apply ended (its log; read back from HAProxy)", "%s", ms(r.switchApplied))
	}
	if r.sessions != "" {
		row(r.switchov.name+": client sessions held through its services", "%s (old HAProxy workers left: %d)", r.sessions, r.switchov.oldWorkers)
	}
	row(r.switchov.name+": leader key released -> write fence live (the new leader took the key after "+r.o.gap.String()+")", "%s", fenceText(r.fence))
	row(r.switchov.name+": leader key moved -> every running weight at the plan's (the write fence is no weight)", "%s", liftText(r.switchov.settled))
	if r.massNotLive != "" {
		row("mass failover: last leader key -> live", "**not live** after %s: %s", ms(-r.mass.took), r.massNotLive)
	} else {
		row("mass failover: last leader key -> live (from the first write)", "%s (%s)", ms(r.mass.took), ms(r.massFirst))
		if r.massNotYet >= 0 {
			row("mass failover: the last poll that found it not live read at", "%s (live between this and the line above)", ms(r.massNotYet))
		}
		if r.massApplied >= 0 {
			row("mass failover: the controller's last apply of role changes ended (its log)", "%s after the last leader key", ms(r.massApplied))
		}
		if r.massMoved >= 0 {
			row("mass failover: that apply had made every change that moves traffic (its log; the crashed members' drains after)", "%s after the last leader key", ms(r.massMoved))
		}
	}
	idleMin := r.idleFor.Minutes()
	switch {
	case r.o.driver != "direct" && r.o.count:
		row("idle: API requests per minute", "%.0f", float64(r.idle.requests)/idleMin)
	case r.o.driver != "direct":
		row("API requests", "not counted (-count-requests=false: the controller talks to the API directly)")
	}
	row("idle: /readyz not ready", "%d of %d samples", r.notReady, r.samples)
	row("idle: CPU (share of one core) controller / API / HAProxy", "%.1f%% / %.1f%% / %.1f%%", 100*r.cpuCtl, 100*r.cpuAPI, 100*r.cpuHAP)
	row("controller RSS idle / after the closing scrapes / peak", "%.0f MB / %.0f MB / %.0f MB", r.rssIdle, r.rss, r.hwm)
	row(fmt.Sprintf("controller RSS read every %s: idle window least-greatest / mass failover greatest (of which file-backed: the binary's pages)", rssEvery), "%.0f-%.0f MB / %.0f MB (%.0f MB)", r.rssIdleLo, r.rssIdleHi, r.rssMassHi, r.rssMassFile)
	row("controller Go heap at idle: spans in use / objects (live and uncollected)", "%.0f MB / %.0f MB", r.heapInuse, r.heapAlloc)
	if r.o.driver != "direct" {
		row("Data Plane API RSS", "%.0f MB", r.apiRSS)
	}
	row("HAProxy worker RSS", "%.0f MB", r.hapRSS)
	if r.floor != nil {
		row("the Data Plane API's own floor on this fleet (controller stopped, nothing else reading)", "%s", r.floor)
	}
}

// rowHeader is the header of the rows -out appends.
const rowHeader = "| driver | N | ready / live | switchover → live (weights at plan; controller's apply ended) | release → fence (old primary DOWN) | weights ≠ plan after switchover / mass | API req. switchover | mass failover → live | API req. mass failover | reloads init/switch/mass/idle | idle API req./min | idle not-ready | old workers | controller RSS idle, after scrapes (peak) | idle CPU ctl/API/HAProxy | notes |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"

func (r *result) appendRow(path string) error {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if statErr != nil {
		if _, err := f.WriteString(rowHeader); err != nil {
			return err
		}
	}
	idle := "-"
	if r.o.driver != "direct" {
		idle = fmt.Sprintf("%.0f", float64(r.idle.requests)/r.idleFor.Minutes())
	}
	old := max(r.initial.oldWorkers, r.switchov.oldWorkers, r.mass.oldWorkers, r.idle.oldWorkers)
	_, err = fmt.Fprintf(f, "| %s | %d | %s / %s | %s (%s) | %s | %d / %d | %s | %s | %s | %d/%d/%d/%d | %s | %d of %d | %d | %.0f, %.0f MB (%.0f MB) | %.0f%% / %.0f%% / %.0f%% | %s |\n",
		r.driverName(), r.o.n, ms(r.initial.ready), ms(r.initial.took), ms(r.switchov.took), liftText(r.switchov.settled)+"; "+ms(r.switchApplied), fenceText(r.fence),
		r.switchov.offWeight, r.mass.offWeight, r.reqs(r.switchov), liftText(r.mass.took), r.reqs(r.mass),
		r.initial.reloads, r.switchov.reloads, r.mass.reloads, r.idle.reloads, idle, r.notReady, r.samples, old,
		r.rssIdle, r.rss, r.hwm, 100*r.cpuCtl, 100*r.cpuAPI, 100*r.cpuHAP, strings.TrimSpace(fmt.Sprintf("%s heap %.0f/%.0f MB; RSS idle %.0f-%.0f MB, mass failover max %.0f MB (file %.0f)%s %s", r.o.label, r.heapInuse, r.heapAlloc, r.rssIdleLo, r.rssIdleHi, r.rssMassHi, r.rssMassFile, r.floorNote(), r.machine)))
	return err
}

// floorNote is the API floor for the row's notes ("" when not measured).
func (r *result) floorNote() string {
	if r.floor == nil || r.floor.putTook <= 0 || r.floor.getTook <= 0 {
		return ""
	}
	return fmt.Sprintf("; API floor: %.0f PUT/s, %.0f GET/s", float64(r.floor.puts)/r.floor.putTook.Seconds(), float64(r.floor.gets)/r.floor.getTook.Seconds())
}

package controller

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// Prober asks a member's Patroni REST API whether it is the primary
// (*patroni.Prober). Probe must return within a short timeout of its own.
type Prober interface {
	Probe(ctx context.Context, apiURL string) patroni.ProbeResult
}

// A transition is one switchover or failover of a cluster as the controller
// follows it. The DCS says one is starting (failover key written, leader key
// released, expired or moved); from then until it settles, at most
// PromoteWindow, the members concerned are asked for /primary every
// ProbeInterval, and the answers drive the write path:
//
//	old primary off  Patroni stops its PostgreSQL (state "stopping" in its
//	                 /primary body), or its /primary stops answering 200
//	                 (or its REST API answering), or its leader key goes:
//	                 forced DOWN at runtime in every /primary-checked
//	                 service at once, its sessions cut (the write fence;
//	                 re-asserted while it lasts)
//	new primary on   it holds the leader key and answers /primary 200 with
//	                 PostgreSQL read-write: forced UP in those services at once
//	                 (until then, from the moment it took the key, it is
//	                 forced DOWN there: Patroni's /primary answers 200 before
//	                 the promotion is done, and HAProxy's checks would send
//	                 writes that fail with 25006)
//	fence lifted     FenceHold after both the old primary went off and a new
//	                 leader took the key: it is left DOWN to HAProxy's
//	                 checks (a demoted member fails /primary)
//
// A request Patroni refuses or never carries out (the failover key goes
// while the old primary still holds the key and was never off) ends the
// transition with the write path untouched. An old primary that was off
// and leads again (its /primary 200 read-write, not stopping) is forced UP
// for FenceHold, as a new primary would be. Nothing is probed in steady
// state.
type transition struct {
	cluster string
	cause   string
	from    string // the primary Patroni moves away from
	to      string // the member that took the leader key ("" until one did)

	start, deadline time.Time
	request         *patroni.Failover // the failover key that started it, if any

	requestAt, offAt, leaderAt, onAt, fencedAt, forcedAt, liftAt time.Time
	// backAt: the old primary, off, leads again read-write (forced UP
	// until FenceHold after it).
	backAt time.Time

	offWhy, onWhy string
	// lost is set when the new primary's /primary stopped answering 200
	// after it was on: a real failure, never forced UP again.
	lost bool
	// held is set while the last reconcile held the cluster's role changes
	// back (holdRoles).
	held bool
	// mids are the members that took the leader key during this
	// transition and lost it to another one (A -> B -> C: B): each is
	// fenced from write services as from is, from the moment it lost the
	// key until Patroni reports it off (its /primary no longer 200, its
	// PostgreSQL stopping, its REST API or member key gone) and FenceHold
	// more. Until then it may still take writes as the primary it was a
	// moment ago (forced UP, maybe). alsoFenced lists every one, for the
	// timeline.
	mids       []*midLeader
	alsoFenced []string
	// frozen is set while its cluster's namespace is stale: the DCS view
	// advance gets is the last one seen, and only the probes' answers and
	// the clock are news (trackTransitions).
	frozen bool

	// probes: at most one per member (memberProbe.name; probe, addProbe).
	// A slice, not a map: a transition probes two or three members, and a
	// map of them was ~0.2 MB of a 1,000-cluster mass failover's peak.
	probes  []*memberProbe
	probing bool // probe goroutines run (until the deadline or the end)
	ctx     context.Context
	cancel  context.CancelFunc
}

// midLeader is a member that held the leader key for a while in a
// transition and lost it to another one (transition.mids).
type midLeader struct {
	name   string
	lostAt time.Time // when the key moved away from it
	// offAt: Patroni reported it off (or there is nothing to wait for: no
	// REST API to ask, or the promote window is over); liftAt: its fence
	// lifts then (FenceHold after offAt, the new leader's key and the last
	// reload; zero until the targets are quiet).
	offAt, liftAt time.Time
	offWhy        string
}

// mid returns t's mid leader name, or nil.
func (t *transition) mid(name string) *midLeader {
	for _, m := range t.mids {
		if m.name == name {
			return m
		}
	}
	return nil
}

// toLeads reports whether t.to is the member that took the key last (not
// one that lost it since: a mid).
func (t *transition) toLeads() bool { return t.to != "" && t.mid(t.to) == nil }

// memberProbe is one member's probing; its probes put their answers in
// box under tx.boxMu only, not c.mu (a reconcile holds c.mu for a long
// time in a mass failover: probes waiting on it kept their slots, and new
// ones could not start). advance reads a copy (answers).
type memberProbe struct {
	name    string // the member's
	url     string
	started bool
	chain   *probeChain // its probes while started (pruneProbes ends them)
	// on: the member is the new primary, on (advance sets it): its answers
	// can only tell that its /primary failed since, which HAProxy's checks
	// see too, and it is forced UP once per promotion whatever they say; so
	// it is probed every onEvery intervals, not every interval (a
	// 1,000-cluster mass failover probed 1,000 new primaries 50 times a
	// second each for fence_hold).
	on atomic.Bool

	box probeBox // guarded by tx.boxMu
}

// probeBox is the latest of a member's probe answers; gen counts the times
// its probes were stopped (pruneProbes): an answer of an earlier
// generation is dropped.
type probeBox struct {
	last     patroni.ProbeResult
	seen     bool
	failures int // consecutive probes without an answer
	gen      int
}

// probe is member's probing in t, nil for none.
func (t *transition) probe(member string) *memberProbe {
	for _, p := range t.probes {
		if p.name == member {
			return p
		}
	}
	return nil
}

// addProbe sets member's probing in t (replacing one it had) to a new one
// of url, not started.
func (t *transition) addProbe(member, url string) {
	p := &memberProbe{name: member, url: url}
	for i := range t.probes {
		if t.probes[i].name == member {
			t.probes[i] = p
			return
		}
	}
	t.probes = append(t.probes, p)
}

// answers is a copy of what member's probes in t have said so far (false
// when it has none). A value, not a pointer: advance runs for every
// cluster in transition at every reconcile (~100,000 copies in a
// 1,000-cluster mass failover, 8 MB of garbage as pointers).
func (c *Controller) answers(t *transition, member string) (probeBox, bool) {
	p := t.probe(member)
	if p == nil {
		return probeBox{}, false
	}
	c.tx.boxMu.Lock()
	b := p.box
	c.tx.boxMu.Unlock()
	return b, true
}

// onEvery is every how many intervals a new primary that is on is probed
// (memberProbe.on): 1 s at the default interval. At 5 (100 ms) a
// 1,000-cluster mass failover whose new primaries' REST APIs refused
// connections still spent ~38 % of the controller's CPU dialing them.
const onEvery = 50

// maxProbesInFlight bounds the REST probes outstanding at once, over every
// cluster in transition.
const maxProbesInFlight = 256

// noAnswerOff is how many probes in a row without any answer make the old
// primary count as off: one timeout is noise, three (≈60 ms) mean its
// REST API is gone, which HAProxy's check will see too.
const noAnswerOff = 3

// transitions is the controller's transition state (guarded by c.mu except
// where noted).
type transitions struct {
	active  map[string]*transition       // cluster -> transition in flight
	apiURLs map[string]map[string]string // cluster -> member -> api_url last seen
	// urlsFrom is the DCS state each cluster's apiURLs were last updated
	// from, under the inventory urlsInv (its patroni_ssl_enabled).
	urlsFrom map[string]*patroni.ClusterState
	urlsInv  *topology.Inventory
	// quiet and quietReloaded are targetsQuiet as asked once per
	// trackTransitions (quietKnown).
	quiet, quietKnown bool
	quietReloaded     time.Time
	// doneRequest is the failover key of a transition that ended while the
	// key stayed: it does not start another one.
	doneRequest map[string]patroni.Failover
	// doneLeaderless is, per cluster, the last leader whose transition
	// ended while the DCS still had no leader key (Patroni leaderless
	// under failsafe_mode, the old primary still primary): no other one
	// starts until a leader key is seen (each window's end started a new
	// one, a history event and a round of probes every PromoteWindow).
	doneLeaderless map[string]string
	ended          []*transition // to report (flushTransitions)
	// lastDesired is what each cluster's services were last handed to the
	// targets as (holdRoles keeps them while a new primary comes on).
	lastDesired map[string][]services.Service

	wake chan struct{} // 1-buffered: a probe answer changed something
	// slots bounds the probes in flight across all transitions (a mass
	// failover of many clusters must not flood the machine): a probe that
	// finds none free skips its tick.
	slots chan struct{}

	prober    Prober
	probeWarn string
	warned    bool

	// boxMu guards every memberProbe's box.
	boxMu sync.Mutex

	ctx     context.Context // Run's; nil while not running
	wg      sync.WaitGroup  // probe goroutines
	running atomic.Int32    // probe goroutines running (tests)
}

func (tx *transitions) init(opts *Options) {
	tx.active = map[string]*transition{}
	tx.apiURLs = map[string]map[string]string{}
	tx.doneRequest = map[string]patroni.Failover{}
	tx.doneLeaderless = map[string]string{}
	tx.lastDesired = map[string][]services.Service{}
	tx.wake = make(chan struct{}, 1)
	tx.slots = make(chan struct{}, maxProbesInFlight)
	tx.prober = opts.Prober
	if tx.prober == nil {
		p, warn := patroni.NewProber(patroni.ProberOptions{CAFile: opts.PatroniCAFile, Now: opts.Now})
		tx.prober, tx.probeWarn = p, warn
	}
}

// release is a member fenced from write services.
type release struct{ member string }

// promotion is a member to force UP in write services; confirmed when its
// REST API said it is the primary, read-write.
type promotion struct {
	member    string
	confirmed bool
	// pending: it holds the leader key but is not read-write yet: write
	// services keep it DOWN (HAProxy's checks pass on Patroni's early
	// /primary 200, and writes there fail with 25006).
	pending bool
}

// startProbing lets transitions probe, under ctx (Run's).
func (c *Controller) startProbing(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tx.ctx = ctx
	for _, t := range c.tx.active {
		c.probeAll(t, nil)
	}
}

// stopProbing ends every probe and waits for the goroutines.
func (c *Controller) stopProbing() {
	func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, t := range c.tx.active {
			c.stopProbes(t)
		}
		c.tx.ctx = nil
	}()
	c.tx.wg.Wait()
}

// trackTransitions starts, advances and ends the transition of every
// cluster from the DCS view, and sets c.released and c.promoted from them.
// The clusters in stale (a stale namespace's: dcs has their last view)
// start no transition; one in flight goes on from the clock and its
// probes' answers (advance, with t.frozen set). Call with c.mu held.
func (c *Controller) trackTransitions(dcs map[string]*patroni.ClusterState, stale map[string]bool, now time.Time) {
	c.tx.quietKnown = false
	defer func() { c.tx.quietKnown = false }()
	if c.tx.urlsInv != c.inv {
		c.tx.urlsInv, c.tx.urlsFrom = c.inv, map[string]*patroni.ClusterState{}
	}
	var ssl map[string]bool
	for cl, st := range dcs {
		// The URLs of the state they were last taken from (decoded states
		// never change) are in apiURLs already: the common case.
		if c.tx.urlsFrom[cl] != st {
			c.tx.urlsFrom[cl] = st
			if ssl == nil {
				ssl = make(map[string]bool, len(c.inv.Clusters))
				for _, cl := range c.inv.Clusters {
					ssl[cl.Name] = cl.PatroniSSL
				}
			}
			c.noteAPIURLs(cl, st, ssl[cl])
		}
		if ghostLeader(st) || stale[cl] {
			continue
		}
		if t := c.tx.active[cl]; t == nil {
			c.startTransition(cl, st, now)
		}
	}
	for cl, t := range c.tx.active {
		st := dcs[cl]
		if ghostLeader(st) {
			st = nil // only probes and the clock move it on
		}
		t.frozen = stale[cl]
		c.advance(t, st, now)
		if c.tx.active[cl] != t && st != nil && st.Leader == "" && c.lastLeaders[cl] != "" {
			// Over while the key stays away: the next reconciles start
			// no other transition from the same absence (startTransition).
			c.tx.doneLeaderless[cl] = c.lastLeaders[cl]
		}
		if t.cancel == nil && c.tx.active[cl] == t {
			// Probing starts here, after the transition's first advance:
			// it knows by then which members' answers matter (a dead old
			// primary whose key the leader key left, with its member key,
			// needs none) and whether the new leader is on already (its
			// probes then come every onEvery intervals from the first).
			// Started before it, a 1,000-cluster mass failover dialed
			// ~3,000 REST APIs in its first 50 ms instead of 1,000.
			c.probeAll(t, st)
		}
	}
}

// noteAPIURLs records the REST API URL of every member st reports. Call
// with c.mu held.
func (c *Controller) noteAPIURLs(cl string, st *patroni.ClusterState, ssl bool) {
	urls := c.tx.apiURLs[cl]
	if urls == nil {
		urls = map[string]string{}
		c.tx.apiURLs[cl] = urls
	}
	for name, m := range st.Members {
		if m != nil && m.APIURL != "" {
			u := m.APIURL
			if ssl && strings.HasPrefix(u, "http://") {
				// patroni_ssl_enabled: the REST API speaks https whatever
				// api_url says (HAProxy checks it with check-ssl too).
				u = "https://" + strings.TrimPrefix(u, "http://")
			}
			urls[name] = u
		}
	}
}

// ghostLeader reports whether st's leader key names no member Patroni
// reports: garbage, not a transition (the plan ignores it too). A real new
// leader was a member before it took the key.
func ghostLeader(st *patroni.ClusterState) bool {
	return st != nil && st.Leader != "" && st.Members[st.Leader] == nil
}

// startTransition starts one if the DCS shows it. Call with c.mu held.
func (c *Controller) startTransition(cl string, st *patroni.ClusterState, now time.Time) {
	last := c.lastLeaders[cl]
	fo := st.Failover
	if fo == nil {
		delete(c.tx.doneRequest, cl)
	}
	if st.Leader != "" && len(c.tx.doneLeaderless) > 0 {
		delete(c.tx.doneLeaderless, cl)
	}
	if st.Leader != "" && (last == "" || st.Leader == last) &&
		!(fo != nil && (fo.Leader == "" || fo.Leader == st.Leader) && fo.Member != st.Leader) {
		return // the common case, decided without allocating (the default below)
	}
	t := &transition{cluster: cl, start: now, deadline: now.Add(c.opts.PromoteWindow)}
	var candidates []string
	switch {
	case switchoverStarts(st, now):
		if done, ok := c.tx.doneRequest[cl]; ok && done == *fo {
			return
		}
		t.cause, t.from, t.requestAt = "switchover requested", st.Leader, now
		f := *fo
		t.request = &f
		if fo.Member != "" {
			candidates = []string{fo.Member}
		}
	case st.Leader == "" && last != "":
		if c.tx.doneLeaderless[cl] == last {
			return // (a transition from this absence of the key is over)
		}
		t.from = last
		t.cause = "leader key expired"
		if st.Members[last] != nil {
			t.cause = "leader key released"
		}
	case st.Leader != "" && last != "" && st.Leader != last:
		t.from, t.cause = last, "leader key moved"
		candidates = []string{st.Leader}
	default:
		return
	}
	if candidates == nil {
		for name := range c.tx.apiURLs[cl] {
			if name != t.from && st.Members[name] != nil {
				candidates = append(candidates, name)
			}
		}
		sort.Strings(candidates)
	}
	t.probes = make([]*memberProbe, 0, 1+len(candidates))
	for _, name := range append([]string{t.from}, candidates...) {
		if u := c.tx.apiURLs[cl][name]; u != "" {
			t.addProbe(name, u)
		}
	}
	c.tx.active[cl] = t
	c.log.Info("transition: probing Patroni's REST API", zap.String("cluster", cl), zap.String("cause", t.cause),
		zap.String("from", t.from), zap.Strings("candidates", candidates))
	// (Its probes start after its first advance: trackTransitions.)
}

// switchoverStarts reports whether st's failover key asks for a switchover
// of its leader that is due now (startTransition starts one for it).
func switchoverStarts(st *patroni.ClusterState, now time.Time) bool {
	fo := st.Failover
	return st.Leader != "" && fo != nil && (fo.Leader == "" || fo.Leader == st.Leader) && fo.Member != st.Leader &&
		switchoverDue(fo, now)
}

// advance moves t on from the DCS view st (nil: the cluster is gone from
// the DCS) and the probes' answers, ends it when it is over, and sets
// c.released / c.promoted for its cluster. Call with c.mu held.
func (c *Controller) advance(t *transition, st *patroni.ClusterState, now time.Time) {
	cl := t.cluster
	var from *probeBox
	fromBox, ok := c.answers(t, t.from)
	if ok {
		from = &fromBox
	}
	if st != nil && st.Leader != "" {
		c.noteLeader(t, st.Leader, now)
	}
	if st != nil {
		switch leader := st.Leader; {
		case leader != "" && leader != t.from:
			if t.to != leader {
				t.to, t.leaderAt, t.onAt, t.onWhy, t.lost, t.forcedAt = leader, now, time.Time{}, "", false, time.Time{}
				if t.probe(leader) == nil {
					if u := c.tx.apiURLs[cl][leader]; u != "" {
						t.addProbe(leader, u)
						if t.probing {
							c.probeAll(t, st)
						}
					}
				}
			}
			if t.offAt.IsZero() { // (off does nothing once off: no message built for nothing)
				c.off(t, now, "the leader key moved to "+leader)
			}
		case leader == "":
			if st.Members[t.from] != nil {
				c.off(t, now, "it released the leader key")
			} else if !st.FailsafeMode {
				// Without failsafe_mode a primary whose key expired has demoted
				// itself (retry_timeout < ttl) or is dead. With it, it may keep
				// serving: only its /primary answers decide (below).
				c.off(t, now, "its leader key expired")
			}
		case leader == t.from && t.offAt.IsZero() && t.request != nil && !sameRequest(st.Failover, t.request):
			c.end(t, "the switchover request went away while "+t.from+" still leads: write path untouched")
			return
		}
	}
	if p := from; p != nil && p.seen && t.offAt.IsZero() {
		switch {
		case p.last.Answered() && !p.last.Primary():
			c.off(t, p.last.At, fmt.Sprintf("its /primary answered %d", p.last.Code))
		case p.last.Stopping():
			// Patroni signals the postmaster to stop right after saying so;
			// /primary answers 200 until the shutdown is over.
			c.off(t, p.last.At, "Patroni is stopping its PostgreSQL (state "+p.last.State+")")
		case p.failures >= noAnswerOff:
			c.off(t, p.last.At, "its REST API stopped answering ("+p.last.Err+")")
		}
	}
	midFenced := c.advanceMids(t, st, now)
	if !t.offAt.IsZero() && st != nil && st.Leader == t.from {
		// It kept (or took back) the key: off only while /primary says so.
		p := from
		back := p == nil || !t.probing || (p.seen && p.last.Primary() && !p.last.Stopping() && p.last.At.After(t.offAt))
		if back && t.probing && p != nil && p.last.Writable {
			// Forced DOWN by the fence, its checks would take downinter
			// plus rise checks to bring it back: forced UP for FenceHold,
			// as a new primary would be.
			if t.backAt.IsZero() {
				t.backAt = now
				c.log.Info("transition: the old primary leads again, read-write: forced UP", zap.String("cluster", cl), zap.String("member", t.from))
			}
			if now.Before(t.backAt.Add(c.opts.FenceHold)) {
				c.setReleased(cl, midFenced)
				pr := promotion{member: t.from, confirmed: true}
				if p := c.promoted[cl]; p == nil || *p != pr {
					c.promoted[cl] = &pr
				}
				c.pruneProbes(t, st)
				return
			}
			if c.fencingMids(t, st, midFenced) {
				return
			}
			c.end(t, t.from+" leads again (forced UP)")
			return
		}
		t.backAt = time.Time{}
		if back {
			if c.fencingMids(t, st, midFenced) {
				return
			}
			c.end(t, t.from+" leads again")
			return
		}
	}
	if t.to != "" && st != nil && st.Leader == t.to && !t.lost {
		var p *probeBox
		toBox, ok := c.answers(t, t.to)
		if ok {
			p = &toBox
		}
		switch {
		case p != nil && p.seen && p.last.Primary() && p.last.Writable:
			if t.onAt.IsZero() {
				t.onAt, t.onWhy = p.last.At, "its /primary answered 200 and PostgreSQL is read-write"
				c.log.Info("transition: new primary on", zap.String("cluster", cl), zap.String("member", t.to),
					zap.String("why", t.onWhy), zap.Duration("since_off", sinceOrZero(t.offAt, t.onAt)))
			}
		case p != nil && p.seen && p.last.Answered() && !p.last.Primary() && !t.onAt.IsZero():
			t.lost = true
			c.log.Warn("transition: the new primary's /primary stopped answering 200: left to HAProxy's checks",
				zap.String("cluster", cl), zap.String("member", t.to), zap.Int("code", p.last.Code))
		case t.onAt.IsZero() && (p == nil || !p.seen || !p.last.Answered() || !t.probing):
			// No answer of its REST API says otherwise (none yet, or the
			// last probe got none): its member key is Patroni's own word.
			// Patroni writes role master only once pg_controldata says
			// "in production" (promoted before that), so a running
			// master is read-write. Waiting for noAnswerOff failed probes
			// first held 592 of the 1,000 new primaries of a mass failover
			// for one more apply (hold, then release: 2,368 PUTs through
			// the API). An answer in recovery (200, role replica) is
			// newer than the key and keeps it held (the case above).
			// (Not from a stale view: a member key read before etcd was
			// lost says nothing of now; only an answer of its REST API
			// brings it on then.)
			if m := st.Members[t.to]; !t.frozen && m != nil && m.Role == patroni.RolePrimary && m.State == "running" {
				t.onAt, t.onWhy = now, "its member key says running primary (no answer of its REST API says otherwise)"
			}
		}
	}
	if !t.offAt.IsZero() && !t.leaderAt.IsZero() {
		// HAProxy's checks need FenceHold to mark the old primary DOWN, and
		// a reload starts them over (a state dumped before they failed
		// comes back UP): lift the fence only once every target is idle,
		// FenceHold after the last reload too.
		quiet, reloaded := c.quietTargets()
		if quiet {
			t.liftAt = later(later(t.offAt, t.leaderAt), reloaded).Add(c.opts.FenceHold)
		} else {
			t.liftAt = time.Time{}
		}
	}
	if t.probing && !now.Before(t.deadline) {
		c.stopProbes(t)
	}
	fenced := !t.offAt.IsZero() && (t.liftAt.IsZero() || now.Before(t.liftAt))
	// Forced UP for FenceHold: HAProxy has it UP by then (on our word or
	// its checks'), and a later failure is left to the checks.
	forceUp := t.toLeads() && !t.onAt.IsZero() && !t.lost && now.Before(t.deadline) && now.Before(t.onAt.Add(c.opts.FenceHold))
	pendingOn := t.toLeads() && t.onAt.IsZero() && !t.lost && now.Before(t.deadline)
	if !fenced && !forceUp && !pendingOn && len(midFenced) == 0 && (!t.offAt.IsZero() || !now.Before(t.deadline)) {
		why := "settled"
		if t.offAt.IsZero() {
			why = "window over; " + t.from + " never went off"
		}
		c.end(t, why)
		return
	}
	if fenced {
		c.setReleased(cl, append([]string{t.from}, midFenced...))
	} else {
		c.setReleased(cl, midFenced)
	}
	switch {
	case forceUp:
		pr := promotion{member: t.to, confirmed: strings.HasPrefix(t.onWhy, "its /primary")}
		if p := c.promoted[cl]; p == nil || *p != pr {
			c.promoted[cl] = &pr
		}
	case pendingOn && st != nil && st.Leader == t.to:
		pr := promotion{member: t.to, pending: true}
		if p := c.promoted[cl]; p == nil || *p != pr {
			c.promoted[cl] = &pr
		}
	default:
		delete(c.promoted, cl)
	}
	if p := t.probe(t.to); t.toLeads() && p != nil {
		p.on.Store(!t.onAt.IsZero())
	}
	c.pruneProbes(t, st)
}

// setReleased fences members (none: no fence) of cluster cl. Call with
// c.mu held.
func (c *Controller) setReleased(cl string, members []string) {
	if len(members) == 0 {
		delete(c.released, cl)
		return
	}
	m := strings.Join(members, ",") // (plan.ClusterOptions.Released)
	if r := c.released[cl]; r == nil || r.member != m {
		c.released[cl] = &release{member: m}
	}
}

// noteLeader records that leader holds t's cluster's leader key: the
// member that held it last in t (t.to), if another, lost it and is fenced
// as a mid leader (advanceMids); a mid leader that takes it back leads
// again, as a new leader would (held DOWN until read-write, forced UP
// then). Call with c.mu held.
func (c *Controller) noteLeader(t *transition, leader string, now time.Time) {
	if t.to != "" && t.to != leader && t.mid(t.to) == nil {
		t.mids = append(t.mids, &midLeader{name: t.to, lostAt: now})
		if !slices.Contains(t.alsoFenced, t.to) {
			t.alsoFenced = append(t.alsoFenced, t.to)
		}
		if p := t.probe(t.to); p != nil {
			p.on.Store(false) // probed every interval again: its answers decide its fence
		}
		c.log.Warn("transition: the leader key moved on again: the member that held it is fenced from write services until Patroni reports it off",
			zap.String("cluster", t.cluster), zap.String("member", t.to), zap.String("leader", leader))
	}
	for i, m := range t.mids {
		if m.name == leader {
			t.mids = slices.Delete(t.mids, i, i+1)
			if leader == t.to {
				t.to = "" // (advance takes it as a new leader)
			}
			break
		}
	}
}

// advanceMids moves t's mid leaders on from the DCS view st and their
// probes' answers, forgets those whose fence lifted, and returns those
// still fenced. A mid leader is off once an answer sent after it lost the
// key says its /primary is no longer 200, or its PostgreSQL is stopping,
// or noAnswerOff probes in a row got no answer, or its member key is
// gone; at once when there is nothing to ask (no REST API known, no
// probes running) and when the promote window ends. Its fence lifts
// FenceHold after that, the new leader's key and the last reload, as
// from's does. Call with c.mu held.
func (c *Controller) advanceMids(t *transition, st *patroni.ClusterState, now time.Time) []string {
	if len(t.mids) == 0 {
		return nil
	}
	var fenced []string
	kept := t.mids[:0]
	for _, m := range t.mids {
		if m.offAt.IsZero() {
			b, ok := c.answers(t, m.name)
			switch {
			case st != nil && st.Members[m.name] == nil:
				m.offAt, m.offWhy = now, "its member key is gone"
			case !ok:
				m.offAt, m.offWhy = m.lostAt, "no REST API of it to ask"
			case !t.probing || !now.Before(t.deadline):
				m.offAt, m.offWhy = now, "no probe of it runs (promote window over)"
			case b.seen && !b.last.Sent.Before(m.lostAt) && b.last.Answered() && !b.last.Primary():
				m.offAt, m.offWhy = b.last.At, fmt.Sprintf("its /primary answered %d", b.last.Code)
			case b.seen && !b.last.Sent.Before(m.lostAt) && b.last.Stopping():
				m.offAt, m.offWhy = b.last.At, "Patroni is stopping its PostgreSQL (state "+b.last.State+")"
			case b.seen && !b.last.Sent.Before(m.lostAt) && b.failures >= noAnswerOff:
				m.offAt, m.offWhy = b.last.At, "its REST API stopped answering ("+b.last.Err+")"
			}
			if !m.offAt.IsZero() {
				c.log.Info("transition: a member that held the leader key a moment ago is off", zap.String("cluster", t.cluster),
					zap.String("member", m.name), zap.String("why", m.offWhy))
			}
		}
		if !m.offAt.IsZero() {
			if quiet, reloaded := c.quietTargets(); quiet {
				m.liftAt = later(later(m.offAt, t.leaderAt), reloaded).Add(c.opts.FenceHold)
			} else {
				m.liftAt = time.Time{}
			}
		}
		if m.offAt.IsZero() || m.liftAt.IsZero() || now.Before(m.liftAt) {
			fenced = append(fenced, m.name)
			kept = append(kept, m)
			continue
		}
		c.log.Info("transition: fence lifted from a member that held the leader key a moment ago", zap.String("cluster", t.cluster),
			zap.String("member", m.name))
	}
	clear(t.mids[len(kept):])
	t.mids = kept
	return fenced
}

// fencingMids keeps t going while mid leaders are still fenced (fenced),
// when it would end otherwise (its old primary leads again): only they are
// fenced, nothing is forced UP. It reports whether it did. Call with c.mu
// held.
func (c *Controller) fencingMids(t *transition, st *patroni.ClusterState, fenced []string) bool {
	if len(fenced) == 0 {
		return false
	}
	c.setReleased(t.cluster, fenced)
	delete(c.promoted, t.cluster)
	c.pruneProbes(t, st)
	return true
}

// pruneProbes stops probing the members whose answers can no longer change
// anything, and probes again (from a clean slate) those that can once more:
// advance reads only the old primary's and the new leader's answers. Other
// candidates matter only until a member takes the key; the old primary
// only until it is off, or while the DCS still has its member key (it may
// stop, or lead again). In a mass failover of 1,000 clusters this leaves a
// probed member per cluster instead of three (dialing members whose REST
// APIs are gone was most of the controller's CPU). Call with c.mu held.
func (c *Controller) pruneProbes(t *transition, st *patroni.ClusterState) {
	if !t.probing {
		return
	}
	restart := false
	for _, p := range t.probes {
		need := t.needsProbe(p.name, st)
		switch {
		case !need && p.started:
			p.chain.cancel()
			p.started = false
			c.tx.boxMu.Lock()
			p.box = probeBox{gen: p.box.gen + 1}
			c.tx.boxMu.Unlock()
		case need && !p.started:
			restart = true
		}
	}
	if restart {
		c.probeAll(t, st)
	}
}

// needsProbe reports whether member name's answers can still change
// anything in t (see pruneProbes); st is its cluster's DCS view (nil: gone,
// or not at hand, which keeps the old primary probed).
func (t *transition) needsProbe(name string, st *patroni.ClusterState) bool {
	if m := t.mid(name); m != nil {
		return m.offAt.IsZero()
	}
	switch {
	case name == t.to:
		return true
	case name == t.from:
		return t.offAt.IsZero() || st == nil || st.Members[name] != nil
	default:
		return t.to == ""
	}
}

// off marks t's old primary off (fenced) at at, once. Call with c.mu held.
func (c *Controller) off(t *transition, at time.Time, why string) {
	if !t.offAt.IsZero() {
		return
	}
	t.offAt, t.offWhy = at, why
	c.log.Info("transition: old primary off, fenced from write services", zap.String("cluster", t.cluster),
		zap.String("member", t.from), zap.String("why", why))
}

// end closes t: probes stop, its fence and force-up go, and it is queued
// for the status history. Call with c.mu held.
func (c *Controller) end(t *transition, why string) {
	c.stopProbes(t)
	delete(c.tx.active, t.cluster)
	delete(c.released, t.cluster)
	delete(c.promoted, t.cluster)
	if t.request != nil {
		c.tx.doneRequest[t.cluster] = *t.request
	}
	t.offWhy = strings.TrimSpace(t.offWhy)
	c.tx.ended = append(c.tx.ended, t)
	c.log.Info("transition over", zap.String("cluster", t.cluster), zap.String("from", t.from), zap.String("to", t.to),
		zap.String("why", why))
}

// targetsQuiet reports whether every target worker is idle, and when the
// last reload of any of them ended. Call with c.mu held (takes the
// workers' locks).
// quietTargets is targetsQuiet, asked once per trackTransitions (every
// transition advanced in one reconcile gets the same answer; a mass
// failover advances 1,000 of them). Call with c.mu held.
func (c *Controller) quietTargets() (bool, time.Time) {
	if !c.tx.quietKnown {
		c.tx.quiet, c.tx.quietReloaded = c.targetsQuiet()
		c.tx.quietKnown = true
	}
	return c.tx.quiet, c.tx.quietReloaded
}

func (c *Controller) targetsQuiet() (bool, time.Time) {
	quiet, last := true, time.Time{}
	for _, w := range c.workers {
		q, r := w.quiet()
		quiet = quiet && q
		last = later(last, r)
	}
	return quiet, last
}

func sameRequest(cur, req *patroni.Failover) bool {
	return cur != nil && *cur == *req
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func sinceOrZero(from, to time.Time) time.Duration {
	if from.IsZero() || to.IsZero() {
		return 0
	}
	return to.Sub(from)
}

// probeAll starts a probe goroutine for every member of t not probed yet
// whose answers matter (needsProbe, from st), while the controller runs and
// t's window lasts. Call with c.mu held.
func (c *Controller) probeAll(t *transition, st *patroni.ClusterState) {
	if c.tx.ctx == nil || !c.opts.Now().Before(t.deadline) {
		return
	}
	if t.cancel == nil {
		t.ctx, t.cancel = context.WithCancel(c.tx.ctx)
		t.probing = true
	}
	if !t.probing {
		return
	}
	for _, p := range t.probes {
		if !p.started && t.needsProbe(p.name, st) {
			p.started = true
			p.chain = c.spawnProbe(t.ctx, p)
		}
	}
}

// spawnProbe probes p's member every ProbeInterval until ctx (its
// transition's) ends or the chain it returns is cancelled. Call with c.mu
// held.
//
// Each turn is a timer's callback (probeChain): no goroutine waits between
// probes. A goroutine per probed member, parked between its probes, held
// ~5.5 MB of stacks through a 1,000-cluster mass failover. The members of
// a transition share its context: one of their own each (a cancelCtx, its
// done channel and its map of children, for the one AfterFunc) was ~0.8 MB
// of a 1,000-cluster mass failover's peak (BenchmarkMassFailoverStormLive1000).
func (c *Controller) spawnProbe(ctx context.Context, p *memberProbe) *probeChain {
	url := p.url
	c.tx.boxMu.Lock()
	gen := p.box.gen
	c.tx.boxMu.Unlock()
	if strings.HasPrefix(url, "https:") && c.tx.probeWarn != "" && !c.tx.warned {
		c.tx.warned = true
		c.log.Warn(c.tx.probeWarn)
	}
	c.tx.wg.Add(1)
	c.tx.running.Add(1)
	r := &probeChain{c: c, ctx: ctx, p: p, url: url, gen: gen}
	r.pending.Store(1)
	r.mu.Lock()
	r.timer = time.AfterFunc(0, r.turn)
	r.mu.Unlock()
	r.unwatch = context.AfterFunc(ctx, r.stop)
	return r
}

// probeChain is one member's probes: a timer whose callback (turn) starts
// a probe when slots allow and sets the timer again, until the probes'
// context ends or the chain is cancelled (cancel), as if it had a context
// of its own under the transition's (it had: see spawnProbe).
type probeChain struct {
	c *Controller
	// ctx is the transition's: the chain ends with it.
	ctx context.Context
	// unwatch undoes the AfterFunc that stops the chain when ctx ends.
	unwatch func() bool
	p       *memberProbe
	url     string
	gen     int
	// slots counts this member's probes in flight, at most
	// patroni.MaxInFlight() (takeSlot): a probe starts every interval
	// even while earlier ones wait for a slow answer (Patroni's REST API
	// runs a query per /primary and may take longer than the interval).
	// A counter, not a channel of that capacity (96 bytes a member).
	slots atomic.Int32
	// fails counts the answers missed in a row.
	fails atomic.Int32
	// pending counts the chain itself (until it stops) and its probes in
	// flight; the last to end tells c.tx.wg.
	pending atomic.Int32
	// cancelled: the chain was cancelled (pruneProbes), as its own
	// context's cancel did.
	cancelled atomic.Bool

	mu      sync.Mutex
	stopped bool
	reqN    int32
	timer   *time.Timer
	// req is the context of the chain's probes in flight (reqN of them;
	// nil when none): a child of ctx that cancel cancels, so a probe in
	// flight ends with the chain as it did under the chain's own context.
	// Made when a probe starts with none in flight, dropped (cancelled)
	// when the last one ends: the chain holds none between its probes.
	req       context.Context
	reqCancel context.CancelFunc
}

// takeSlot takes one of the member's slots (probeChain.slots) if one is
// free.
func (r *probeChain) takeSlot() bool {
	for {
		n := r.slots.Load()
		if n >= int32(patroni.MaxInFlight()) {
			return false
		}
		if r.slots.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// live reports whether the chain still runs: not cancelled, and its
// transition's context not done (its own context's Err() == nil, as it
// was).
func (r *probeChain) live() bool {
	return !r.cancelled.Load() && r.ctx.Err() == nil
}

// cancel ends the chain (pruneProbes): its probes in flight are
// cancelled, its waiting timer stopped. Safe from any goroutine, more than
// once.
func (r *probeChain) cancel() {
	r.mu.Lock()
	r.cancelled.Store(true)
	rc := r.reqCancel
	r.mu.Unlock()
	if rc != nil {
		rc()
	}
	if r.unwatch != nil {
		r.unwatch()
	}
	r.stop()
}

// reqCtx returns the context for a probe starting now (see req); the
// probe gives it back with doneReq.
func (r *probeChain) reqCtx() context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.req == nil {
		r.req, r.reqCancel = context.WithCancel(r.ctx)
		if r.cancelled.Load() {
			r.reqCancel() // (cancelled before: as a cancelled context's child)
		}
	}
	r.reqN++
	return r.req
}

// doneReq gives back a probe's context (reqCtx).
func (r *probeChain) doneReq() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqN--
	if r.reqN == 0 {
		r.reqCancel()
		r.req, r.reqCancel = nil, nil
	}
}

// turn is one interval of the chain: a probe if a slot of this member's
// and one of the controller's are free (else the turn is skipped), and the
// timer set for the next turn before the probe runs, so a slow answer
// delays nothing.
func (r *probeChain) turn() {
	c := r.c
	probing := false
	if r.live() && r.takeSlot() {
		if acquire(c.tx.slots) {
			probing = true
			r.pending.Add(1)
		} else {
			r.slots.Add(-1)
		}
	}
	// A member whose REST API stopped answering is probed less and less
	// often (probeBackoff): a turn every interval to count ticks (50,000
	// a second for 1,000 new primaries of a mass failover) cost more of
	// the controller's CPU than the probes. A new primary that is on is
	// probed only every onEvery intervals.
	n := probeBackoff(int(r.fails.Load()))
	if r.p.on.Load() {
		n = max(n, onEvery)
	}
	r.mu.Lock()
	if r.stopped || !r.live() {
		// The context ended: stop found no timer to stop (this turn was
		// running), so the chain ends here.
		r.stopped = true
		r.mu.Unlock()
		r.done()
	} else {
		r.timer.Reset(time.Duration(n) * c.opts.ProbeInterval)
		r.mu.Unlock()
	}
	if probing {
		r.probe()
	}
}

// probe asks the member once and records the answer.
func (r *probeChain) probe() {
	c := r.c
	defer r.done()
	defer func() { <-c.tx.slots; r.slots.Add(-1) }()
	ctx := r.reqCtx()
	defer r.doneReq()
	res := c.tx.prober.Probe(ctx, r.url)
	if res.Answered() {
		r.fails.Store(0)
	} else {
		r.fails.Add(1)
	}
	if ctx.Err() == nil {
		c.probeAnswered(r.p, r.gen, res)
	}
}

// stop ends the chain when its context ends: at once if its timer was
// waiting, else when the running turn sees it.
func (r *probeChain) stop() {
	r.mu.Lock()
	wasStopped := r.stopped
	r.stopped = true
	waiting := r.timer.Stop()
	r.mu.Unlock()
	if waiting && !wasStopped {
		r.done()
	}
}

func (r *probeChain) done() {
	if r.pending.Add(-1) == 0 {
		r.c.tx.running.Add(-1)
		r.c.tx.wg.Done()
	}
}

// probeBackoff is every how many intervals a member is probed after fails
// answers missed in a row: every interval until noAnswerOff (the old primary is
// off by then, or the new one falls back on its member key), then 2, 4, 8
// and at most 16 (320 ms at the default interval). A mass failover of hosts
// that refuse connections spent ~45 % of the controller's CPU dialing them
// every 20 ms; an API that answers again is seen within that bound.
func probeBackoff(fails int) int {
	if fails < noAnswerOff {
		return 1
	}
	return 1 << min(fails-noAnswerOff+1, 4)
}

// acquire takes a slot of sem if one is free.
func acquire(sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		return true
	default:
		return false
	}
}

// probeAnswered records one probe answer in p's box and wakes the loop
// when it can change the write path. It does not take c.mu; an answer that
// comes after p's transition ended (its probes' context is done: the
// caller drops it) changes nothing anyone reads.
func (c *Controller) probeAnswered(p *memberProbe, gen int, r patroni.ProbeResult) {
	c.tx.boxMu.Lock()
	b := &p.box
	if b.gen != gen || b.seen && r.Sent.Before(b.last.Sent) {
		c.tx.boxMu.Unlock()
		return // from probes since stopped, or overtaken by a later answer
	}
	prev, seen := b.last, b.seen
	b.last, b.seen = r, true
	if r.Answered() {
		b.failures = 0
	} else {
		b.failures++
	}
	changed := !seen || prev.Code != r.Code || prev.Writable != r.Writable || prev.Stopping() != r.Stopping() ||
		b.failures == noAnswerOff
	c.tx.boxMu.Unlock()
	if changed {
		select {
		case c.tx.wake <- struct{}{}:
		default:
		}
	}
}

// stopProbes ends t's probe goroutines. Call with c.mu held.
func (c *Controller) stopProbes(t *transition) {
	if t.cancel != nil {
		t.cancel()
	}
	t.probing = false
}

// maxRoleHold bounds how long holdRoles keeps a cluster's role changes
// back while its new leader is not read-write yet.
const maxRoleHold = time.Second

// holding reports whether t's role changes are to wait: a member took the
// key, is probed, and has not come on yet.
func (t *transition) holding(now time.Time) bool {
	return t.toLeads() && t.onAt.IsZero() && !t.lost && t.probing && now.Before(t.leaderAt.Add(maxRoleHold))
}

// holdRoles returns the services to hand the targets for cluster cl. While
// its new leader has taken the key but is not read-write yet (at most
// maxRoleHold), they keep their previous servers and backup flags, taking
// only weights and force-ups from the new plan: a membership or backup
// change needs a reload (hundreds of milliseconds), which would hold up
// the force-up of the new primary that comes a moment later. Then both go
// in one apply, the force-up first. Not when every target applies role
// changes at runtime (Options.RuntimeRoles): there is no reload to spare,
// and a held role change is only later. Call with c.mu held.
func (c *Controller) holdRoles(cl string, computed []services.Service, now time.Time) []services.Service {
	out := computed
	t := c.tx.active[cl]
	prev, ok := c.tx.lastDesired[cl]
	if t != nil {
		t.held = false
		if ok && !c.opts.RuntimeRoles && t.holding(now) {
			out = overlayRuntime(prev, computed)
			t.held = !sameDesired(out, computed)
			if t.held {
				c.log.Debug("transition: role changes wait for the new primary", zap.String("cluster", cl), zap.String("member", t.to))
			}
		}
	}
	c.tx.lastDesired[cl] = out
	return out
}

// overlayRuntime returns prev with what next gives the same servers that
// is applied at runtime: weights, force-ups, force-downs (the write fence)
// and twin flips (Disabled).
func overlayRuntime(prev, next []services.Service) []services.Service {
	out := make([]services.Service, len(prev))
	for i, s := range prev {
		// A cluster has a few services of a few servers each: scans, as a
		// map by name would find them (the last of a name).
		var want []services.Server
		for k := range next {
			if next[k].Name == s.Name {
				want = next[k].Servers
			}
		}
		servers := make([]services.Server, len(s.Servers))
		for j, sv := range s.Servers {
			for _, n := range want {
				if n.Name == sv.Name {
					// Twins flip at runtime (Disabled): nothing to hold there.
					sv.Weight, sv.ForceUp, sv.ForceDown, sv.HoldDown, sv.Disabled, sv.Reason = n.Weight, n.ForceUp, n.ForceDown, n.HoldDown, n.Disabled, n.Reason
				}
			}
			servers[j] = sv
		}
		s.Servers = servers
		out[i] = s
	}
	return out
}

// fenceExpired reports whether a transition has something due without any
// event: a fence to lift, a window that ended, or a scheduled switchover
// whose time has come. Call with c.mu held.
func (c *Controller) fenceExpired(now time.Time) bool {
	for _, t := range c.tx.active {
		if (c.released[t.cluster] != nil && !t.leaderAt.IsZero() && (t.liftAt.IsZero() || !now.Before(t.liftAt))) || !now.Before(t.deadline) ||
			(!t.onAt.IsZero() && !now.Before(t.onAt.Add(c.opts.FenceHold)) && c.promoted[t.cluster] != nil) ||
			(t.held && !t.holding(now)) || (!t.backAt.IsZero() && !now.Before(t.backAt.Add(c.opts.FenceHold))) {
			return true
		}
		for _, m := range t.mids {
			if !m.offAt.IsZero() && (m.liftAt.IsZero() || !now.Before(m.liftAt)) {
				return true
			}
		}
	}
	// A scheduled switchover whose time came, of a cluster of the
	// inventory (by name: a Citus group's DCS key is <shard>/<group>) that
	// trackTransitions would start.
	for _, cl := range c.inv.Clusters {
		if c.tx.active[cl.Name] != nil || c.staleNS[cl.Namespace] != "" {
			continue // (a stale view starts no transition: trackTransitions)
		}
		s, ok := c.snaps[cl.Namespace]
		if !ok {
			continue
		}
		st := s.Clusters[cl.DCSKey]
		if st == nil || st.Failover == nil || st.Failover.ScheduledAt == "" || ghostLeader(st) || !switchoverStarts(st, now) {
			continue
		}
		if done, ok := c.tx.doneRequest[cl.Name]; !ok || done != *st.Failover {
			return true
		}
	}
	return false
}

// nextDue is the earliest time after now at which fenceExpired becomes
// true for a transition by the clock alone (zero when none): a fence to
// lift, a promote window that ends, a role hold that ends. Call with c.mu
// held.
func (c *Controller) nextDue(now time.Time) time.Time {
	var at time.Time
	note := func(t time.Time) {
		if !t.IsZero() && t.After(now) && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	for _, t := range c.tx.active {
		if c.released[t.cluster] != nil && !t.leaderAt.IsZero() {
			note(t.liftAt)
		}
		note(t.deadline)
		if !t.onAt.IsZero() && c.promoted[t.cluster] != nil {
			note(t.onAt.Add(c.opts.FenceHold))
		}
		if t.held {
			note(t.leaderAt.Add(maxRoleHold))
		}
		if !t.backAt.IsZero() {
			note(t.backAt.Add(c.opts.FenceHold))
		}
		for _, m := range t.mids {
			note(m.liftAt)
		}
	}
	return at
}

// TransitionTimeline is one switchover or failover as the controller saw
// it, in the status history.
type TransitionTimeline struct {
	Cluster string `json:"cluster"`
	Cause   string `json:"cause"`
	From    string `json:"from"`
	To      string `json:"to,omitempty"`
	// Start is when the DCS showed the transition; the others are zero when
	// they did not happen.
	Start time.Time `json:"start"`
	// Requested: the failover key asked for it.
	Requested time.Time `json:"requested,omitempty"`
	// OldPrimaryOff: the old primary's /primary stopped answering 200, or
	// its leader key went (or Patroni began stopping its PostgreSQL);
	// FencedApplied: its forced DOWN reached HAProxy.
	OldPrimaryOff time.Time `json:"old_primary_off,omitempty"`
	OffReason     string    `json:"off_reason,omitempty"`
	FencedApplied time.Time `json:"fenced_applied,omitempty"`
	// LeaderKey: a new member took the leader key.
	LeaderKey time.Time `json:"leader_key,omitempty"`
	// NewPrimaryOn: it answered /primary 200 read-write; ForcedUp: HAProxy
	// marked it UP on our word (zero when its checks had it UP already).
	NewPrimaryOn time.Time `json:"new_primary_on,omitempty"`
	OnReason     string    `json:"on_reason,omitempty"`
	ForcedUp     time.Time `json:"forced_up,omitempty"`
	// AlsoFenced are the members that took the leader key during the
	// transition and lost it to another one: each was fenced as From was
	// until Patroni reported it off.
	AlsoFenced []string `json:"also_fenced,omitempty"`
	// WriteDowntime is from OldPrimaryOff to the new primary's ForcedUp (or
	// NewPrimaryOn): how long the write path had no primary, as the
	// controller saw it.
	WriteDowntime time.Duration `json:"write_downtime_ns,omitempty"`
}

// TransitionMetrics is implemented by a Metrics that records transitions.
type TransitionMetrics interface {
	Transition(cause string, writeDowntime time.Duration, ok bool)
}

func (t *transition) timeline() TransitionTimeline {
	tl := TransitionTimeline{Cluster: t.cluster, Cause: t.cause, From: t.from, To: t.to, Start: t.start,
		Requested: t.requestAt, OldPrimaryOff: t.offAt, OffReason: t.offWhy, FencedApplied: t.fencedAt,
		LeaderKey: t.leaderAt, NewPrimaryOn: t.onAt, OnReason: t.onWhy, ForcedUp: t.forcedAt,
		AlsoFenced: append([]string(nil), t.alsoFenced...)}
	on := t.forcedAt
	if on.IsZero() {
		on = t.onAt
	}
	if !t.offAt.IsZero() && !on.IsZero() && on.After(t.offAt) {
		tl.WriteDowntime = on.Sub(t.offAt)
	}
	return tl
}

// takeEnded returns the transitions that ended and not reported yet, and
// forgets them.
func (c *Controller) takeEnded() []*transition {
	c.mu.Lock()
	defer c.mu.Unlock()
	ended := c.tx.ended
	c.tx.ended = nil
	return ended
}

// flushTransitions reports the transitions that ended: one history event
// each, and the downtime metric. Call without c.mu.
func (c *Controller) flushTransitions() {
	ended := c.takeEnded()
	// Transitions end while the active ones are walked in map order: report
	// them in cluster order, so the history does not depend on it.
	sort.SliceStable(ended, func(i, j int) bool { return ended[i].cluster < ended[j].cluster })
	for _, t := range ended {
		tl := t.timeline()
		c.addEvent(Event{At: c.opts.Now(), Kind: "transition", Transition: &tl})
		if m, ok := c.opts.Metrics.(TransitionMetrics); ok {
			m.Transition(tl.Cause, tl.WriteDowntime, !tl.OldPrimaryOff.IsZero() && !tl.NewPrimaryOn.IsZero())
		}
		c.log.Info("transition timeline", zap.String("cluster", tl.Cluster), zap.String("cause", tl.Cause),
			zap.String("from", tl.From), zap.String("to", tl.To), zap.Duration("write_downtime", tl.WriteDowntime),
			zap.Any("timeline", tl))
	}
}

// noteApplied records when a transition's fence and force-up reached a
// target (the first one): at, or when the target says it forced UP.
func (c *Controller) noteApplied(res target.Result, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.tx.active) == 0 {
		return
	}
	// By the clusters each change's backend may belong to (a prefix up
	// to a '-'): a walk of every transition per change was 1,000 x 4,600
	// prefix tests under c.mu for a mass failover's big apply.
	for _, ch := range res.Changes {
		for i := strings.IndexByte(ch.Backend, '-'); i >= 0; {
			t := c.tx.active[ch.Backend[:i]]
			if j := strings.IndexByte(ch.Backend[i+1:], '-'); j >= 0 {
				i += 1 + j
			} else {
				i = -1
			}
			if t == nil {
				continue
			}
			switch {
			case ch.Kind == target.KindForceUp && ch.Server == t.to && t.forcedAt.IsZero():
				t.forcedAt = at
				if !res.ForcedUp.IsZero() {
					t.forcedAt = res.ForcedUp
				}
			case ch.Kind == target.KindForceDown && strings.TrimSuffix(ch.Server, services.BackupTwinSuffix) == t.from &&
				t.fencedAt.IsZero() && !t.offAt.IsZero():
				t.fencedAt = at
				if !res.ForcedDown.IsZero() {
					t.fencedAt = res.ForcedDown
				}
			}
		}
	}
}

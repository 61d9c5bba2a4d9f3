package controller

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/target"
)

func TestProbeBackoffSteps(t *testing.T) {
	for fails, want := range map[int]int{0: 1, noAnswerOff - 1: 1, noAnswerOff: 2, noAnswerOff + 1: 4, noAnswerOff + 2: 8, noAnswerOff + 3: 16, noAnswerOff + 50: 16} {
		if got := probeBackoff(fails); got != want {
			t.Errorf("probeBackoff(%d) = %d, want %d", fails, got, want)
		}
	}
}

// countingProber answers 503 for members whose URL holds "answers", and
// fails like a refused connection for the others; it counts probes per URL.
type countingProber struct {
	mu sync.Mutex
	n  map[string]int
}

func (p *countingProber) Probe(ctx context.Context, apiURL string) patroni.ProbeResult {
	p.mu.Lock()
	p.n[apiURL]++
	p.mu.Unlock()
	now := time.Now()
	if strings.Contains(apiURL, "answers") {
		return patroni.ProbeResult{Sent: now, At: now, Code: 503}
	}
	return patroni.ProbeResult{Sent: now, At: now, Err: "connect: connection refused"}
}

func (p *countingProber) counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.n {
		out[k] = v
	}
	return out
}

// TestProbeBackoff: during a transition, a member whose REST API refuses
// connections is probed far less often than one that answers (same
// interval, same run), and still probed.
func TestProbeBackoff(t *testing.T) {
	pr := &countingProber{n: map[string]int{}}
	c := New(loadInventory(t), []target.Target{&fakeTarget{}}, Options{ProbeInterval: 2 * time.Millisecond, Debounce: time.Millisecond, Prober: pr})
	runUntilEnd(t, c)
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	urls := map[string]string{"pg-test-1": "http://refuses-1:8008/patroni", "pg-test-2": "http://answers-2:8008/patroni", "pg-test-3": "http://answers-3:8008/patroni"}
	withURL := func(s patroni.Snapshot) patroni.Snapshot {
		for name, m := range s.Clusters["pg-test"].Members {
			m.APIURL = urls[name]
		}
		return s
	}
	c.Observe(withURL(state(10, "pg-test-1", 1, all...)))
	c.Observe(withURL(requested(state(11, "pg-test-1", 1, all...), "pg-test-1", "pg-test-2")))
	eventually(t, "both members probed past the backoff's last step", func() bool {
		n := pr.counts()
		return n[urls["pg-test-1"]] >= noAnswerOff+4 && n[urls["pg-test-2"]] >= 100
	})
	before := pr.counts()
	eventually(t, "200 more probes of the answering member", func() bool {
		return pr.counts()[urls["pg-test-2"]] >= before[urls["pg-test-2"]]+200
	})
	after := pr.counts()
	refused := after[urls["pg-test-1"]] - before[urls["pg-test-1"]]
	answered := after[urls["pg-test-2"]] - before[urls["pg-test-2"]]
	if refused < 1 || refused*4 > answered {
		t.Errorf("in the same time the refusing member was probed %d times and the answering one %d: want it still probed, at most a quarter as often", refused, answered)
	}
}

// TestProbesGoOnDuringAReconcile: probe answers are recorded while a
// reconcile holds the controller's lock (in a mass failover a reconcile
// holds it for a long time; probes waiting on it kept their slots and new
// ones could not start), and the next reconcile sees them.
func TestProbesGoOnDuringAReconcile(t *testing.T) {
	pr := &countingProber{n: map[string]int{}}
	c := New(loadInventory(t), []target.Target{&fakeTarget{}}, Options{ProbeInterval: 2 * time.Millisecond, Debounce: time.Millisecond, Prober: pr})
	runUntilEnd(t, c)
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	url := "http://answers-2:8008/patroni"
	withURL := func(s patroni.Snapshot) patroni.Snapshot {
		for name, m := range s.Clusters["pg-test"].Members {
			m.APIURL = "http://refuses-" + name + ":8008/patroni"
			if name == "pg-test-2" {
				m.APIURL = url
			}
		}
		return s
	}
	c.Observe(withURL(state(10, "pg-test-1", 1, all...)))
	c.Observe(withURL(requested(state(11, "pg-test-1", 1, all...), "pg-test-1", "pg-test-2")))
	eventually(t, "pg-test-2 probed", func() bool { return pr.counts()[url] > 0 })
	c.mu.Lock() // as a long reconcile does
	before := pr.counts()[url]
	deadline := time.Now().Add(10 * time.Second)
	for pr.counts()[url] < before+20 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	got := pr.counts()[url] - before
	c.mu.Unlock()
	if got < 20 {
		t.Fatalf("%d probes while the lock was held 10 s, want 20: probes wait on the controller's lock", got)
	}
	eventually(t, "the answers seen by a reconcile", func() bool {
		c.ReconcileOnce(false)
		c.mu.Lock()
		defer c.mu.Unlock()
		tr := c.tx.active["pg-test"]
		p := answerOf(c, tr, "pg-test-2")
		return p != nil && p.seen && p.last.Code == 503
	})
}

// probing reports which of t's members are being probed now.
func probing(c *Controller, cluster string) map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]bool{}
	if t := c.tx.active[cluster]; t != nil {
		for _, p := range t.probes {
			out[p.name] = p.started
		}
	}
	return out
}

// TestProbesPruned: the candidates that did not take the leader key stop
// being probed once one did, the old primary once it is off and gone from
// the DCS; a candidate the key then moves to is probed again, and its
// earlier answers are forgotten.
func TestProbesPruned(t *testing.T) {
	pr := &countingProber{n: map[string]int{}}
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{ProbeInterval: 2 * time.Millisecond, Debounce: time.Millisecond,
		PromoteWindow: time.Minute, FenceHold: time.Minute, Prober: pr})
	runUntilEnd(t, c)
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	withURL := func(s patroni.Snapshot) patroni.Snapshot {
		for name, m := range s.Clusters["pg-test"].Members {
			m.APIURL = "http://answers-" + name + ":8008/patroni"
		}
		return s
	}
	want := func(what string, w map[string]bool) {
		t.Helper()
		eventually(t, what, func() bool {
			got := probing(c, "pg-test")
			for k, v := range w {
				if got[k] != v {
					return false
				}
			}
			return true
		})
	}
	c.Observe(withURL(state(10, "pg-test-1", 1, all...)))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })
	// The leader key released: the old primary and both candidates.
	c.Observe(withURL(state(11, "", 1, all...)))
	want("all three probed", map[string]bool{"pg-test-1": true, "pg-test-2": true, "pg-test-3": true})
	// pg-test-2 takes it: pg-test-3's answers can no longer matter; the
	// old primary still has its member key (it may stop or lead again).
	c.Observe(withURL(state(12, "pg-test-2", 1, all...)))
	want("pg-test-3 no longer probed", map[string]bool{"pg-test-1": true, "pg-test-2": true, "pg-test-3": false})
	n3 := pr.counts()["http://answers-pg-test-3:8008/patroni"]
	n2 := pr.counts()["http://answers-pg-test-2:8008/patroni"]
	eventually(t, "more probes of the new leader", func() bool { return pr.counts()["http://answers-pg-test-2:8008/patroni"] >= n2+30 })
	if got := pr.counts()["http://answers-pg-test-3:8008/patroni"]; got > n3+patroni.MaxInFlight() {
		t.Errorf("pg-test-3 probed %d more times after the key went to pg-test-2", got-n3)
	}
	// The old primary's member key goes: it is off and gone.
	c.Observe(withURL(state(13, "pg-test-2", 1, "pg-test-2", "pg-test-3")))
	want("the old primary no longer probed", map[string]bool{"pg-test-1": false, "pg-test-2": true})
	// The key moves on to pg-test-3: probed again, from a clean slate.
	c.Observe(withURL(state(14, "pg-test-3", 1, "pg-test-2", "pg-test-3")))
	want("pg-test-3 probed again", map[string]bool{"pg-test-3": true})
	eventually(t, "a fresh answer of pg-test-3", func() bool {
		c.ReconcileOnce(false)
		c.mu.Lock()
		defer c.mu.Unlock()
		tr := c.tx.active["pg-test"]
		return tr != nil && answerOf(c, tr, "pg-test-3").seen && answerOf(c, tr, "pg-test-3").last.Code == 503
	})
}

// TestStoppedProbesAnswerNothing: an answer of probes stopped since
// (pruneProbes reset the box to a new generation) is dropped, and a
// member's box starts clean.
func TestStoppedProbesAnswerNothing(t *testing.T) {
	c := New(loadInventory(t), []target.Target{&fakeTarget{}}, Options{})
	p := &memberProbe{}
	now := time.Now()
	c.probeAnswered(p, 0, patroni.ProbeResult{Sent: now, At: now, Err: "refused"})
	if !p.box.seen || p.box.failures != 1 {
		t.Fatalf("box %+v after one answer", p.box)
	}
	p.box = probeBox{gen: p.box.gen + 1} // as pruneProbes does
	c.probeAnswered(p, 0, patroni.ProbeResult{Sent: now.Add(time.Millisecond), At: now, Code: 200})
	if p.box.seen {
		t.Errorf("an answer of stopped probes was recorded: %+v", p.box)
	}
	c.probeAnswered(p, 1, patroni.ProbeResult{Sent: now.Add(2 * time.Millisecond), At: now, Code: 503})
	if !p.box.seen || p.box.last.Code != 503 || p.box.failures != 0 {
		t.Errorf("box %+v, want the new generation's answer", p.box)
	}
}

// TestOnPrimaryProbedLess: once the new primary is on, it is probed every
// onEvery intervals: in the same time, far less often than the old primary
// (its member key still there, its /primary answering 503), which is
// probed every interval.
func TestOnPrimaryProbedLess(t *testing.T) {
	all := []string{"pg-test-1", "pg-test-2", "pg-test-3"}
	a := apis{"pg-test-1": newFakeAPI(t, 200, "master"), "pg-test-2": newFakeAPI(t, 503, "replica"),
		"pg-test-3": newFakeAPI(t, 503, "replica")}
	ft := &fakeTarget{}
	c := New(loadInventory(t), []target.Target{ft}, Options{ProbeInterval: 2 * time.Millisecond, Debounce: time.Millisecond,
		FenceHold: time.Minute, PromoteWindow: time.Minute, PatroniCAFile: "/nonexistent"})
	runUntilEnd(t, c)
	c.Observe(a.with(state(10, "pg-test-1", 1, all...), ""))
	eventually(t, "first apply", func() bool { return ft.count() == 1 })
	a["pg-test-1"].set(503, "replica")
	a["pg-test-2"].set(200, "master")
	c.Observe(a.with(state(11, "pg-test-2", 1, all...), patroni.RolePromoted))
	eventually(t, "pg-test-2 forced up", func() bool { return forcedUp(ft.last(), "pg-test-primary") == "pg-test-2" })
	old, now := a["pg-test-1"].count(), a["pg-test-2"].count()
	afterProbes(t, a["pg-test-1"], 200)
	oldN, newN := a["pg-test-1"].count()-old, a["pg-test-2"].count()-now
	if newN < 1 || newN*2 > oldN {
		t.Errorf("in the same time the new primary, on, was probed %d times and the old primary %d: want it still probed, at most half as often", newN, oldN)
	}
}

// answerOf is c.answers as a pointer: nil when member has no probes in tr.
func answerOf(c *Controller, tr *transition, member string) *probeBox {
	b, ok := c.answers(tr, member)
	if !ok {
		return nil
	}
	return &b
}

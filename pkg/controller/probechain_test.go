package controller

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// instantProber answers at once (503), after sleeping up to maxSleep, and
// counts the probes.
type instantProber struct {
	n        atomic.Int64
	maxSleep time.Duration
}

func (p *instantProber) Probe(ctx context.Context, _ string) patroni.ProbeResult {
	p.n.Add(1)
	if p.maxSleep > 0 {
		select {
		case <-time.After(rand.N(p.maxSleep)):
		case <-ctx.Done():
		}
	}
	now := time.Now()
	return patroni.ProbeResult{Sent: now, At: now, Code: 503}
}

// startChains spawns n members' probes under ctx, as probeAll does: each
// under a transition's context (one member per transition here), a child
// of ctx (Run's).
func startChains(c *Controller, ctx context.Context, n int) []*memberProbe {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*memberProbe
	var cancels []context.CancelFunc
	for i := 0; i < n; i++ {
		p := &memberProbe{url: fmt.Sprintf("http://127.0.%d.%d:8008/patroni", i/250, i%250)}
		p.started = true
		tctx, cancel := context.WithCancel(ctx)
		cancels = append(cancels, cancel)
		p.chain = c.spawnProbe(tctx, p)
		out = append(out, p)
	}
	context.AfterFunc(ctx, func() {
		for _, cancel := range cancels {
			cancel()
		}
	})
	return out
}

// waitChains waits for every probe chain to end, within a deadline.
func waitChains(t *testing.T, c *Controller) {
	t.Helper()
	ended := make(chan struct{})
	go func() { c.tx.wg.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Fatalf("probe chains still running 30 s after their context ended (%d)", c.tx.running.Load())
	}
	if n := c.tx.running.Load(); n != 0 {
		t.Fatalf("%d probe chains counted running after they ended", n)
	}
}

// TestProbeChainsParkNoGoroutine: between its probes a member holds a
// timer, not a goroutine (500 members probed, then waiting for their next
// turn, leave the goroutine count where it was), and they all end with
// their context.
func TestProbeChainsParkNoGoroutine(t *testing.T) {
	pr := &instantProber{}
	c := New(loadInventory(t), []target.Target{&fakeTarget{}}, Options{ProbeInterval: time.Hour, Prober: pr})
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	const n = 500
	startChains(c, ctx, n)
	deadline := time.Now().Add(30 * time.Second)
	for pr.n.Load() < n || c.tx.running.Load() != n || runtime.NumGoroutine() > before+20 {
		if time.Now().After(deadline) {
			t.Fatalf("after the first probes: %d probes, %d chains, %d goroutines (%d before)",
				pr.n.Load(), c.tx.running.Load(), runtime.NumGoroutine(), before)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	waitChains(t, c)
	if got := pr.n.Load(); got != n {
		t.Errorf("%d probes with an hour's interval, want one per member (%d)", got, n)
	}
}

// TestProbeChainsEndAnyTime: chains probing every millisecond, with
// answers that take up to 3 ms (several in flight per member), each
// cancelled at a random moment (before its first turn, between turns,
// during a probe): every one ends, and the controller's slots are all
// free again.
func TestProbeChainsEndAnyTime(t *testing.T) {
	for round := 0; round < 5; round++ {
		pr := &instantProber{maxSleep: 3 * time.Millisecond}
		c := New(loadInventory(t), []target.Target{&fakeTarget{}}, Options{ProbeInterval: time.Millisecond, Prober: pr})
		ctx, cancel := context.WithCancel(context.Background())
		const n = 200
		for _, p := range startChains(c, ctx, n) {
			go func() {
				time.Sleep(rand.N(6 * time.Millisecond))
				p.chain.cancel()
			}()
		}
		time.Sleep(rand.N(5 * time.Millisecond))
		cancel()
		waitChains(t, c)
		if len(c.tx.slots) != 0 {
			t.Fatalf("round %d: %d of the controller's probe slots still taken", round, len(c.tx.slots))
		}
	}
}

// inFlightProber holds every probe until its context ends, and reports
// on ended the URL of each probe that did.
type inFlightProber struct {
	started chan string
	ended   chan string
}

func (p *inFlightProber) Probe(ctx context.Context, url string) patroni.ProbeResult {
	p.started <- url
	<-ctx.Done()
	p.ended <- url
	return patroni.ProbeResult{Err: ctx.Err().Error()}
}

// TestProbeChainCancelEndsItsProbeInFlight: the members of a transition
// share its context, yet cancelling one member's chain (pruneProbes) ends
// its probe in flight at once, as its own context did, and leaves the
// others' running until the transition's context ends.
func TestProbeChainCancelEndsItsProbeInFlight(t *testing.T) {
	pr := &inFlightProber{started: make(chan string, 4), ended: make(chan string, 4)}
	c := New(loadInventory(t), []target.Target{&fakeTarget{}}, Options{ProbeInterval: time.Hour, Prober: pr})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	chains := startChains(c, ctx, 2)
	for range 2 {
		select {
		case <-pr.started:
		case <-time.After(10 * time.Second):
			t.Fatal("probes did not start")
		}
	}
	chains[0].chain.cancel()
	select {
	case u := <-pr.ended:
		if u != chains[0].url {
			t.Fatalf("probe of %s ended, want %s's", u, chains[0].url)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cancelled chain's probe in flight did not end")
	}
	select {
	case u := <-pr.ended:
		t.Fatalf("probe of %s ended with another member's chain", u)
	case <-time.After(50 * time.Millisecond):
	}
	if !chains[1].chain.live() || chains[0].chain.live() {
		t.Fatalf("live: %v %v, want false true", chains[0].chain.live(), chains[1].chain.live())
	}
	cancel()
	select {
	case u := <-pr.ended:
		if u != chains[1].url {
			t.Fatalf("probe of %s ended, want %s's", u, chains[1].url)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the transition's end did not end the probe in flight")
	}
	waitChains(t, c)
	if len(c.tx.slots) != 0 {
		t.Fatalf("%d of the controller's probe slots still taken", len(c.tx.slots))
	}
}

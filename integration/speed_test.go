//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsvc/pgsvc/integration/harness"
	"github.com/pgsvc/pgsvc/pkg/controller"
)

// restPoller asks every member's Patroni REST API for OPTIONS /primary
// every interval (as HAProxy's check does, but 150x as often) and keeps, per
// member, each change between 200 and anything else: Patroni's own view of
// a transition, measured independently of the controller.
type restPoller struct {
	mu      sync.Mutex
	changes map[string][]restChange
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

type restChange struct {
	At      time.Time
	Primary bool
}

func startRESTPoller(addrs map[string]string, members []string, every time.Duration) *restPoller {
	ctx, cancel := context.WithCancel(context.Background())
	p := &restPoller{changes: map[string][]restChange{}, cancel: cancel}
	client := &http.Client{Timeout: 200 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, m := range members {
		url := fmt.Sprintf("http://%s:%d/primary", addrs[m], harness.PatroniPort)
		p.wg.Add(1)
		go func(m string) {
			defer p.wg.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				primary, known := false, true
				req, _ := http.NewRequestWithContext(ctx, http.MethodOptions, url, nil)
				resp, err := client.Do(req)
				switch {
				case err == nil:
					primary = resp.StatusCode == http.StatusOK
					resp.Body.Close()
				case errors.Is(err, syscall.ECONNREFUSED):
					// Patroni is not running: not the primary.
				default:
					// A timeout on a loaded machine says nothing.
					known = false
				}
				at := time.Now()
				if ctx.Err() != nil {
					return
				}
				p.mu.Lock()
				cs := p.changes[m]
				if known && (len(cs) == 0 || cs[len(cs)-1].Primary != primary) {
					p.changes[m] = append(cs, restChange{At: at, Primary: primary})
				}
				p.mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}(m)
	}
	return p
}

func (p *restPoller) stop() {
	p.cancel()
	p.wg.Wait()
}

// firstChange is when member's /primary first turned primary (or not) after since.
func (p *restPoller) firstChange(member string, since time.Time, primary bool) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.changes[member] {
		if !c.At.Before(since) && c.Primary == primary {
			return c.At
		}
	}
	return time.Time{}
}

// burstWriter starts a write attempt (a fresh connection through a
// service, one insert) every interval without waiting for the previous
// ones: an attempt stuck in a pgbouncer queue on a primary going down does
// not hide what the next attempts see.
type burstWriter struct {
	w      *writer
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startBurstWriter(hostport string, every time.Duration) *burstWriter {
	ctx, cancel := context.WithCancel(context.Background())
	b := &burstWriter{w: &writer{hostport: hostport}, cancel: cancel}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for n := 0; ; n++ {
			b.wg.Add(1)
			go func(n int) {
				defer b.wg.Done()
				rec := b.w.write(context.Background(), n)
				b.w.mu.Lock()
				b.w.recs = append(b.w.recs, rec)
				b.w.mu.Unlock()
			}(n)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return b
}

func (b *burstWriter) snapshot() []writeRec { return b.w.snapshot() }

// stop starts no more attempts, waits for those in flight (each bounded by
// the writer's 4 s timeout) and returns every record.
func (b *burstWriter) stop() []writeRec {
	b.cancel()
	b.wg.Wait()
	return b.w.snapshot()
}

// pgWriter writes straight to each member's PostgreSQL (bypassing HAProxy
// and pgbouncer) every interval, one insert per attempt over a kept
// connection (reconnected after an error): PostgreSQL's own write gap, from
// the last commit on the old primary to the first on the new one. Patroni's
// /primary still answers 200 for ~1 s while its PostgreSQL shuts down, so
// the REST window alone hides part of the outage no proxy can avoid.
type pgWriter struct {
	mu     sync.Mutex
	commit map[string][]time.Time // member -> commit end times
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startPGWriter(addrs map[string]string, members []string, every time.Duration) *pgWriter {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pgWriter{commit: map[string][]time.Time{}, cancel: cancel}
	for _, m := range members {
		hostport := net.JoinHostPort(addrs[m], strconv.Itoa(harness.PgPort))
		p.wg.Add(1)
		go func(m string) {
			defer p.wg.Done()
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					conn.Close(context.Background())
				}
			}()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for n := 0; ; n++ {
				cctx, ccancel := context.WithTimeout(ctx, time.Second)
				var err error
				if conn == nil {
					conn, err = pgx.Connect(cctx, svcDSN(hostport))
				}
				if err == nil {
					_, err = conn.Exec(cctx, "insert into "+writesTable+" (n) values ($1)", -1-n)
					if err == nil {
						p.mu.Lock()
						p.commit[m] = append(p.commit[m], time.Now())
						p.mu.Unlock()
					} else if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) {
						// The connection is gone (a stop, a restart): a new
						// one next time. A server-side error (25006 on a
						// standby) keeps it: no connection churn on the
						// members while they switch.
						conn.Close(context.Background())
						conn = nil
					}
				}
				ccancel()
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}(m)
	}
	return p
}

func (p *pgWriter) stop() {
	p.cancel()
	p.wg.Wait()
}

// gap returns the last commit on old before the first commit on next after
// since, and that first commit (zero when not seen).
func (p *pgWriter) gap(old, next string, since time.Time) (lastOld, firstNew time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, at := range p.commit[next] {
		if !at.Before(since) {
			firstNew = at
			break
		}
	}
	for _, at := range p.commit[old] {
		if firstNew.IsZero() || at.Before(firstNew) {
			lastOld = at
		}
	}
	return lastOld, firstNew
}

// speedRun is one switchover or failover measured end to end.
type speedRun struct {
	Label    string
	Old, New string
	Start    time.Time
	// OldOff / NewOn: Patroni's window, from the REST poller.
	OldOff, NewOn time.Time
	// From the writer: the last write committed on the old primary, the
	// first failed attempt, the first write committed on the new one.
	LastOld, FirstFail, FirstNew writeRec
	Failed, Misrouted            int
	// PostgreSQL's own write gap (pgWriter): last commit on the old
	// primary, first on the new one, straight to PostgreSQL.
	PGLastOld, PGFirstNew time.Time
	Timeline              *controller.TransitionTimeline
}

func (s speedRun) window() time.Duration { return s.NewOn.Sub(s.OldOff) }

// pgGap is PostgreSQL's own write gap (0 when not measured).
func (s speedRun) pgGap() time.Duration {
	if s.PGLastOld.IsZero() || s.PGFirstNew.IsZero() {
		return 0
	}
	return s.PGFirstNew.Sub(s.PGLastOld)
}

// haproxyGap is the same gap through HAProxy: the last write committed
// through the primary service on the old primary to the first on the new.
func (s speedRun) haproxyGap() time.Duration {
	if s.LastOld.At.IsZero() || s.FirstNew.At.IsZero() {
		return 0
	}
	return s.FirstNew.At.Add(s.FirstNew.Took).Sub(s.LastOld.At.Add(s.LastOld.Took))
}

// failing is how long writes failed: from the first failed attempt to the
// start of the first write that landed on the new primary (0 when none failed).
func (s speedRun) failing() time.Duration {
	if s.Failed == 0 || s.FirstFail.At.IsZero() || s.FirstNew.At.IsZero() {
		return 0
	}
	return s.FirstNew.At.Sub(s.FirstFail.At)
}

// firstWrite is the time from the new primary's /primary answering 200 to
// the first write committed on it.
func (s speedRun) firstWrite() time.Duration {
	return s.FirstNew.At.Add(s.FirstNew.Took).Sub(s.NewOn)
}

// speedRuns: 5 switchovers and 3 kill -9 failovers of pg-test with a
// writer opening a new connection through the primary service every 20 ms
// and a poller asking each member's /primary every 20 ms. Asserted: no
// write ever reaches a read-only server, every run ends with the right
// primary served. Printed: Patroni's window next to what the writes saw.
func (r *scenarioRig) speedRuns(t *testing.T) {
	const sc = "6 Patroni-speed transitions"
	members := []string{}
	for _, m := range r.env.Members("pg-test") {
		members = append(members, m.Name)
	}
	var runs []speedRun
	for i := 1; i <= 8; i++ {
		kill := i > 5
		label := fmt.Sprintf("switchover %d", i)
		if kill {
			label = fmt.Sprintf("kill -9 failover %d", i-5)
		}
		run, ok := r.speedRun(t, label, members, kill)
		runs = append(runs, run)
		r.res.add(sc, label, "%s", run.describe())
		if !ok {
			break
		}
	}
	// The goals, side by side (measured, not asserted: timing on a shared
	// 2-core machine is no test).
	var worstFirst, worstOver, worstOurs time.Duration
	var firsts, gaps []string
	misrouted := 0
	for _, run := range runs {
		misrouted += run.Misrouted
		if run.NewOn.IsZero() || run.FirstNew.At.IsZero() {
			continue
		}
		worstFirst = max(worstFirst, run.firstWrite())
		worstOver = max(worstOver, run.failing()-run.window())
		worstOurs = max(worstOurs, run.afterReadWrite())
		firsts = append(firsts, dur(run.firstWrite()))
		gaps = append(gaps, dur(run.pgGap())+"/"+dur(run.haproxyGap()))
	}
	r.res.add(sc, "summary", "%d runs; first write on the new primary after its /primary 200: %s, worst %s (goal <= 100ms); "+
		"of which after the controller saw it read-write: worst %s; writes failing minus Patroni's window: worst %s (goal <= 200ms); "+
		"misrouted writes: %d (goal 0); write gap PostgreSQL direct/through HAProxy: %s",
		len(runs), strings.Join(firsts, " "), dur(worstFirst), dur(worstOurs), durSigned(worstOver), misrouted, strings.Join(gaps, " "))
}

func durSigned(d time.Duration) string {
	if d < 0 {
		return "-" + dur(-d)
	}
	return dur(d)
}

func (s speedRun) describe() string {
	var b strings.Builder
	rel := func(at time.Time) string {
		if at.IsZero() || s.OldOff.IsZero() {
			return "-"
		}
		d := at.Sub(s.OldOff)
		if d >= 0 {
			return "+" + dur(d)
		}
		return durSigned(d)
	}
	end := func(r writeRec) time.Time {
		if r.At.IsZero() {
			return time.Time{}
		}
		return r.At.Add(r.Took)
	}
	fmt.Fprintf(&b, "%s -> %s: Patroni window (old /primary off -> new /primary 200) %s; writes failing %s (%d attempts); "+
		"first write on the new primary %s after its /primary 200; misrouted %d; "+
		"write gap (last commit on the old primary -> first on the new): PostgreSQL direct %s, through HAProxy %s",
		s.Old, s.New, dur(s.window()), dur(s.failing()), s.Failed, durSigned(s.firstWrite()), s.Misrouted, dur(s.pgGap()), dur(s.haproxyGap()))
	fmt.Fprintf(&b, ". Timeline from the old /primary off: last write on the old primary %s (PostgreSQL direct %s), first failure %s, new /primary 200 %s",
		rel(end(s.LastOld)), rel(s.PGLastOld), rel(s.FirstFail.At), rel(s.NewOn))
	if tl := s.Timeline; tl != nil {
		fmt.Fprintf(&b, "; controller: old off %s (%s), fence applied %s, leader key %s, new primary read-write %s, forced up %s",
			rel(tl.OldPrimaryOff), tl.OffReason, rel(tl.FencedApplied), rel(tl.LeaderKey), rel(tl.NewPrimaryOn), rel(tl.ForcedUp))
	}
	fmt.Fprintf(&b, "; first write on the new primary %s (PostgreSQL direct %s)", rel(end(s.FirstNew)), rel(s.PGFirstNew))
	return b.String()
}

// afterReadWrite is the time from the controller seeing the new primary
// read-write to the first write committed on it (0 when unknown): the part
// of the outage that is the controller's and HAProxy's.
func (s speedRun) afterReadWrite() time.Duration {
	if s.Timeline == nil || s.Timeline.NewPrimaryOn.IsZero() || s.FirstNew.At.IsZero() {
		return 0
	}
	return s.FirstNew.At.Add(s.FirstNew.Took).Sub(s.Timeline.NewPrimaryOn)
}

// speedRun makes one transition and measures it. ok is false when the
// stack is not healthy afterwards (the next runs would mean nothing).
func (r *scenarioRig) speedRun(t *testing.T, label string, members []string, kill bool) (run speedRun, ok bool) {
	t.Helper()
	old := r.leader(t, "pg-test")
	run = speedRun{Label: label, Old: old}
	poller := startRESTPoller(r.addrs, members, 20*time.Millisecond)
	defer poller.stop()
	pgw := startPGWriter(r.addrs, members, 20*time.Millisecond)
	defer pgw.stop()
	w := startBurstWriter(svcAddr(testIP, portPrimary), 20*time.Millisecond)
	defer w.stop()
	// A few writes before, so the last one on the old primary is known.
	if err := waitFor(r.ctx, 10*time.Second, "writes before "+label, func() (bool, string) {
		n := 0
		for _, rec := range w.snapshot() {
			if rec.Err == "" && rec.Addr == r.addrs[old] {
				n++
			}
		}
		return n >= 5, fmt.Sprintf("%d writes on %s", n, old)
	}); err != nil {
		t.Errorf("%s: %v", label, err)
		return run, false
	}

	lw := watchLeader(r.ctx, r.env, "pg-test", old, 90*time.Second)
	run.Start = time.Now()
	if kill {
		if err := r.env.KillMember(old); err != nil {
			t.Errorf("%s: kill %s: %v", label, old, err)
			return run, false
		}
	} else {
		cand := other(r.env.Members("pg-test"), old, "pg-test-3")
		if _, err := r.env.Switchover(r.ctx, "pg-test", old, cand); err != nil {
			t.Errorf("%s: %v", label, err)
			return run, false
		}
	}
	next, _, err := lw.wait(run.Start)
	if err != nil {
		t.Errorf("%s: %v", label, err)
		return run, false
	}
	run.New = next
	if err := waitFor(r.ctx, 90*time.Second, "pg-test served right after "+label, func() (bool, string) {
		return r.clusterRight("pg-test", testIP, next)
	}); err != nil {
		t.Errorf("%s: %v", label, err)
		return run, false
	}
	// Let the writer land a few writes on the new primary.
	if err := waitFor(r.ctx, 10*time.Second, "writes on "+next, func() (bool, string) {
		n := 0
		for _, rec := range w.snapshot() {
			if rec.Err == "" && rec.Addr == r.addrs[next] {
				n++
			}
		}
		return n >= 5, fmt.Sprintf("%d writes on %s", n, next)
	}); err != nil {
		t.Errorf("%s: %v", label, err)
	}
	recs := w.stop()
	poller.stop()
	pgw.stop()
	run.PGLastOld, run.PGFirstNew = pgw.gap(old, next, run.Start)

	run.OldOff = poller.firstChange(old, run.Start, false)
	run.NewOn = poller.firstChange(next, run.Start, true)
	sort.Slice(recs, func(i, j int) bool { return recs[i].At.Before(recs[j].At) })
	for _, rec := range recs {
		switch {
		case rec.Misrouted:
			run.Misrouted++
			t.Errorf("%s: write at %s reached read-only %s: %s", label, rec.At.Format("15:04:05.000"), r.memberOf(rec.Addr), rec.Err)
		case rec.Err != "" && !rec.At.Before(run.Start):
			run.Failed++
			if run.FirstFail.At.IsZero() {
				run.FirstFail = rec
			}
		case rec.Err == "" && rec.Addr == r.addrs[next] && run.FirstNew.At.IsZero() && !rec.At.Before(run.Start):
			run.FirstNew = rec
		case rec.Err == "" && rec.Addr == r.addrs[old] && run.FirstNew.At.IsZero():
			run.LastOld = rec
		}
	}
	if run.OldOff.IsZero() || run.NewOn.IsZero() {
		t.Errorf("%s: the REST poller saw no transition (old off %v, new on %v)", label, run.OldOff, run.NewOn)
	}
	if st, err := r.status(); err == nil {
		for _, e := range st.History {
			if e.Kind == "transition" && e.Transition != nil && e.Transition.From == old && e.Transition.To == next &&
				!e.Transition.Start.Before(run.Start.Add(-time.Second)) {
				tl := *e.Transition
				run.Timeline = &tl
			}
		}
	}
	if run.Timeline == nil {
		// The transition ends FenceHold after it settles: wait for its record.
		_ = waitFor(r.ctx, 30*time.Second, "the controller's timeline of "+label, func() (bool, string) {
			st, err := r.status()
			if err != nil {
				return false, err.Error()
			}
			for _, e := range st.History {
				if e.Kind == "transition" && e.Transition != nil && e.Transition.From == old && e.Transition.To == next &&
					!e.Transition.Start.Before(run.Start.Add(-time.Second)) {
					tl := *e.Transition
					run.Timeline = &tl
					return true, ""
				}
			}
			return false, "no transition event yet"
		})
	}

	hctx, cancel := context.WithTimeout(r.ctx, 4*time.Minute)
	defer cancel()
	if kill {
		if err := r.env.RestartMember(r.ctx, old); err != nil {
			t.Errorf("%s: restart %s: %v", label, old, err)
			return run, false
		}
	}
	if err := r.env.WaitHealthy(hctx, "pg-test"); err != nil {
		t.Errorf("%s: %v", label, err)
		return run, false
	}
	return run, true
}

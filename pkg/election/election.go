// Package election makes one of several pgsvc controller instances the one
// that applies changes (controller HA), through an etcd v3 election
// (go.etcd.io/etcd/client/v3/concurrency key layout).
//
// Fencing: IsLeader is true only while this instance holds the election key
// AND its lease is certainly still alive on the etcd server. The elector
// keeps a local deadline: the send time of the last successful lease grant
// or keepalive, plus the lease TTL, minus a safety margin (TTL/3). The server
// refreshed the lease after that send, so it cannot expire before send+TTL;
// another instance can only win after the lease expires. Past the deadline
// IsLeader is false even if the client has not noticed anything, so a
// partitioned leader stops applying before anyone else can start.
//
// A holder past its deadline cannot lead, yet its lease may live on (the
// session's keepalive stream, renewals whose answers come too late) and
// with it its key, so nobody else could win: a margin after the deadline
// without a renewal, it ends the term (revoking the lease) and campaigns
// again.
package election

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// DefaultKey is the election prefix used when Options.Key is empty.
const DefaultKey = "/pgsvc/election"

// handoverGrace is how long a candidate that won by an older candidate's
// key going waits before it leads (see term).
const handoverGrace = 100 * time.Millisecond

// ErrNoLeader is returned by Leader when nobody holds the election.
var ErrNoLeader = concurrency.ErrElectionNoLeader

// Options configure an Elector. Zero values take the defaults in brackets.
type Options struct {
	// Key is the election prefix in etcd (DefaultKey). Candidates put
	// <Key>/<lease id in hex>, as concurrency.Election does.
	Key string
	// Identity names this instance in the election value (hostname-pid).
	Identity string
	// TTL is the lease TTL in seconds (10); at least 2. Leadership moves to
	// another instance within about TTL seconds of this one dying.
	TTL int
	Log *zap.Logger
	// Now is the clock (time.Now). The fencing deadline is computed with it.
	Now func() time.Time
	// RetryMin and RetryMax bound the backoff between terms when etcd is
	// unreachable (500ms, 10s).
	RetryMin, RetryMax time.Duration
}

func (o *Options) defaults() {
	if o.Key == "" {
		o.Key = DefaultKey
	}
	o.Key = strings.TrimRight(o.Key, "/")
	if o.Identity == "" {
		host, _ := os.Hostname()
		o.Identity = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if o.TTL == 0 {
		o.TTL = 10
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RetryMin == 0 {
		o.RetryMin = 500 * time.Millisecond
	}
	if o.RetryMax == 0 {
		o.RetryMax = 10 * time.Second
	}
}

// Elector campaigns for leadership. Create it with New and run it with Run.
type Elector struct {
	cli  *clientv3.Client
	opts Options
	log  *zap.Logger

	ttl      time.Duration
	margin   time.Duration // subtracted from send+TTL
	interval time.Duration // between own keepalives, also their timeout

	mu       sync.Mutex
	holding  bool      // this instance won and has not lost or resigned
	termNo   int64     // incremented at every win
	deadline time.Time // the lease is certainly alive before this instant
	subs     []func(bool)
	reported bool // last value given to subs
}

// New returns an elector using cli. It does nothing until Run.
func New(cli *clientv3.Client, opts Options) *Elector {
	opts.defaults()
	e := &Elector{cli: cli, opts: opts, log: opts.Log.With(zap.String("election", opts.Key), zap.String("identity", opts.Identity))}
	e.ttl = time.Duration(opts.TTL) * time.Second
	e.margin = e.ttl / 3
	// Several keepalives fit in the fencing window, so one lost or slow
	// keepalive does not drop leadership.
	e.interval = (e.ttl - e.margin) / 3
	return e
}

// Identity returns this instance's name in the election.
func (e *Elector) Identity() string { return e.opts.Identity }

// IsLeader reports whether this instance holds leadership and its lease is
// certainly still valid. It is cheap and safe for concurrent use; call it
// right before every apply.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.isLeaderLocked()
}

func (e *Elector) isLeaderLocked() bool {
	return e.holding && e.opts.Now().Before(e.deadline)
}

// OnChange registers f, called with the new value each time IsLeader's value
// changes (gained: the caller should reconcile now; lost). Calls come from
// Run's goroutine, in order, and must not block (e.g. a non-blocking send on
// a 1-buffered channel). The loss at the fencing deadline is reported within
// a few milliseconds of IsLeader turning false; IsLeader is the fence.
func (e *Elector) OnChange(f func(isLeader bool)) {
	e.mu.Lock()
	e.subs = append(e.subs, f)
	e.mu.Unlock()
}

// notify calls the subscribers if IsLeader changed since the last call, and
// returns when IsLeader will next turn false on its own (zero if it is false).
func (e *Elector) notify() time.Time {
	e.mu.Lock()
	now := e.isLeaderLocked()
	changed := now != e.reported
	e.reported = now
	subs := make([]func(bool), len(e.subs))
	copy(subs, e.subs)
	var next time.Time
	if now {
		next = e.deadline
	}
	e.mu.Unlock()
	if changed {
		e.log.Info("leadership changed", zap.Bool("leader", now))
		for _, f := range subs {
			f(now)
		}
	}
	return next
}

func (e *Elector) setHolding(h bool) {
	e.mu.Lock()
	if h && !e.holding {
		e.termNo++
	}
	e.holding = h
	e.mu.Unlock()
}

// Term returns the number of this instance's current (or last) term and
// whether it leads now (IsLeader). Work computed under one term must not be
// written under another: a leader paused across a loss and a new win would
// otherwise apply what it planned before another instance's changes.
func (e *Elector) Term() (int64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.termNo, e.isLeaderLocked()
}

// giveUpAt is when a holder past its fencing deadline ends its term: the
// deadline plus the margin, i.e. about a TTL after the send of the last
// successful keepalive, when the lease would have expired had the server
// not received any renewal since.
func (e *Elector) giveUpAt() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.deadline.Add(e.margin)
}

// extend records a successful grant or keepalive sent at sent.
func (e *Elector) extend(sent time.Time, ttlSeconds int64) {
	ttl := time.Duration(ttlSeconds) * time.Second
	if ttl > e.ttl {
		ttl = e.ttl // the server may round up; the smaller bound is still safe
	}
	d := sent.Add(ttl - e.margin)
	e.mu.Lock()
	if d.After(e.deadline) {
		e.deadline = d
	}
	e.mu.Unlock()
}

// Leader returns the identity of the current leader, or an error wrapping
// ErrNoLeader when there is none.
func (e *Elector) Leader(ctx context.Context) (string, error) {
	resp, err := e.cli.Get(ctx, e.opts.Key+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("election %s: get leader: %w", e.opts.Key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", fmt.Errorf("election %s: %w", e.opts.Key, ErrNoLeader)
	}
	return string(resp.Kvs[0].Value), nil
}

// Run campaigns, holds leadership while the lease lives, and campaigns again
// after a loss, backing off (capped) while etcd is unreachable. It never
// returns because etcd is down; it returns ctx.Err() when ctx ends, after
// resigning (bounded by a short timeout) if it was the leader. It returns an
// error at once for invalid options.
func (e *Elector) Run(ctx context.Context) error {
	if e.opts.TTL < 2 {
		return fmt.Errorf("election %s: ttl %ds: must be at least 2 seconds", e.opts.Key, e.opts.TTL)
	}
	if e.cli == nil {
		return fmt.Errorf("election %s: no etcd client", e.opts.Key)
	}
	backoff := e.opts.RetryMin
	var lastErr string
	for {
		started, err := e.term(ctx)
		e.setHolding(false)
		e.notify()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if started {
			backoff = e.opts.RetryMin // etcd answered: retry soon
		}
		if err != nil && err.Error() != lastErr {
			e.log.Warn("election term ended", zap.Error(err), zap.Duration("retry_in", backoff))
		}
		if err != nil {
			lastErr = err.Error()
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, e.opts.RetryMax)
	}
}

// term is one lease: grant, campaign, hold. started is true when etcd granted
// the lease. It always returns with the lease's goroutines stopped.
func (e *Elector) term(ctx context.Context) (started bool, err error) {
	termCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The deadline belongs to one lease: start this one's from scratch.
	e.mu.Lock()
	e.deadline = time.Time{}
	e.mu.Unlock()
	sent := e.opts.Now()
	gctx, gcancel := context.WithTimeout(termCtx, e.ttl)
	lease, err := e.cli.Grant(gctx, int64(e.opts.TTL))
	gcancel()
	if err != nil {
		return false, fmt.Errorf("election %s: grant lease: %w", e.opts.Key, err)
	}
	e.extend(sent, lease.TTL)
	log := e.log.With(zap.String("lease", fmt.Sprintf("%x", lease.ID)))
	defer e.revoke(log, lease.ID)

	lost := make(chan error, 1)
	renewed := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel (deferred later, runs first)
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.keepalive(termCtx, lease.ID, renewed, lost)
		cancel() // lease lost: stop the campaign or the hold at once
	}()

	// The session keeps its own keepalive stream on our lease; ours measures
	// send times for the fencing deadline.
	sess, err := concurrency.NewSession(e.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(e.opts.TTL),
		concurrency.WithContext(termCtx))
	if err != nil {
		return true, fmt.Errorf("election %s: session: %w", e.opts.Key, err)
	}
	defer sess.Orphan()
	// The campaign must stop the moment the lease is gone: our key vanishes
	// with it, and waiting for older keys would then "win" without a key.
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-sess.Done():
			cancel()
		case <-termCtx.Done():
		}
	}()

	key, rev, waited, err := e.campaign(termCtx, lease.ID)
	if err != nil {
		return true, err
	}
	log = log.With(zap.String("key", key))
	if waited {
		// An older candidate's key went (resigned, lease expired or
		// revoked, deleted by hand). If it was the leader, it learns that
		// from the same etcd event its watch of its own key gets, at about
		// the moment ours did; a loaded host may deliver it a few
		// milliseconds later (seen under -race: TestLeaseRevokedNoTwoLeaders).
		// Lead only handoverGrace after it, so that both never lead at once.
		t := time.NewTimer(handoverGrace)
		select {
		case <-t.C:
		case <-termCtx.Done():
			t.Stop()
			return true, fmt.Errorf("election %s: session ended before the hand-over", e.opts.Key)
		}
	}
	e.setHolding(true)
	// Deferred last, so it runs first: the term is over the moment term
	// returns (key deleted, lease lost, deadline given up), and another
	// candidate may already have won. IsLeader must turn false before the
	// slow cleanup below (waiting for the goroutines, revoking the lease,
	// up to a second with a slow etcd), not after it.
	defer func() {
		e.setHolding(false)
		e.notify()
	}()
	next := e.notify()
	if !e.IsLeader() {
		log.Warn("won the election with a lease past its fencing deadline; waiting for a keepalive")
	}

	wch := e.cli.Watch(termCtx, key, clientv3.WithRev(rev+1))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	// arm wakes the loop at the fencing deadline while leading, and past
	// it, at the end of the grace after it: a holder whose keepalives
	// keep failing gives the election up then (see giveUp).
	arm := func(next time.Time) {
		timer.Stop()
		if next.IsZero() {
			next = e.giveUpAt()
		}
		timer.Reset(max(next.Sub(e.opts.Now()), 0))
	}
	arm(next)
	for {
		select {
		case <-termCtx.Done():
			if ctx.Err() != nil {
				e.resign(log, sess, key, rev)
				return true, ctx.Err()
			}
			select {
			case err := <-lost:
				return true, err
			default:
			}
			return true, fmt.Errorf("election %s: session ended (lease expired or etcd unreachable)", e.opts.Key)
		case <-renewed:
			arm(e.notify())
		case <-timer.C:
			// The deadline passed without a keepalive: IsLeader is already
			// false; tell the subscribers.
			next := e.notify()
			if next.IsZero() && !e.opts.Now().Before(e.giveUpAt()) {
				// Still no keepalive a grace later. The lease may live on
				// (the session's stream, or keepalives whose answers come
				// too late), and with it our key: nobody else could win
				// while we cannot lead. End the term (the lease is
				// revoked) and campaign again.
				return true, fmt.Errorf("election %s: no keepalive succeeded for %v past the fencing deadline; giving up the election",
					e.opts.Key, e.margin)
			}
			arm(next)
		case wr, ok := <-wch:
			if !ok {
				wch = nil // ctx ended: handled above
				continue
			}
			if err := wr.Err(); err != nil {
				// The watch is only a second line of defence (the lease
				// is the first); keep leading without it.
				log.Warn("watch of own election key failed", zap.Error(err))
				wch = nil
				continue
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					return true, fmt.Errorf("election %s: own key %s deleted", e.opts.Key, key)
				}
			}
		}
	}
}

// campaign puts our key and waits until every older candidate's key is gone,
// as concurrency.Election.Campaign does, but without its cleanup on cancel,
// which resigns with the client's context and so blocks for as long as etcd
// is unreachable. Our key dies with the lease (or is revoked by term).
//
// waited reports whether an older candidate's key was there and went.
func (e *Elector) campaign(ctx context.Context, id clientv3.LeaseID) (key string, rev int64, waited bool, err error) {
	prefix := e.opts.Key + "/"
	key = fmt.Sprintf("%s%x", prefix, id)
	cctx, cancel := context.WithTimeout(ctx, e.ttl)
	resp, err := e.cli.Txn(cctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, e.opts.Identity, clientv3.WithLease(id))).
		Else(clientv3.OpGet(key)).Commit()
	cancel()
	if err != nil {
		return "", 0, false, fmt.Errorf("election %s: put candidate key: %w", e.opts.Key, err)
	}
	rev = resp.Header.Revision
	if !resp.Succeeded {
		rev = resp.Responses[0].GetResponseRange().Kvs[0].CreateRevision
	}
	// Wait for the deletion of every key created before ours.
	for {
		gctx, cancel := context.WithTimeout(ctx, e.ttl)
		older, err := e.cli.Get(gctx, prefix, append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(rev-1))...)
		cancel()
		if err != nil {
			return "", 0, false, fmt.Errorf("election %s: list candidates: %w", e.opts.Key, err)
		}
		if len(older.Kvs) == 0 {
			break
		}
		if err := e.waitDelete(ctx, string(older.Kvs[0].Key), older.Header.Revision); err != nil {
			return "", 0, false, err
		}
		waited = true
	}
	// Our key must still be there, on our lease: it vanishes if the lease
	// expired while we waited.
	gctx, gcancel := context.WithTimeout(ctx, e.ttl)
	own, err := e.cli.Get(gctx, key)
	gcancel()
	if err != nil {
		return "", 0, false, fmt.Errorf("election %s: check own key: %w", e.opts.Key, err)
	}
	if len(own.Kvs) == 0 || own.Kvs[0].Lease != int64(id) || own.Kvs[0].CreateRevision != rev {
		return "", 0, false, fmt.Errorf("election %s: own key %s lost while campaigning", e.opts.Key, key)
	}
	return key, rev, waited, nil
}

func (e *Elector) waitDelete(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// From rev+1: the Get at rev saw the key, any later delete is an event.
	for wr := range e.cli.Watch(wctx, key, clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return fmt.Errorf("election %s: watch %s: %w", e.opts.Key, key, err)
		}
		for _, ev := range wr.Events {
			if ev.Type == mvccpb.DELETE {
				return nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("election %s: watch %s ended", e.opts.Key, key)
}

// keepalive refreshes the lease every interval, each call bounded by the
// interval, and extends the fencing deadline from the send time of each
// success. It reports a lease the server no longer has on lost and returns.
func (e *Elector) keepalive(ctx context.Context, id clientv3.LeaseID, renewed chan<- struct{}, lost chan<- error) {
	t := time.NewTimer(e.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sent := e.opts.Now()
		kctx, cancel := context.WithTimeout(ctx, e.interval)
		resp, err := e.cli.KeepAliveOnce(kctx, id)
		cancel()
		switch {
		case err == nil && resp.TTL > 0:
			e.extend(sent, resp.TTL)
			select {
			case renewed <- struct{}{}:
			default:
			}
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0):
			select {
			case lost <- fmt.Errorf("election %s: lease %x expired", e.opts.Key, id):
			default:
			}
			return
		}
		// Other errors (timeouts, etcd down): keep trying; the deadline
		// runs out on its own.
		t.Reset(e.interval)
	}
}

// resign gives up leadership at once (ctx ended) so another instance need
// not wait for the lease to expire. Bounded: etcd may be unreachable.
func (e *Elector) resign(log *zap.Logger, sess *concurrency.Session, key string, rev int64) {
	e.setHolding(false)
	e.notify()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := concurrency.ResumeElection(sess, e.opts.Key, key, rev).Resign(ctx); err != nil {
		log.Warn("resign failed; the lease will expire", zap.Error(err))
		return
	}
	log.Info("resigned")
}

// revoke ends the lease (best effort, bounded) so a candidate key left over
// from a lost term does not delay the next election by a TTL.
func (e *Elector) revoke(log *zap.Logger, id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := e.cli.Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		log.Debug("revoke lease failed; it will expire", zap.Error(err))
	}
}

package patroni

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// WatcherOptions tune a Watcher. Zero values take the defaults.
type WatcherOptions struct {
	// ResyncInterval is how often the whole prefix is listed again even when
	// the watch looks healthy (default 30s). Patroni refreshes the leader key
	// through its lease only, which produces no watch event, so a watcher
	// that silently lost events would otherwise stay wrong forever.
	ResyncInterval time.Duration
	// ProbeInterval is how often etcd is probed for liveness (default 2s).
	ProbeInterval time.Duration
	// MaxBackoff caps the delay between failed attempts (default 5s).
	MaxBackoff time.Duration
	// RequestTimeout bounds each list and probe (default 3s).
	RequestTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (o *WatcherOptions) defaults() {
	if o.ResyncInterval <= 0 {
		o.ResyncInterval = 30 * time.Second
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = 2 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 3 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// minBackoff is the first retry delay; it doubles up to MaxBackoff.
const minBackoff = 100 * time.Millisecond

// errResync ends a watch for the periodic full re-list.
var errResync = errors.New("periodic resync")

// Watcher keeps a complete, decoded view of one Patroni namespace in etcd.
//
// Contract of Run, in the manner of Prometheus service discovery:
//   - It first lists the whole prefix and sends one complete Snapshot.
//   - It then watches the prefix from the list's revision + 1 and, after each
//     watch response (pending responses are coalesced), sends a new complete
//     Snapshot of every cluster: never a delta. Only the clusters whose
//     keys changed are decoded again; the others keep their ClusterState
//     (same pointer) from the previous snapshot.
//   - A cluster whose config key is absent or cannot be decoded keeps the
//     dynamic config flags of its last value that decoded, as Patroni does
//     (ClusterState.ConfigKept), across re-lists, until the cluster's last
//     key is gone.
//   - A compacted, cancelled or closed watch, or any error, makes it list
//     again with capped exponential backoff, retried until it works (it never
//     gives up while ctx lives). It also lists again every ResyncInterval.
//   - A probe every ProbeInterval keeps Status current, so a consumer can
//     tell a stale view (Connected false, old LastContact) from a quiet one.
//   - Every send selects on ctx.Done(). Run never closes out, and returns
//     ctx.Err() once ctx is cancelled, after all its goroutines have ended.
//   - The maps of a sent Snapshot are never touched again by the Watcher,
//     nor is any ClusterState it sent (they are shared between snapshots:
//     consumers must not modify them either).
//
// A Watcher is run by one Run call at a time; Status may be called from any
// goroutine.
type Watcher struct {
	cli    *clientv3.Client
	ns     string
	prefix string
	log    *zap.Logger
	opts   WatcherOptions

	mu      sync.Mutex
	status  WatchStatus
	lastLog string // last error logged, so a persisting error is logged once
	// watchCtx is the context of the running watch (nil between watches):
	// CatchUp asks for progress on its stream.
	watchCtx context.Context

	// caught is the revision up to which every event of the prefix has been
	// handed to out: a list's, a progress notification's (etcd sends one
	// to a watcher only once it has sent every event up to it), or the
	// last event's own (events come in revision order). An event
	// response's header revision is no such bound: etcd sends a lagging
	// watcher's events in batches, each stamped with the store's current
	// revision.
	caught atomic.Int64

	// testHookAfterList, when set, runs after each successful list, before
	// the watch starts (tests use it to compact etcd behind the watcher).
	testHookAfterList func(rev int64)
}

// NewWatcher returns a Watcher of namespace (e.g. "/pg"; a trailing slash is
// ignored) through cli. The caller owns cli and closes it after Run returns.
func NewWatcher(cli *clientv3.Client, namespace string, log *zap.Logger, opts WatcherOptions) *Watcher {
	opts.defaults()
	if log == nil {
		log = zap.NewNop()
	}
	ns := NormalizeNamespace(namespace)
	return &Watcher{
		cli:    cli,
		ns:     ns,
		prefix: ns + "/",
		log:    log.With(zap.String("namespace", ns)),
		opts:   opts,
	}
}

// Status reports the health of the watcher's view. It is safe to call from
// any goroutine.
func (w *Watcher) Status() WatchStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

// Run lists, watches and re-lists until ctx is cancelled, sending complete
// snapshots to out (see the Watcher contract). It returns ctx.Err().
func (w *Watcher) Run(ctx context.Context, out chan<- Snapshot) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.probeLoop(ctx)
	}()

	fails := 0
	// One decoder across re-lists: a cluster whose keys a re-list finds
	// unchanged keeps its decoded state.
	dec := newDecoder(w.ns)
	for {
		if fails > 0 {
			if err := w.sleep(ctx, w.backoff(fails)); err != nil {
				return err
			}
		}
		rev, cache, err := w.list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fails++
			w.failed("list", err)
			continue
		}
		if w.testHookAfterList != nil {
			w.testHookAfterList(rev)
		}
		dec.reset(cache)
		if err := w.send(ctx, out, dec, rev); err != nil {
			return err
		}
		w.caughtUp(rev)
		start := w.opts.Now()
		progressed, err := w.watch(ctx, out, dec, rev)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errResync) {
			fails = 0
			w.mu.Lock()
			w.status.Resyncs++
			w.mu.Unlock()
			continue
		}
		// A watch that delivered something or lived a while was healthy:
		// restart it promptly. One that keeps failing at once backs off.
		if progressed || w.opts.Now().Sub(start) > w.opts.MaxBackoff {
			fails = 0
		}
		fails++
		w.mu.Lock()
		w.status.Restarts++
		w.mu.Unlock()
		w.failed("watch", err)
	}
}

// backoff is the delay before attempt n+1 after n consecutive failures:
// none after the first (a compacted watch should re-list at once), then
// minBackoff doubling up to MaxBackoff.
func (w *Watcher) backoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := minBackoff
	for i := 2; i < n && d < w.opts.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, w.opts.MaxBackoff)
}

func (w *Watcher) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// list reads the whole prefix into a fresh cache.
func (w *Watcher) list(ctx context.Context) (int64, map[string]KV, error) {
	lctx, cancel := context.WithTimeout(ctx, w.opts.RequestTimeout)
	defer cancel()
	resp, err := w.cli.Get(lctx, w.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, nil, fmt.Errorf("list %s: %w", w.prefix, err)
	}
	w.contact()
	cache := make(map[string]KV, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		cache[string(kv.Key)] = fromPB(kv)
	}
	return resp.Header.Revision, cache, nil
}

// watch follows the prefix from rev+1, keeping dec current and sending a
// snapshot after each batch of responses. It returns errResync when the
// resync timer fires, or why the watch ended; progressed reports whether any
// event arrived.
func (w *Watcher) watch(ctx context.Context, out chan<- Snapshot, dec *decoder, rev int64) (progressed bool, err error) {
	// WithRequireLeader makes a member cut off from its cluster end the watch
	// instead of leaving us on a partitioned member's stale data.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// No WithPrevKV: nothing reads the previous values, and etcd looks each
	// one up in its backend, one event after another, before it sends the
	// events (a mass failover's 5,000 key changes at 1,000 clusters).
	wch := w.cli.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	w.mu.Lock()
	w.watchCtx = wctx
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.watchCtx = nil
		w.mu.Unlock()
	}()
	resync := time.NewTimer(w.opts.ResyncInterval)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return progressed, ctx.Err()
		case <-resync.C:
			return progressed, errResync
		case resp, ok := <-wch:
			if !ok {
				return progressed, errors.New("watch channel closed")
			}
			changed := false
			// upTo: the last progress notification's revision, or the
			// last event's.
			var upTo int64
			for {
				if err := resp.Err(); err != nil {
					return progressed, fmt.Errorf("watch %s from revision %d: %w", w.prefix, rev+1, err)
				}
				if resp.Canceled {
					return progressed, fmt.Errorf("watch %s cancelled", w.prefix)
				}
				w.contact()
				for _, ev := range resp.Events {
					changed = true
					upTo = max(upTo, ev.Kv.ModRevision)
					switch ev.Type {
					case clientv3.EventTypePut:
						dec.put(fromPB(ev.Kv))
					case clientv3.EventTypeDelete:
						dec.del(string(ev.Kv.Key))
					}
				}
				if resp.Header.Revision > rev {
					rev = resp.Header.Revision
				}
				if resp.IsProgressNotify() {
					upTo = max(upTo, resp.Header.Revision)
				}
				// Coalesce what is already waiting: each snapshot is complete,
				// so a slow consumer only needs the newest.
				var more bool
				select {
				case resp, more = <-wch:
				default:
				}
				if !more {
					break
				}
			}
			if changed {
				progressed = true
				if err := w.send(ctx, out, dec, rev); err != nil {
					return progressed, err
				}
			}
			// (Every event up to upTo was in this batch or an earlier one:
			// handed out now.)
			w.caughtUp(upTo)
		}
	}
}

// caughtUp notes that every event up to rev has been handed out. Only
// Run's goroutine writes caught (CatchUp reads it).
func (w *Watcher) caughtUp(rev int64) {
	if rev > w.caught.Load() {
		w.caught.Store(rev)
	}
}

// catchUpEvery is how often CatchUp asks etcd again for a progress
// notification while it waits (etcd drops a request that finds the watch
// still sending older events).
const catchUpEvery = 20 * time.Millisecond

// CatchUp returns once the watcher has handed out every event of its
// prefix up to etcd's current revision (read when called, linearizable),
// with the revision of the last snapshot it sent then; or ctx's error, or
// etcd's. When the last write was of the prefix, its event tells; else it
// asks for progress notifications on the running watch's stream. A
// snapshot sent is not yet observed: the consumer compares the revision
// returned with what it took.
//
// What it is for: under load etcd delivers a burst's events hundreds of
// ms after they were written (a mass failover's new leaders, written in
// 0.25 s, reached the controller 0.5 s after the last write), and a
// consumer that takes a pause in the events for the end of the burst
// applies its first half alone.
func (w *Watcher) CatchUp(ctx context.Context) (int64, error) {
	resp, err := w.cli.Get(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("read the revision of %s: %w", w.prefix, err)
	}
	target := resp.Header.Revision
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	var asked time.Time
	for {
		if w.caught.Load() >= target {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.status.Revision, nil
		}
		if time.Since(asked) >= catchUpEvery {
			asked = time.Now()
			w.mu.Lock()
			wctx := w.watchCtx
			w.mu.Unlock()
			if wctx != nil {
				// Through the watch's own context (its stream is found by
				// the context's metadata), bounded by ctx too: a stream
				// the request made itself, were the watch gone meanwhile,
				// ends with it.
				rctx, cancel := context.WithCancel(wctx)
				stop := context.AfterFunc(ctx, cancel)
				_ = w.cli.RequestProgress(rctx)
				stop()
				cancel()
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-poll.C:
		}
	}
}

// send decodes the clusters whose keys changed (all of them after a list)
// and hands the complete snapshot to out.
func (w *Watcher) send(ctx context.Context, out chan<- Snapshot, dec *decoder, rev int64) error {
	snap := Snapshot{Namespace: w.ns, Revision: rev, Clusters: dec.clusters(), At: w.opts.Now()}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case out <- snap:
	}
	w.mu.Lock()
	w.status.Revision = rev
	w.mu.Unlock()
	return nil
}

// probeLoop checks etcd every ProbeInterval with a cheap linearizable
// count-only read, which needs a quorum: a member cut off from its cluster
// fails it even though it still serves its (stale) data.
func (w *Watcher) probeLoop(ctx context.Context) {
	t := time.NewTicker(w.opts.ProbeInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, w.opts.RequestTimeout)
		_, err := w.cli.Get(pctx, w.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.failed("probe", err)
		} else {
			w.contact()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Watcher) contact() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.status.Connected && w.lastLog != "" {
		w.log.Info("etcd reachable again")
	}
	w.status.Connected = true
	w.status.LastContact = w.opts.Now()
	w.status.LastError = ""
	w.lastLog = ""
}

// failed records err; it logs only when the error changes, so a long etcd
// outage does not flood the log.
func (w *Watcher) failed(what string, err error) {
	msg := what + ": " + err.Error()
	w.mu.Lock()
	defer w.mu.Unlock()
	// A watch that ended because of compaction or resync does not mean etcd is
	// unreachable; the re-list that follows decides that.
	if what != "watch" {
		w.status.Connected = false
	}
	w.status.LastError = msg
	if msg != w.lastLog {
		w.lastLog = msg
		w.log.Warn("etcd watch degraded", zap.String("op", what), zap.Error(err))
	}
}

func fromPB(kv *mvccpb.KeyValue) KV {
	return KV{
		Key:            string(kv.Key),
		Value:          append([]byte(nil), kv.Value...),
		CreateRevision: kv.CreateRevision,
		ModRevision:    kv.ModRevision,
		Version:        kv.Version,
		Lease:          kv.Lease,
	}
}

// List reads namespace once and decodes it: the one-shot form of a watch,
// for commands such as `controller diff`.
func List(ctx context.Context, cli *clientv3.Client, namespace string) (map[string]*ClusterState, int64, error) {
	prefix := Prefix(namespace)
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", prefix, err)
	}
	kvs := make([]KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		kvs = append(kvs, fromPB(kv))
	}
	return Decode(namespace, kvs), resp.Header.Revision, nil
}

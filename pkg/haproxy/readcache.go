package haproxy

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// DefaultFullReadEvery is Options.FullReadEvery when zero.
const DefaultFullReadEvery = 10 * time.Minute

// readCache is what the driver knows of the running HAProxy between two
// full reads, so that an apply costs what changed instead of the fleet:
// reading `show stat` and `show servers state` of 18,000 servers and
// parsing the 2.6 MB file took ~0.6 s per apply at 1,000 clusters.
//
// A full read fills it; every successful runtime apply patches what it
// set (and read back); a reload empties it. It is used while
//   - the worker answering the stats socket is the same process (`show
//     info` Pid and Uptime_sec, procTable: a reload or restart, also one
//     not made by the controller, and one keeping the pid, as HAProxy in
//     its own pid namespace does, makes the next read a full one; a worker
//     that cannot be told apart, no Uptime_sec, is read whole every time),
//   - the controller's file has the size and modification time it left it
//     with (a hand edit is read),
//   - FullReadEvery has not elapsed since the last full read (what an
//     operator's `set server` changed at runtime is found by that read, and
//     repaired: repair_state).
//
// Live health (DOWN) is never cached: it is read, for the backends where a
// new primary may be forced UP or an old one forced DOWN, with one
// pipelined `show servers state B` per backend.
type readCache struct {
	mu sync.Mutex
	cacheState
	// gen counts the cache's states (each full read, each apply's patch).
	gen uint64
}

type cacheState struct {
	snap *snapshot
	// proc is the worker snap was read from (procTable).
	proc   procID
	size   int64
	mtime  time.Time
	fullAt time.Time
	// base is the desired state snap is in step with, as the last
	// successful apply (or one that found nothing to change) left it; nil
	// after a full read (see incremental.go).
	base []services.Service
}

// ReadStats counts how the driver read the running HAProxy.
type ReadStats struct {
	Full, Cached int64
}

// Reads returns the read counters.
func (d *Direct) Reads() ReadStats {
	d.cache.mu.Lock()
	defer d.cache.mu.Unlock()
	return d.reads
}

// readFor returns the running state for an apply of desired: the cached
// one (plus live health where desired may force a server UP) when still
// valid, else a full read.
func (d *Direct) readFor(ctx context.Context, desired []services.Service) (*snapshot, error) {
	snap, health, err := d.readBase(ctx, desired)
	if err != nil {
		return nil, err
	}
	if err := d.readHealth(ctx, snap, health); err != nil {
		return nil, err
	}
	return snap, nil
}

// readBase is readFor without the live health of a cached snapshot: it
// returns the backends whose health readHealth is to read into snap (their
// servers are snap's own copies); none after a full read, which has it.
func (d *Direct) readBase(ctx context.Context, desired []services.Service) (*snapshot, []string, error) {
	if err := d.check(); err != nil {
		return nil, nil, err
	}
	proc, perr := d.worker(ctx)
	fi, ferr := os.Stat(d.opts.ConfigPath)
	d.cache.mu.Lock()
	c := d.cache.cacheState
	gen := d.cache.gen
	why := "" // why the cache cannot be used ("": it can)
	switch {
	case c.snap == nil:
		why = "first read"
	case perr != nil:
		why = "show info: " + perr.Error()
	case proc != c.proc:
		why = fmt.Sprintf("the running HAProxy changed (%s -> %s)", c.proc, proc)
	case ferr != nil || fi.Size() != c.size || !fi.ModTime().Equal(c.mtime):
		why = "the config file changed"
	case time.Since(c.fullAt) >= d.opts.FullReadEvery:
		why = "periodic full read"
	}
	valid := why == ""
	snap := c.snap
	d.cache.mu.Unlock()
	if !valid {
		if why != "first read" {
			d.log.Info("reading the whole running HAProxy", zap.String("why", why))
		}
		full, err := d.read(ctx)
		if err != nil {
			return nil, nil, err
		}
		// The worker the full read belongs to: a reload or a restart
		// between the two reads only makes the next read full again.
		fi, ferr := os.Stat(d.opts.ConfigPath)
		d.cache.mu.Lock()
		d.reads.Full++
		d.cache.base = nil
		d.cache.gen++
		full.gen = d.cache.gen
		if perr == nil {
			d.cache.snap, d.cache.proc, d.cache.fullAt = full.clone(), proc, time.Now()
			d.cache.size, d.cache.mtime = 0, time.Time{}
			if ferr == nil {
				d.cache.size, d.cache.mtime = fi.Size(), fi.ModTime()
			}
		} else {
			d.cache.snap = nil
		}
		d.cache.mu.Unlock()
		if perr == nil {
			full.proc = proc
		}
		return full, nil, nil
	}
	d.cache.mu.Lock()
	d.reads.Cached++
	d.cache.mu.Unlock()
	out := &snapshot{current: make(map[string]*target.Backend, len(snap.current)), file: snap.file, cached: true, proc: proc,
		base: c.base, gen: gen}
	for k, b := range snap.current {
		out.current[k] = b
	}
	var health []string
	for _, s := range desired {
		if b := out.current[s.Name]; b != nil && target.WantsHealth(s) {
			health = append(health, s.Name)
			out.current[s.Name] = cloneBackend(b)
		}
	}
	return out, health, nil
}

// worker returns the worker answering the stats socket (procTable: its
// pid and its start time, from one `show info`). A worker whose answer has
// no Uptime_sec is an error: it could not be told from a restarted one
// with its pid, so nothing cached of it may be trusted.
func (d *Direct) worker(ctx context.Context) (procID, error) {
	w, err := d.rt.ShowWorker(ctx)
	if err != nil {
		return 0, err
	}
	if w.Uptime < 0 {
		return 0, fmt.Errorf("worker %d without Uptime_sec (a restart keeping its pid could not be told apart)", w.PID)
	}
	return d.procs.Identify(int64(w.PID), w.Uptime, w.Sent, w.Received), nil
}

// readHealth reads the live health (DOWN) of backends into snap (readBase).
func (d *Direct) readHealth(ctx context.Context, snap *snapshot, backends []string) error {
	if len(backends) == 0 {
		return nil
	}
	err := d.serversState(ctx, backends, func(st StateServer) {
		b := snap.current[st.Backend]
		if b == nil {
			return
		}
		if sv, ok := b.Servers[st.Server]; ok {
			sv.Down = st.OpState == 0 && AdminWord(st.AdminSt) != "maint"
			b.Servers[st.Server] = sv
		}
	})
	if err != nil {
		return fmt.Errorf("read health: %w", err)
	}
	return nil
}

// serversState runs `show servers state B` for each backend over one
// pipelined connection and calls fn with each server line, in order.
func (d *Direct) serversState(ctx context.Context, backends []string, fn func(StateServer)) error {
	cmds := make([]string, len(backends))
	for i, b := range backends {
		cmds[i] = "show servers state " + b
	}
	answers, err := d.rt.Pipeline(ctx, cmds)
	if err != nil {
		return err
	}
	for i, a := range answers {
		if !strings.HasPrefix(a, "1\n") {
			return fmt.Errorf("%s: %q", cmds[i], truncate(a, 120))
		}
		if err := EachServerState(a, func(st StateServer) bool { fn(st); return true }); err != nil {
			return fmt.Errorf("%s: %w", cmds[i], err)
		}
	}
	return nil
}

// keepCache puts back the cache taken (takeCache) before a runtime apply,
// patched with what the apply set and read back: the admin states, the
// weights, the file written (all: what it holds now).
func (d *Direct) keepCache(s cacheState, desired, all []services.Service, changes []target.Change) {
	if s.snap == nil {
		return
	}
	weightOf := desiredWeights(desired) // built at the first weight change
	cur := s.snap.current
	cloned := map[string]bool{}
	for _, c := range changes {
		b := cur[c.Backend]
		if b == nil {
			continue
		}
		if !cloned[c.Backend] {
			b = cloneBackend(b)
			cur[c.Backend] = b
			cloned[c.Backend] = true
		}
		sv, ok := b.Servers[c.Server]
		if !ok {
			continue
		}
		switch c.Kind {
		case target.KindSetState:
			sv.Admin = target.StateOf(c)
		case target.KindSetWeight:
			sv.Weight, _ = weightOf(c.Backend, c.Server)
		case target.KindResyncTracker:
			// In the state of the server it tracks now.
			if tb, tname, ok := strings.Cut(sv.Track, "/"); ok && cur[tb] != nil {
				if t, ok := cur[tb].Servers[tname]; ok {
					sv.Down = t.Down
				}
			}
		}
		b.Servers[c.Server] = sv
	}
	s.snap.file = all
	s.base = desired
	fi, err := os.Stat(d.opts.ConfigPath)
	if err != nil {
		return
	}
	s.size, s.mtime = fi.Size(), fi.ModTime()
	d.cache.mu.Lock()
	d.cache.cacheState = s
	d.cache.gen++
	d.cache.mu.Unlock()
}

// takeCache empties the cache and returns what it held (for keepCache).
func (d *Direct) takeCache() cacheState {
	d.cache.mu.Lock()
	defer d.cache.mu.Unlock()
	s := d.cache.cacheState
	d.cache.snap, d.cache.base = nil, nil
	d.cache.gen++
	return s
}

// forgetCache makes the next read a full one.
func (d *Direct) forgetCache() {
	d.cache.mu.Lock()
	d.cache.snap, d.cache.base = nil, nil
	d.cache.gen++
	d.cache.mu.Unlock()
}

func (s *snapshot) clone() *snapshot {
	out := &snapshot{current: make(map[string]*target.Backend, len(s.current)), file: s.file}
	for k, b := range s.current {
		out.current[k] = b
	}
	return out
}

func cloneBackend(b *target.Backend) *target.Backend {
	c := *b
	c.Servers = make(map[string]services.Server, len(b.Servers))
	for k, v := range b.Servers {
		c.Servers[k] = v
	}
	return &c
}

package haproxy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// DefaultStateFileRefresh is Options.StateFileRefresh when zero.
const DefaultStateFileRefresh = 5 * time.Second

// stateRefreshQuiet is how long a refresh of the server-state file waits
// after the apply that asked for it, so that the applies of one burst (a
// mass failover's) are dumped once: at most StateFileRefresh.
const stateRefreshQuiet = time.Second

// stateRefresher keeps the server-state file in step with what runtime
// applies change (health, admin states, weights), which the file otherwise
// carries only from the last reload: an HAProxy restarted after runtime
// failovers (a host reboot, `systemctl restart`, not made by the
// controller) would load the roles of before them: an old primary UP, a new
// one DOWN until its rise checks. A dump of a 1,000-cluster HAProxy is
// ~3 MB, so it is not made per apply: a runtime apply asks for one (want),
// which is made in the background stateRefreshQuiet later, at most once
// per every, and once more after the last apply of a burst; an apply never
// waits for one. Each refresh dumps `show servers state`, fixes it for the
// config file the last apply left (FixServersState: the twins' admin
// states, the fences, the weights, the trackers) and installs it
// atomically, under the driver's stateMu (a reload's own dump and reload
// never interleave with it).
type stateRefresher struct {
	every time.Duration
	// write makes one refresh, for what current returns then.
	write func() error
	log   *zap.Logger

	mu      sync.Mutex
	all     []services.Service // what the config file describes (nil: unknown)
	check   func() error
	pending bool // a refresh is wanted
	timer   *time.Timer
	running bool
	closed  bool
	last    time.Time // when the last refresh began
	done    sync.WaitGroup
	// began is when each refresh began (tests).
	began []time.Time
}

// want asks for a refresh of the state file for all, the services the
// config file now describes (check: the lease check of the apply). It
// returns at once.
func (r *stateRefresher) want(all []services.Service, check func() error) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all, r.check = all, check
	if r.closed {
		return
	}
	r.pending = true
	r.arm()
}

// setAll says what the config file describes now (a reload installed
// one; nil: unknown, no refresh is written until an apply says) without
// asking for a refresh.
func (r *stateRefresher) setAll(all []services.Service) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.all = all
	r.mu.Unlock()
}

// arm starts the timer of the next refresh unless one is set or running:
// stateRefreshQuiet from now, and not before every since the last began.
// r.mu is held.
func (r *stateRefresher) arm() {
	if r.timer != nil || r.running {
		return
	}
	wait := stateRefreshQuiet
	if wait > r.every {
		wait = r.every
	}
	if !r.last.IsZero() {
		if next := time.Until(r.last.Add(r.every)); next > wait {
			wait = next
		}
	}
	r.timer = time.AfterFunc(wait, r.fire)
}

// fire makes the refresh asked for, then arms the next one if an apply
// asked again meanwhile.
func (r *stateRefresher) fire() {
	r.mu.Lock()
	r.timer = nil
	if r.closed || !r.pending || r.running {
		r.mu.Unlock()
		return
	}
	r.pending, r.running, r.last = false, true, time.Now()
	r.began = append(r.began, r.last)
	r.done.Add(1)
	r.mu.Unlock()
	defer r.done.Done()
	r.refresh()
	r.mu.Lock()
	r.running = false
	if r.pending && !r.closed {
		r.arm()
	}
	r.mu.Unlock()
}

// refresh writes the state file for the services last wanted (read under
// the caller's stateMu, through write, so that a reload in between is
// seen).
func (r *stateRefresher) refresh() {
	start := time.Now()
	if err := r.write(); err != nil {
		r.log.Warn("could not refresh the server-state file after runtime changes; an HAProxy restart would load older states (the next runtime apply tries again)",
			zap.Error(err))
		return
	}
	r.log.Debug("refreshed the server-state file", zap.Duration("took", time.Since(start)))
}

// current is what the next refresh is for: the services the config file
// describes, and the lease check of the apply that said so.
func (r *stateRefresher) current() ([]services.Service, func() error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.all, r.check
}

// close stops the refresher: a refresh still wanted is made now, one under
// way is waited for, none is made after.
func (r *stateRefresher) close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	flush := r.pending // (also when one is under way: it may have read older services)
	r.pending = false
	r.mu.Unlock()
	r.done.Wait()
	if flush {
		r.mu.Lock()
		r.began = append(r.began, time.Now())
		r.mu.Unlock()
		r.refresh()
	}
}

// Close stops the driver's background work: the server-state file refresh
// still wanted after the last runtime apply is made now. The driver makes
// no refresh after it (applies still work).
func (d *Direct) Close() error {
	d.refresh.close()
	return nil
}

// refreshStateFile dumps the running HAProxy's server states and installs
// them, fixed for the services the config file describes (the refresher's
// last), as the state file. Under stateMu: never between a reload's dump
// and its reload.
func (d *Direct) refreshStateFile() error {
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	all, check := d.refresh.current()
	if all == nil {
		return nil // unknown since a failed reload: the next apply says
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.ReloadTimeout)
	defer cancel()
	// The fixed file is streamed into the temp file (a 1,000-cluster
	// dump, right after a mass failover: no copy of it is built).
	fix, err := d.dumpStateFix(ctx, all)
	if err != nil {
		return err
	}
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	if err := writeAtomicFunc(d.opts.ServerStateFile, 0o600, fix.writeTo); err != nil {
		return fmt.Errorf("write server state file: %w", err)
	}
	return nil
}

// dumpStateFix dumps the running servers' states (`show servers state`)
// and checks them for the state file of all, which its writeTo streams
// fixed (FixServersState).
func (d *Direct) dumpStateFix(ctx context.Context, all []services.Service) (*stateFix, error) {
	dump, err := d.rt.ShowServersState(ctx)
	if err != nil {
		return nil, fmt.Errorf("dump server state: %w", err)
	}
	fix, err := newStateFix(dump, all)
	if err != nil {
		return nil, fmt.Errorf("dump server state: %w", err)
	}
	return fix, nil
}

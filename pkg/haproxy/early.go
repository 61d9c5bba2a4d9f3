package haproxy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// earlyFlips returns the set_state changes of the services that take no
// writes (a check that is not /primary-like) and want no live health,
// diffed against snap before its health is read: those depend on no health
// and bring no primary UP, so no write fence need precede them. None unless
// snap is in step with a base of desired's shape (a full diff may also
// remove services), or when any change of those services is not a flip (a
// server added or removed: the apply may reload, and everything goes in
// order). The diff of these services does not depend on the health read
// (readHealth and forcedUp.settle touch only services that want it), so
// the apply's own diff finds the same changes for them.
func (d *Direct) earlyFlips(snap *snapshot, desired []services.Service) []target.Change {
	base := snap.base
	if base == nil || len(base) != len(desired) {
		return nil
	}
	var out []target.Change
	var tracking map[string]bool // backends with a tracking twin
	for i := range desired {
		s := &desired[i]
		if services.WriteCheck(s.Check) || target.WantsHealth(*s) || services.Equal(&base[i], s) {
			continue
		}
		for _, c := range target.Diff(snap.current, desired[i:i+1]) {
			if c.Kind != target.KindSetState {
				return nil
			}
			if target.StateOf(c) != "ready" {
				if tracking == nil {
					tracking = target.TrackingBackends(desired)
				}
				if tracking[c.Backend] {
					// Its incoming server may be a tracker that comes UP
					// with a force-up: after it (Apply).
					continue
				}
			}
			out = append(out, c)
		}
	}
	return out
}

// startEarlyFlips starts the early flips (earlyFlips) of an apply whose
// snapshot still needs the live health of the backends health (a cached
// read): over a connection of their own, activations first then
// deactivations (per backend, as every apply does), then their read-back
// (verifyStates of the servers they flip), while the caller reads the health,
// fences and flips the rest. took gets how long they took (flips and
// read-back) before the wait returns. It returns them and a function that waits for
// them to end and returns their error (the same each call; nothing to wait
// for when none were started). The read cache is emptied first (taken:
// what it held is returned, for keepCache): until the apply keeps what it
// did, the next read is a full one.
func (d *Direct) startEarlyFlips(ctx context.Context, snap *snapshot, health []string, desired []services.Service, took *time.Duration) ([]target.Change, *cacheState, func() error) {
	none := func() error { return nil }
	if !snap.cached || len(health) == 0 {
		return nil, nil, none
	}
	early := d.earlyFlips(snap, desired)
	if len(early) == 0 {
		return nil, nil, none
	}
	if err := target.CheckWrite(ctx); err != nil {
		return nil, nil, func() error { return err }
	}
	saved := d.takeCache()
	ups, downs := flipsOf(early)
	for _, f := range append(ups[:len(ups):len(ups)], downs...) {
		d.earlyFlipped = append(d.earlyFlipped, f.Backend+"/"+f.Server)
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		err := d.rt.SetStates(ctx, ups)
		if err == nil {
			err = d.rt.SetStates(ctx, downs)
		}
		if err != nil {
			err = fmt.Errorf("apply set_state (services that take no writes): %w", err)
		} else {
			// Only the servers flipped here: the deactivations of a
			// backend with a tracker wait for the apply's force-ups, and
			// a read of the whole backend would find them still ready
			// and "repair" them now, before the tracker is UP.
			err = d.verifyStates(ctx, desired, early, true, nil)
		}
		*took = time.Since(start)
		if d.earlyEnded != nil {
			d.earlyEnded()
		}
		done <- err
	}()
	var once sync.Once
	var ferr error
	return early, &saved, func() error {
		once.Do(func() { ferr = <-done })
		return ferr
	}
}

// withoutFlips drops from changes the set_state changes of done's servers.
func withoutFlips(changes, done []target.Change) []target.Change {
	if len(done) == 0 {
		return changes
	}
	skip := make(map[[2]string]bool, len(done))
	for _, c := range done {
		skip[[2]string{c.Backend, c.Server}] = true
	}
	out := make([]target.Change, 0, len(changes))
	for _, c := range changes {
		if c.Kind == target.KindSetState && skip[[2]string{c.Backend, c.Server}] {
			continue
		}
		out = append(out, c)
	}
	return out
}

// splitTracked splits deactivations into those of backends without a
// tracking twin and those of backends with one (sent after the force-ups).
func splitTracked(downs []Flip, desired []services.Service) (plain, tracked []Flip) {
	if len(downs) == 0 {
		return downs, nil
	}
	tracking := target.TrackingBackends(desired)
	if len(tracking) == 0 {
		return downs, nil
	}
	for _, f := range downs {
		if tracking[f.Backend] {
			tracked = append(tracked, f)
		} else {
			plain = append(plain, f)
		}
	}
	return plain, tracked
}

// splitWrite splits deactivations into those of write services
// (services.WriteCheck: the outgoing twins go first there, with the write
// fences) and the others.
func splitWrite(downs []Flip, desired []services.Service) (write, rest []Flip) {
	if len(downs) == 0 {
		return nil, downs
	}
	isWrite := make(map[string]bool, len(desired))
	for i := range desired {
		if services.WriteCheck(desired[i].Check) {
			isWrite[desired[i].Name] = true
		}
	}
	for _, f := range downs {
		if isWrite[f.Backend] {
			write = append(write, f)
		} else {
			rest = append(rest, f)
		}
	}
	return write, rest
}

// writeFlipsNow returns the flips of the write services' twins of an apply
// that reloads, to be made at once in the running worker (fenceAndFlip),
// which serves until the new one does and keeps its sessions after: left
// for the state file alone, an old primary's outgoing twin would take new
// writes in the old worker until the reload is done, and keep its sessions
// there. The deactivations of servers cur has (the running worker's
// servers; a new one exists only in the new worker); the activations of
// servers cur has in backends whose changes are all runtime changes (the
// server the old worker has is the one desired has). The new worker starts
// them as the state file says, which fixes every twin's admin state
// (FixServersState).
func writeFlipsNow(changes []target.Change, desired []services.Service, cur map[string]*target.Backend) (leave, enter []Flip) {
	ups, downs := flipsOf(changes)
	if len(ups)+len(downs) == 0 {
		return nil, nil
	}
	downs, _ = splitWrite(downs, desired)
	ups, _ = splitWrite(ups, desired)
	has := func(f Flip) bool {
		b := cur[f.Backend]
		if b == nil {
			return false
		}
		_, ok := b.Servers[f.Server]
		return ok
	}
	for _, f := range downs {
		if has(f) {
			leave = append(leave, f)
		}
	}
	if len(ups) == 0 {
		return leave, nil
	}
	structural := map[string]bool{} // backends with a change no runtime command makes
	for _, c := range changes {
		if !c.Runtime {
			structural[c.Backend] = true
		}
	}
	for _, f := range ups {
		if has(f) && !structural[f.Backend] {
			enter = append(enter, f)
		}
	}
	return leave, enter
}

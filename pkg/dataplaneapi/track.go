package dataplaneapi

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/haproxytech/client-native/v5/models"
	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// noteTrackers adds to the pending resyncs (Target.pendingTrackers) the
// servers of desired that track another (services.Server.Track) and that
// changes write into the file: added, or turned from servers with their
// own check into trackers. Before the write: whatever becomes of its
// reload, they stay pending until a resync of the running HAProxy.
func (t *Target) noteTrackers(desired []services.Service, changes []target.Change) {
	written := map[string]bool{}
	for _, c := range changes {
		if c.Kind == target.KindAddServer || c.Kind == target.KindUpdateServer {
			written[c.Backend+"/"+c.Server] = true
		}
	}
	var keys []string
	for _, d := range desired {
		for _, sv := range d.Servers {
			if sv.Track != "" && written[d.Name+"/"+sv.Name] {
				keys = append(keys, d.Name+"/"+sv.Name)
			}
		}
	}
	t.notePending(keys, false)
}

// notePending adds "backend/server" keys to the pending resyncs; a read
// of the running HAProxy that finds trackers out of step with the servers
// they track (trackersOutOfStep) adds them too (found), and says so. A
// tracker a write made is resynced whatever a read says.
func (t *Target) notePending(keys []string, found bool) {
	if t.pendingTrackers == nil {
		t.pendingTrackers, t.foundTrackers = map[string]bool{}, map[string]bool{}
	}
	for _, k := range keys {
		if found && !t.pendingTrackers[k] {
			t.foundTrackers[k] = true
		} else if !found {
			delete(t.foundTrackers, k)
		}
		t.pendingTrackers[k] = true
	}
}

// PendingTrackers is how many trackers a configuration write made that no
// resync has put in step yet (resyncTrackers).
func (t *Target) PendingTrackers() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pendingTrackers)
}

// resyncTrackers puts the pending trackers (noteTrackers) still in
// desired through maint and back to ready, and forgets those it did and
// those desired no longer has. HAProxy starts a tracking server in the
// state its line of the server-state file says, and moves it only when
// the server it tracks changes state. The reload script dumps the running
// HAProxy, where a server turned into a tracker still checked for itself:
// a dump that caught it DOWN under a tracked server UP (or UP under one
// DOWN: a write to a member that is no primary) would leave it so for
// good. Leaving maint, a tracker takes the state of the server it tracks
// (both measured on HAProxy 2.6). Entering maint cuts the tracker's
// sessions (`on-marked-down shutdown-sessions`, measured on HAProxy 2.6):
// right for a tracker UP under a DOWN server (writes to a member that is
// no primary), needless for one in step, whose sessions it would cut. A
// read of the native stats is no atomic dump: a tracked server changing
// state while it is written makes a tracker in step look out of step. So
// the trackers only such a read found (foundTrackers) are read again
// first, their backends and those of the servers they track (one GET
// each, readParallel in flight), and one read `ready` and as UP or DOWN
// as the `ready` server it tracks is done without a resync (if that read
// fails, every one is resynced). The trackers a write made are resynced
// without a read: right after the reload, a read could still be answered
// by the worker that ran them as servers with checks of their own. Call
// only when the
// running HAProxy serves the file that has them: after a reload that
// succeeded before our eyes, or once confirmRunning found the running
// HAProxy serving desired (a reload still in progress at ReloadTimeout,
// a resync that failed: the next apply, whose diff is empty, does them).
// It returns a resync_tracker change for each tracker it resynced. Call
// with t.mu held.
func (t *Target) resyncTrackers(ctx context.Context, desired []services.Service) ([]target.Change, error) {
	if len(t.pendingTrackers) == 0 {
		return nil, nil
	}
	byBackend := map[string][]string{}
	for _, d := range desired {
		for _, sv := range d.Servers {
			if sv.Track != "" && t.pendingTrackers[d.Name+"/"+sv.Name] {
				byBackend[d.Name] = append(byBackend[d.Name], sv.Name)
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, t.opts.ReloadTimeout)
	defer cancel()
	var mu sync.Mutex
	found := map[string][]string{}
	for b, names := range byBackend {
		for _, name := range names {
			if t.foundTrackers[b+"/"+name] {
				found[b] = append(found[b], name)
			}
		}
	}
	done := map[string]bool{}
	if len(found) > 0 {
		done = t.trackersInStep(ctx, desired, found)
	}
	for b, names := range byBackend {
		var left []string
		for _, name := range names {
			if !done[b+"/"+name] {
				left = append(left, name)
			}
		}
		if len(left) == 0 {
			delete(byBackend, b)
		} else {
			byBackend[b] = left
		}
	}
	inStep := len(done)
	backends := make([]string, 0, len(byBackend))
	for b := range byBackend {
		backends = append(backends, b)
	}
	sort.Strings(backends)
	errs := eachParallel(backends, flipParallel, func(b string) error {
		for _, name := range byBackend[b] {
			for _, st := range []string{"maint", "ready"} {
				if err := t.putAdminWhenServed(ctx, b, name, st); err != nil {
					return fmt.Errorf("resync tracker %s/%s (%s): %w", b, name, st, err)
				}
			}
			mu.Lock()
			done[b+"/"+name] = true
			mu.Unlock()
		}
		return nil
	})
	// Forget the trackers resynced or read in step, and those desired no
	// longer has.
	left := map[string]bool{}
	for b, names := range byBackend {
		for _, name := range names {
			if !done[b+"/"+name] {
				left[b+"/"+name] = true
			}
		}
	}
	t.pendingTrackers = left
	for k := range t.foundTrackers {
		if !left[k] {
			delete(t.foundTrackers, k)
		}
	}
	var changes []target.Change
	for _, b := range backends {
		for _, name := range byBackend[b] {
			if done[b+"/"+name] {
				changes = append(changes, target.Change{Kind: target.KindResyncTracker, Backend: b, Server: name, Runtime: true,
					Detail: "maint, then ready: in the state of the server it tracks"})
			}
		}
	}
	if len(errs) > 0 {
		return changes, fmt.Errorf("%s (retried on the next apply)", strings.Join(errs, "; "))
	}
	t.log.Info("trackers checked against the servers they track", zap.Int("in_step", inStep),
		zap.Int("resynced", len(changes)), zap.Int("backends_resynced", len(backends)))
	return changes, nil
}

// trackersInStep reads the runtime servers of the backends of the
// trackers in byBackend and of the servers they track, and returns the
// trackers ("backend/server") read `ready` and UP or DOWN as the `ready`
// server they track: in step, no resync needed. A failed read returns
// none (every pending tracker is resynced).
func (t *Target) trackersInStep(ctx context.Context, desired []services.Service, byBackend map[string][]string) map[string]bool {
	track := map[string]string{} // "backend/server" -> the server it tracks
	for _, d := range desired {
		for _, sv := range d.Servers {
			if sv.Track != "" {
				track[d.Name+"/"+sv.Name] = sv.Track
			}
		}
	}
	read := map[string]bool{} // the backends to read
	for b, names := range byBackend {
		read[b] = true
		for _, name := range names {
			if tb, _, ok := strings.Cut(track[b+"/"+name], "/"); ok {
				read[tb] = true
			}
		}
	}
	rs, errs := t.runtimeServersMany(ctx, slices.Sorted(maps.Keys(read)))
	if len(errs) > 0 {
		t.log.Info("could not read the trackers before resyncing them; resyncing every pending one", zap.Strings("errors", errs))
		return map[string]bool{}
	}
	state := map[string]*models.RuntimeServer{}
	for b, servers := range rs {
		for _, r := range servers {
			if r != nil {
				state[b+"/"+r.Name] = r
			}
		}
	}
	done := map[string]bool{}
	for b, names := range byBackend {
		for _, name := range names {
			k := b + "/" + name
			mine, theirs := state[k], state[track[k]]
			if mine != nil && theirs != nil && mine.AdminState == "ready" && theirs.AdminState == "ready" &&
				(mine.OperationalState == "down") == (theirs.OperationalState == "down") {
				done[k] = true
			}
		}
	}
	return done
}

// putAdminWhenServed sets a server's runtime admin state, retrying while
// the running HAProxy does not have the server yet or answers another
// state (the API may answer before the new worker serves), until ctx ends.
func (t *Target) putAdminWhenServed(ctx context.Context, backend, name, state string) error {
	for {
		got, err := t.c.ReplaceRuntimeServer(ctx, backend, name, &models.RuntimeServer{AdminState: state})
		// Readied, a tracker still shows the maint or drain of the server
		// it tracks (a held new leader's drain): that is its state.
		if err == nil && (got.AdminState == state || state == "ready") {
			return nil
		}
		last := err
		if err == nil {
			last = fmt.Errorf("answered admin state %q", got.AdminState)
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(t.opts.ReloadPollInterval):
		}
	}
}

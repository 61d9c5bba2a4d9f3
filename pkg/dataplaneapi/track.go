package dataplaneapi

import (
	"context"
	"fmt"
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
	t.notePending(keys)
}

// notePending adds "backend/server" keys to the pending resyncs; a read
// of the running HAProxy that finds trackers out of step with the servers
// they track (trackersOutOfStep) adds them too, and says so.
func (t *Target) notePending(keys []string) {
	for _, k := range keys {
		if t.pendingTrackers == nil {
			t.pendingTrackers = map[string]bool{}
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
// (both measured on HAProxy 2.6); maint takes it out of new connections
// for that round trip only, and cuts no session. Call only when the
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
	backends := make([]string, 0, len(byBackend))
	for b := range byBackend {
		backends = append(backends, b)
	}
	sort.Strings(backends)
	ctx, cancel := context.WithTimeout(ctx, t.opts.ReloadTimeout)
	defer cancel()
	var mu sync.Mutex
	done := map[string]bool{}
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
	// Forget the trackers resynced, and those desired no longer has.
	left := map[string]bool{}
	for b, names := range byBackend {
		for _, name := range names {
			if !done[b+"/"+name] {
				left[b+"/"+name] = true
			}
		}
	}
	t.pendingTrackers = left
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
	t.log.Info("resynchronized trackers with the servers they track (maint, then ready)", zap.Int("servers", len(done)), zap.Int("backends", len(backends)))
	return changes, nil
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

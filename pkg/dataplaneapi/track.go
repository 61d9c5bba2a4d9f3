package dataplaneapi

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/haproxytech/client-native/v5/models"
	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// newTrackers returns, by backend, the servers of desired that track
// another (services.Server.Track) and that changes writes into the file:
// added, or turned from servers with their own check into trackers.
func newTrackers(desired []services.Service, changes []target.Change) map[string][]string {
	written := map[string]bool{}
	for _, c := range changes {
		if c.Kind == target.KindAddServer || c.Kind == target.KindUpdateServer {
			written[c.Backend+"/"+c.Server] = true
		}
	}
	var out map[string][]string
	for _, d := range desired {
		for _, sv := range d.Servers {
			if sv.Track != "" && written[d.Name+"/"+sv.Name] {
				if out == nil {
					out = map[string][]string{}
				}
				out[d.Name] = append(out[d.Name], sv.Name)
			}
		}
	}
	return out
}

// resyncTrackers puts the trackers a reload wrote (newTrackers) through
// maint and back to ready. HAProxy starts a tracking server in the state
// its line of the server-state file says, and moves it only when the
// server it tracks changes state. The reload script dumps the running
// HAProxy, where a server turned into a tracker still checked for itself:
// a dump that caught it DOWN under a tracked server UP (or UP under one
// DOWN: a write to a member that is no primary) would leave it so for
// good. Leaving maint, a tracker takes the state of the server it tracks
// (both measured on HAProxy 2.6); maint takes it out of new connections
// for that round trip only, and cuts no session. Only after a reload that
// succeeded (the new worker serves the file).
func (t *Target) resyncTrackers(ctx context.Context, res target.Result, desired []services.Service, changes []target.Change) error {
	byBackend := newTrackers(desired, changes)
	if len(byBackend) == 0 || !res.Reloaded || res.ReloadResult != "succeeded" {
		return nil
	}
	backends := make([]string, 0, len(byBackend))
	for b := range byBackend {
		backends = append(backends, b)
	}
	sort.Strings(backends)
	ctx, cancel := context.WithTimeout(ctx, t.opts.ReloadTimeout)
	defer cancel()
	errs := eachParallel(backends, flipParallel, func(b string) error {
		for _, name := range byBackend[b] {
			for _, st := range []string{"maint", "ready"} {
				if err := t.putAdminWhenServed(ctx, b, name, st); err != nil {
					return fmt.Errorf("resync tracker %s/%s (%s): %w", b, name, st, err)
				}
			}
		}
		return nil
	})
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	n := 0
	for _, s := range byBackend {
		n += len(s)
	}
	t.log.Info("resynchronized the new trackers with the servers they track (maint, then ready)", zap.Int("servers", n), zap.Int("backends", len(backends)))
	return nil
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

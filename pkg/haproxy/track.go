package haproxy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// trackersOutOfStep returns a resync_tracker change for every tracking
// server of desired (services.Server.Track) that a full read (cur) finds
// UP while the server it tracks is DOWN, or DOWN while it is UP. HAProxy
// starts a tracker in the state its line of the server-state file says and
// moves it only when the tracked server changes state (measured on HAProxy
// 2.6), so a reload or restart the driver did not make, from a state file
// another tool dumped before the trackers existed (or wrote by hand), can
// leave Pigsty's default service without its primary, or sending writes to
// a replica, for good. The driver's own reloads write each tracker's line
// from the server it tracks (FixServersState). Servers in maint or drain
// (either side) are left alone: their UP/DOWN is not what HAProxy routes
// by. Pure; the changes are sorted by backend and server.
func trackersOutOfStep(cur map[string]*target.Backend, desired []services.Service) []target.Change {
	var out []target.Change
	for _, d := range desired {
		b := cur[d.Name]
		if b == nil {
			continue
		}
		for _, sv := range d.Servers {
			if sv.Track == "" {
				continue
			}
			mine, ok := b.Servers[sv.Name]
			tb, tname, found := strings.Cut(sv.Track, "/")
			if !ok || !found || cur[tb] == nil || mine.Track != sv.Track {
				continue // not a tracker of that server in what runs
			}
			theirs, ok := cur[tb].Servers[tname]
			if !ok || mine.Admin != "ready" || theirs.Admin != "ready" || mine.Down == theirs.Down {
				continue
			}
			out = append(out, target.Change{Kind: target.KindResyncTracker, Backend: d.Name, Server: sv.Name, Runtime: true,
				Detail: fmt.Sprintf("%s while %s is %s: put in the state of the server it tracks",
					upDown(mine.Down), sv.Track, upDown(theirs.Down))})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Backend != out[j].Backend {
			return out[i].Backend < out[j].Backend
		}
		return out[i].Server < out[j].Server
	})
	return out
}

func upDown(down bool) string {
	if down {
		return "DOWN"
	}
	return "UP"
}

// resyncTrackers puts the trackers of the resync_tracker changes through
// maint and back to ready, pipelined over one connection: leaving maint, a
// tracker takes the state of the server it tracks (measured on HAProxy
// 2.6). Entering maint cuts its sessions (`on-marked-down
// shutdown-sessions`, measured on HAProxy 2.6 for a tracker and for a
// checked server): what a tracker UP under a DOWN server must have (writes
// to a member that is no primary); one DOWN under an UP server has none.
// So only trackers read out of step twice are resynced
// (withTrackerResyncs).
func (d *Direct) resyncTrackers(ctx context.Context, changes []target.Change) error {
	var flips []Flip
	for _, c := range changes {
		if c.Kind == target.KindResyncTracker {
			flips = append(flips, Flip{Backend: c.Backend, Server: c.Server, State: "maint"},
				Flip{Backend: c.Backend, Server: c.Server, State: "ready"})
		}
	}
	if len(flips) == 0 {
		return nil
	}
	if err := d.rt.SetStates(ctx, flips); err != nil {
		return fmt.Errorf("resync trackers: %w", err)
	}
	d.log.Info("resynchronized trackers with the servers they track (maint, then ready)", zap.Int("servers", len(flips)/2))
	return nil
}

// withTrackerResyncs adds to changes the resyncs of trackers a full read
// (snap not from the cache) found out of step, and says so. `show stat`
// is no atomic dump: a tracked server that changes state while it is
// written (its row before, its tracker's after) looks out of step with a
// tracker that is not, and a resync cuts a tracker's sessions. So the
// backends of those found are read again (`show servers state`, one
// pipelined command each) and only the trackers still out of step are
// resynced.
func (d *Direct) withTrackerResyncs(ctx context.Context, snap *snapshot, desired []services.Service, changes []target.Change) ([]target.Change, error) {
	if snap.cached {
		return changes, nil
	}
	found := trackersOutOfStep(snap.current, desired)
	if len(found) == 0 {
		return changes, nil
	}
	rs, err := d.stillOutOfStep(ctx, snap, desired, found)
	if err != nil {
		return nil, fmt.Errorf("read again the trackers found out of step: %w", err)
	}
	if len(rs) == 0 {
		return changes, nil
	}
	names := make([]string, 0, len(rs))
	for _, c := range rs {
		names = append(names, c.Backend+"/"+c.Server)
	}
	d.log.Warn("trackers out of step with the servers they track in the running HAProxy (a reload or restart the controller did not make?); resyncing them",
		zap.Strings("servers", names))
	return append(changes, rs...), nil
}

// stillOutOfStep reads the backends of the trackers found (and of the
// servers they track) again and returns those of found still out of step.
func (d *Direct) stillOutOfStep(ctx context.Context, snap *snapshot, desired []services.Service, found []target.Change) ([]target.Change, error) {
	read := map[string]bool{} // the backends to read
	for _, c := range found {
		read[c.Backend] = true
		if tb, _, ok := strings.Cut(snap.current[c.Backend].Servers[c.Server].Track, "/"); ok {
			read[tb] = true
		}
	}
	again := map[string]*target.Backend{}
	err := d.serversState(ctx, slices.Sorted(maps.Keys(read)), func(st StateServer) {
		b := again[st.Backend]
		if b == nil {
			b = &target.Backend{Name: st.Backend, Servers: map[string]services.Server{}}
			again[st.Backend] = b
		}
		admin := AdminWord(st.AdminSt)
		sv := services.Server{Name: st.Server, Admin: admin, Down: st.OpState == 0 && admin != "maint"}
		if old, ok := snap.current[st.Backend]; ok {
			sv.Track = old.Servers[st.Server].Track // the file's: not in `show servers state`
		}
		b.Servers[st.Server] = sv
	})
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, c := range found {
		want[c.Backend+"/"+c.Server] = true
	}
	var out []target.Change
	for _, c := range trackersOutOfStep(again, desired) {
		if want[c.Backend+"/"+c.Server] {
			out = append(out, c)
		}
	}
	return out, nil
}

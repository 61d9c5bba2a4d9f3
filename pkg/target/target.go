// Package target defines what the controller needs from one HAProxy it keeps
// in step (a Data Plane API or a local HAProxy driven directly), and the pure
// diff between what an HAProxy has and what the controller wants.
package target

import (
	"context"
	"time"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// Target is one HAProxy the controller keeps in step.
//
// Contract: Apply is idempotent and makes the HAProxy serve exactly the given
// services (frontend+backend pairs named Service.Name) with exactly the given
// servers; it only touches sections whose names are in desired (it never
// deletes other sections) and it applies one reconcile as one unit (one
// transaction / one reload, or runtime-only commands when that suffices).
// On error nothing is half-applied: the HAProxy keeps its previous config.
// Implementations are safe for use by one goroutine at a time. The caller
// never modifies desired (its services, their server lists) once handed to
// Diff or Apply: targets may keep it and compare the next desired with it.
type Target interface {
	// Name identifies the target in logs and status; it never contains credentials.
	Name() string
	// Diff reads the HAProxy and returns the changes Apply would make now.
	Diff(ctx context.Context, desired []services.Service) ([]Change, error)
	// Apply makes the changes (if any) and reports what it did.
	Apply(ctx context.Context, desired []services.Service) (Result, error)
}

// Batcher is implemented by targets whose applies are long enough at
// fleet scale (seconds of API requests) that starting one in the middle of
// a burst of DCS events costs the rest of the burst a whole apply more:
// the controller lets such a target's apply of a burst wait until the
// burst ends (see burstClusters in package controller). A lone change
// never waits.
type Batcher interface {
	BatchBursts() bool
}

// BatchesBursts reports whether t (or the target it wraps) is a Batcher
// that asks for it.
func BatchesBursts(t Target) bool {
	b, ok := t.(Batcher)
	return ok && b.BatchBursts()
}

// Change kinds.
const (
	KindCreateService = "create_service" // frontend+backend pair added
	KindUpdateService = "update_service" // bind/check/balance/maxconn/default-server changed
	KindAddServer     = "add_server"
	KindRemoveServer  = "remove_server"
	KindUpdateServer  = "update_server" // address/port/check port/backup changed (needs reload)
	KindSetWeight     = "set_weight"    // runtime-capable
	KindForceUp       = "force_up"      // runtime only: health UP now (a new primary)
	KindForceDown     = "force_down"    // runtime only: health DOWN now and sessions cut (the old primary, fenced)
	KindSetState      = "set_state"     // runtime only: a twin's admin state (ready/drain/maint)
	// runtime only: a tracker put through maint and back to ready, which
	// puts it in the state of the server it tracks (after the reload that
	// made it a tracker, or found out of step with that server)
	KindResyncTracker = "resync_tracker"
	// the running HAProxy does not serve its configuration file (a reload
	// failed or was lost): the file is right, a reload is due (a diff's
	// finding; Backend and Server empty, Detail what differs)
	KindReloadRunning = "reload_running"
)

// Change is one difference between an HAProxy and the desired services.
type Change struct {
	Kind    string `json:"kind"`
	Backend string `json:"backend"`
	Server  string `json:"server,omitempty"`
	// Detail says what changes, e.g. "backup false -> true".
	Detail string `json:"detail"`
	// Runtime is true when the change can be applied without a reload.
	Runtime bool `json:"runtime"`
	// Held marks a force_down of a new leader held until it is read-write
	// (services.Server.HoldDown), as opposed to a write fence: drivers
	// that hold by admin state (the Data Plane API's drain) tell them
	// apart by it, never by the Detail text.
	Held bool `json:"held,omitempty"`
}

// Result is what one Apply did.
type Result struct {
	Changes []Change `json:"changes"`
	// Reloaded is true when HAProxy was (or was scheduled to be) reloaded.
	Reloaded bool `json:"reloaded"`
	// ReloadID is the Data Plane API reload id (or the direct driver's reload counter).
	ReloadID string `json:"reload_id,omitempty"`
	// ReloadResult is "succeeded", "failed", "in_progress" or "" (no reload).
	ReloadResult string `json:"reload_result,omitempty"`
	// Version is the configuration version after the apply (0 when unknown).
	Version int64 `json:"version,omitempty"`
	// StatePreserved reports whether this HAProxy keeps server state across
	// reloads (server-state-file + load-server-state-from-file); nil = unknown.
	StatePreserved *bool         `json:"state_preserved,omitempty"`
	Duration       time.Duration `json:"duration_ns"`
	// ForcedUp is when the force_up changes were made (zero when none): an
	// apply with a reload goes on long after.
	ForcedUp time.Time `json:"forced_up,omitempty"`
	// ForcedDown is when the force_down changes reached HAProxy (zero when
	// none).
	ForcedDown time.Time `json:"forced_down,omitempty"`
	// Deferred is how many changes of desired the apply left out on
	// purpose, and RetryIn when they are due: the caller applies desired
	// again then (a newer desired state sooner) and does not report the
	// target in sync meanwhile.
	Deferred int           `json:"deferred,omitempty"`
	RetryIn  time.Duration `json:"-"`
	// MovedAt is when every change that moves traffic had been made, in an
	// apply whose last changes move none (the deactivations of a crashed
	// member's twins, which HAProxy's checks have DOWN); zero otherwise (the
	// apply's end).
	MovedAt time.Time `json:"moved_at,omitempty"`
}

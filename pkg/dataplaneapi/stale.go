package dataplaneapi

import (
	"context"

	"go.uber.org/zap"
)

// Stale transactions.
//
// The driver holds at most one transaction per HAProxy and deletes it on any
// failure, but a controller killed (kill -9, OOM, power) between opening and
// committing one leaves it open: it counts against the API's limit of 20 and
// costs the API memory (~180 MB each at 1,000 clusters).
//
// Transactions carry no owner, so the driver deletes only those that can no
// longer be committed by anybody: in progress, opened at a configuration
// version older than the current one (a commit would answer 406 outdated).
// That is safe with other writers too: their outdated transaction was dead
// already. One the controller left at the current version becomes outdated
// at the next committed change (its own next write, or anyone's), and the
// pass that follows deletes it. The passes run after successful applies,
// from the first one after start, and stop once no in-progress transaction
// is left at all (a GET /transactions per configuration version until then;
// none after). A 429 (the limit of open transactions reached, possibly by
// such orphans) runs a pass at once before backing off.

type staleState struct {
	done        bool
	lastVersion int64
}

// cleanStale runs a pass when one is due at version; failures are logged,
// never fail the apply.
func (t *Target) cleanStale(ctx context.Context, version int64) {
	if t.stale.done || version <= 0 || version == t.stale.lastVersion {
		return
	}
	t.stale.lastVersion = version
	left, err := t.deleteOutdatedTransactions(ctx, version)
	if err != nil {
		t.log.Warn("could not check for transactions left open by an earlier run", zap.Error(err))
		return
	}
	if left == 0 {
		t.stale.done = true
	}
}

// cleanStaleNow deletes the outdated in-progress transactions at once (the
// API answered 429); it returns how many it deleted.
func (t *Target) cleanStaleNow(ctx context.Context) int {
	v, err := t.c.GetVersion(ctx)
	if err != nil {
		return 0
	}
	before, err := t.c.ListTransactions(ctx)
	if err != nil {
		return 0
	}
	open := 0
	for _, x := range before {
		if x != nil && x.Status == "in_progress" {
			open++
		}
	}
	left, err := t.deleteOutdatedTransactions(ctx, v)
	if err != nil {
		return 0
	}
	return open - left
}

// deleteOutdatedTransactions deletes the in-progress transactions opened at
// a version below current; it returns how many in-progress ones remain.
func (t *Target) deleteOutdatedTransactions(ctx context.Context, current int64) (int, error) {
	txns, err := t.c.ListTransactions(ctx)
	if err != nil {
		return 0, err
	}
	left := 0
	for _, x := range txns {
		if x == nil || x.Status != "in_progress" {
			continue
		}
		if x.Version >= current {
			left++
			continue
		}
		if err := t.c.DeleteTransaction(ctx, x.ID); err != nil && !IsNotFound(err) {
			t.log.Warn("could not delete an outdated transaction", zap.String("transaction", x.ID), zap.Int64("opened_at_version", x.Version), zap.Error(err))
			left++
			continue
		}
		t.log.Warn("deleted a transaction left open (outdated: opened at an older configuration version, e.g. by a controller killed mid-apply)",
			zap.String("transaction", x.ID), zap.Int64("opened_at_version", x.Version), zap.Int64("version", current))
	}
	return left, nil
}

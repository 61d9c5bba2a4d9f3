package dataplaneapi

import (
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// syncState is what a successful apply left in sync: every service of
// desired, as the parsed configuration snap and the admin states cache at
// generation gen (HAProxy process pid: its procTable id, its pid and start
// time) have them. An apply whose read finds the same snapshot (its
// version did not move), the same process and the admin cache changed
// only by the answers of our own PUTs can leave out of its view and diff
// the services equal to those (services.Equal: the same server list, as
// the twin layout hands over unchanged services): the diff of a service
// depends on nothing else but live health, and services forcing a server
// UP or DOWN are never left out. One switchover among
// 1,000 clusters then builds and diffs the few services that changed, not
// 4,000 (~20 ms of CPU and ~10 MB of garbage per apply).
type syncState struct {
	snap    *snapshot
	gen     uint64
	pid     int64
	desired []services.Service
}

// keepSynced records desired as in sync after a successful apply. Call
// with t.mu held.
func (t *Target) keepSynced(desired []services.Service) {
	t.snapMu.Lock()
	sn := t.snap
	t.snapMu.Unlock()
	t.admin.mu.Lock()
	gen, apid := t.admin.gen, t.admin.pid
	t.admin.mu.Unlock()
	if sn == nil || t.applyPID == 0 || apid != t.applyPID {
		return
	}
	t.synced = &syncState{snap: sn, gen: gen, pid: t.applyPID, desired: desired}
}

// cleanServices marks (by index) the services of desired an apply can
// leave out (see syncState), or returns nil. now (unix nanoseconds) is the
// time readAdmins decides a periodic full read with: none is due when this
// leaves services out.
func (t *Target) cleanServices(sn *snapshot, desired []services.Service, pa pidAnswer, apply bool, now int64) []bool {
	prev := t.syncPrev
	if !apply || prev == nil || prev.snap != sn || pa.err != nil || pa.pid != prev.pid {
		return nil
	}
	a := &t.admin
	a.mu.Lock()
	ok := a.gen == prev.gen && a.pid == pa.pid && a.states != nil && !a.noInfo && now-a.fullAt < int64(t.opts.AdminReadEvery)
	a.mu.Unlock()
	if !ok {
		return nil
	}
	skip := make([]bool, len(desired))
	for i := range desired {
		d := &desired[i]
		if i < len(prev.desired) && services.Equal(&prev.desired[i], d) && !target.WantsHealth(*d) {
			skip[i] = true
		}
	}
	return skip
}

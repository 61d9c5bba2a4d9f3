package haproxy

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// An apply among 1,000 clusters where one cluster changed validated and
// diffed 4,000 services (~7 ms of CPU, the O(fleet) part of a switchover's
// apply). The driver keeps the last desired it validated and the one the
// read cache is in step with (cacheState.base), and validates and diffs
// only the services that differ from them, plus those whose live health
// decides a change (target.WantsHealth). Target's contract says desired is
// never modified once handed over, so comparing with the kept slices is
// sound; services.Equal compares every field Validate and Diff read.
// TestIncrementalSameAsFull runs random applies with the full computation
// alongside (Direct.checkIncremental).

// checkChanged is haproxycfg.Check(desired) when prev (a desired that
// passed it) is nil or has other names, binds or length; else it validates
// only the services that differ from prev's at the same index. The names
// and binds being prev's, the checks across services (a name twice, binds
// that collide) give what they gave prev: nothing.
func checkChanged(prev, desired []services.Service) error {
	if prev == nil || len(prev) != len(desired) {
		return haproxycfg.Check(desired)
	}
	var errs []error
	for i := range desired {
		a, b := &prev[i], &desired[i]
		if services.Equal(a, b) {
			continue
		}
		if a.Name != b.Name || a.IP != b.IP || a.Port != b.Port {
			return haproxycfg.Check(desired)
		}
		// The same errors, in the same order, as Validate of the whole
		// (the others passed it in prev; the names are prev's, none
		// twice), without a copy of the changed services (a mass
		// failover changes all 4,000 of 1,000 clusters).
		if err := services.ValidateService(b); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// diff is target.Diff(snap.current, desired), computed for the services
// that differ from snap.base (the desired the cache is in step with) or
// want live health only: Diff describes each service on its own, in
// desired's order, and a service equal to base's has nothing to change
// (keepCache patched in what its apply set and read back). The full Diff
// when snap.base is nil (a full read, a failed apply) or has other length.
func (d *Direct) diff(snap *snapshot, desired []services.Service) ([]target.Change, error) {
	base := snap.base
	if base == nil || len(base) != len(desired) {
		return target.Diff(snap.current, desired), nil
	}
	d.incremental++
	var out []target.Change
	for i := range desired {
		if services.Equal(&base[i], &desired[i]) && !target.WantsHealth(desired[i]) {
			continue
		}
		out = append(out, target.Diff(snap.current, desired[i:i+1])...)
	}
	if d.checkIncremental {
		full := target.Diff(snap.current, desired)
		if !reflect.DeepEqual(full, out) && (len(full) > 0 || len(out) > 0) {
			return nil, fmt.Errorf("internal: incremental diff %v, full diff %v", out, full)
		}
	}
	return out, nil
}

// inStep records that the running HAProxy, as the read cache has it, serves
// desired (an apply found nothing to change), when the cache is still the
// one snap came from.
func (d *Direct) inStep(snap *snapshot, desired []services.Service) {
	d.cache.mu.Lock()
	defer d.cache.mu.Unlock()
	if d.cache.snap != nil && d.cache.gen == snap.gen {
		d.cache.base = desired
	}
}

package dataplaneapi

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// healthOfMany returns "backend/server" -> DOWN (checks failing, not in
// maintenance) for the servers of every backend of sn where a new primary
// may be forced UP or an old one forced DOWN (live health matters nowhere
// else): one runtime GET per
// such backend, readParallel in flight. (One GET /stats/native answers every
// server of the HAProxy, but at 1,000 clusters it took 10 s through the
// API: O(fleet); a mass failover forces 2 backends per cluster, a
// switchover 2.)
func (t *Target) healthOfMany(ctx context.Context, sn *snapshot, desired []services.Service) (map[string]bool, error) {
	var backends []string
	for _, d := range desired {
		if target.WantsHealth(d) && sn.be[d.Name] != nil {
			backends = append(backends, d.Name)
		}
	}
	if len(backends) == 0 {
		return nil, nil
	}
	start := time.Now()
	rs, errs := t.runtimeServersMany(ctx, backends)
	if len(errs) > 0 {
		return nil, fmt.Errorf("read the health of the backends forcing a primary up: %s", strings.Join(errs, "; "))
	}
	out := map[string]bool{}
	for b, servers := range rs {
		for _, r := range servers {
			out[b+"/"+r.Name] = r.OperationalState == "down" && r.AdminState != "maint"
		}
	}
	if took := time.Since(start); took > time.Second {
		t.log.Info("read the health of the backends forcing a primary up", zap.Int("backends", len(backends)), zap.Duration("took", took))
	}
	return out, nil
}

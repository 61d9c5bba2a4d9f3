package dataplaneapi

import (
	"context"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// healthManyFrom is how many backends whose new primary may be forced UP
// make one read of every server's health (GET /stats/native) cheaper than
// one runtime read per backend (a mass failover: 2 per cluster).
const healthManyFrom = 4

// healthOfMany returns "backend/server" -> DOWN (checks failing, not in
// maintenance) for every server, from one read of the native stats, when
// at least healthManyFrom desired backends want it; nil otherwise or when
// the stats cannot be read (then each backend is read on its own).
func (t *Target) healthOfMany(ctx context.Context, desired []services.Service) map[string]bool {
	n := 0
	for _, d := range desired {
		if wantsForceUp(d) {
			n++
		}
	}
	if n < healthManyFrom {
		return nil
	}
	start := time.Now()
	stats, err := t.c.runningStats(ctx)
	if took := time.Since(start); took > time.Second {
		t.log.Info("read every server's health (native stats)", zap.Int("backends_forcing_up", n), zap.Duration("took", took))
	}
	if err != nil {
		t.log.Debug("native stats unavailable; reading runtime servers per backend", zap.Error(err))
		return nil
	}
	out := make(map[string]bool, len(stats))
	for _, s := range stats {
		if s.Type == "server" {
			out[s.BackendName+"/"+s.Name] = strings.HasPrefix(s.Stats.Status, "DOWN")
		}
	}
	return out
}

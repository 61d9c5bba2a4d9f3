package dataplaneapi

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// healthOfMany returns "backend/server" -> DOWN (checks failing, not in
// maintenance) for the servers of every desired backend where a new
// primary may be forced UP: one runtime GET per such backend, readParallel
// in flight. (One GET /stats/native answers every server of the HAProxy,
// but at 1,000 clusters it took 10 s through the API: O(fleet); a mass
// failover forces 2 backends per cluster, a switchover 2.) nil when there
// are none, or when a read failed (then read reads each backend again).
func (t *Target) healthOfMany(ctx context.Context, desired []services.Service) map[string]bool {
	var backends []string
	for _, d := range desired {
		if wantsForceUp(d) {
			backends = append(backends, d.Name)
		}
	}
	if len(backends) == 0 {
		return nil
	}
	start := time.Now()
	out := map[string]bool{}
	var mu sync.Mutex
	var errs []string
	var wg sync.WaitGroup
	sem := make(chan struct{}, readParallel)
	for _, b := range backends {
		wg.Add(1)
		sem <- struct{}{}
		go func(b string) {
			defer wg.Done()
			defer func() { <-sem }()
			rs, err := t.c.GetRuntimeServers(ctx, b)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", b, err))
				return
			}
			for _, r := range rs {
				if r != nil {
					out[b+"/"+r.Name] = r.OperationalState == "down" && r.AdminState != "maint"
				}
			}
		}(b)
	}
	wg.Wait()
	if len(errs) > 0 {
		sort.Strings(errs)
		t.log.Debug("reading health failed; reading again per backend", zap.String("errors", strings.Join(errs, "; ")))
		return nil
	}
	if took := time.Since(start); took > time.Second {
		t.log.Info("read the health of the backends forcing a primary up", zap.Int("backends", len(backends)), zap.Duration("took", took))
	}
	return out
}

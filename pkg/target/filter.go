package target

import (
	"context"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// OnlyClusters wraps t so that it is given only the services of the named
// clusters: Pigsty runs one HAProxy per member carrying its own cluster's
// services, or a pg_service_provider group carrying a chosen set. With no
// names, t is returned as is (every cluster).
func OnlyClusters(t Target, clusters []string) Target {
	if len(clusters) == 0 {
		return t
	}
	set := make(map[string]bool, len(clusters))
	for _, c := range clusters {
		set[c] = true
	}
	return &filtered{Target: t, clusters: set}
}

type filtered struct {
	Target
	clusters map[string]bool
}

func (f *filtered) keep(in []services.Service) []services.Service {
	out := make([]services.Service, 0, len(in))
	for _, s := range in {
		if f.clusters[s.Cluster] {
			out = append(out, s)
		}
	}
	return out
}

func (f *filtered) Diff(ctx context.Context, desired []services.Service) ([]Change, error) {
	return f.Target.Diff(ctx, f.keep(desired))
}

func (f *filtered) Apply(ctx context.Context, desired []services.Service) (Result, error) {
	return f.Target.Apply(ctx, f.keep(desired))
}

package app

import (
	"fmt"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/placement"
	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// DataPlaneAPITarget is one Data Plane API the controller drives: an
// explicit dataplaneapi entry, or one node of a template entry (URL with
// {host}).
type DataPlaneAPITarget struct {
	// Field names the config entry, e.g. dataplaneapi[1].
	Field string
	// Host is the inventory node a template entry expanded for ("" for an
	// explicit entry).
	Host  string
	URL   string
	Entry config.DataPlaneAPI
	// Clusters the target carries (nil = every cluster: an explicit entry
	// without clusters).
	Clusters []string
}

// ExpandDataPlaneAPI turns the dataplaneapi entries into targets: explicit
// entries as they are; each template entry into one target per inventory
// node whose HAProxy carries services, as Pigsty places them (see package
// placement), limited to the entry's clusters when it lists some. Clusters
// placed on the same node must not bind the same port; a template must not
// expand to a Data Plane API another entry drives. The warnings are placement oddities worth
// logging.
func ExpandDataPlaneAPI(cfg *config.Config, inv *topology.Inventory) ([]DataPlaneAPITarget, []string, error) {
	var out []DataPlaneAPITarget
	var warnings []string
	var placed *placement.Result
	var byCluster map[string][]services.Service
	for i, d := range cfg.DataPlaneAPI {
		field := fmt.Sprintf("dataplaneapi[%d]", i)
		if !d.IsTemplate() {
			out = append(out, DataPlaneAPITarget{Field: field, URL: d.URL, Entry: d, Clusters: d.Clusters})
			continue
		}
		if placed == nil {
			r, err := placement.ForInventory(inv)
			if err != nil {
				return nil, nil, err
			}
			placed = &r
			warnings = r.Warnings
			p, err := plan.Compute(inv, nil, plan.Options{})
			if err != nil {
				return nil, nil, err
			}
			byCluster = map[string][]services.Service{}
			for _, c := range p.Clusters {
				byCluster[c.Name] = c.Services
			}
		}
		keep := map[string]bool{}
		for _, c := range d.Clusters {
			keep[c] = true
		}
		var mine placement.Result
		for _, n := range placed.Nodes {
			var cs []string
			for _, c := range n.Clusters {
				if len(keep) == 0 || keep[c] {
					cs = append(cs, c)
				}
			}
			if len(cs) > 0 {
				mine.Nodes = append(mine.Nodes, placement.Node{Host: n.Host, Clusters: cs})
			}
		}
		if err := placement.Check(mine, byCluster); err != nil {
			return nil, nil, fmt.Errorf("%s: %s.url: inventory %s: %w", cfg.File, field, inv.File, err)
		}
		if len(mine.Nodes) == 0 {
			warnings = append(warnings, fmt.Sprintf("%s: the inventory places no cluster on any node: no target from this entry", field))
		}
		for _, n := range mine.Nodes {
			out = append(out, DataPlaneAPITarget{Field: field, Host: n.Host, URL: d.ExpandURL(n.Host), Entry: d, Clusters: n.Clusters})
		}
	}
	seen := map[string]DataPlaneAPITarget{}
	for _, t := range out {
		u, err := url.Parse(t.URL)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %s.url: %s: %w", cfg.File, t.Field, config.Redact(t.URL), err)
		}
		key := strings.ToLower(u.Scheme + "://" + u.Host + strings.TrimRight(u.Path, "/"))
		if prev, dup := seen[key]; dup && (t.Host != "" || prev.Host != "") {
			return nil, nil, fmt.Errorf("%s: %s: %s is also %s: two entries would drive the same Data Plane API", cfg.File, t.describe(), key, prev.describe())
		}
		if _, dup := seen[key]; !dup {
			seen[key] = t
		}
	}
	return out, warnings, nil
}

func (t DataPlaneAPITarget) describe() string {
	if t.Host == "" {
		return t.Field
	}
	return t.Field + " (host " + t.Host + ")"
}

// TargetsKey identifies the expanded targets (URL and clusters of each); an
// inventory reload that changes it needs a restart.
func TargetsKey(ts []DataPlaneAPITarget) string {
	var b strings.Builder
	for _, t := range ts {
		fmt.Fprintf(&b, "%s %s %s\n", t.Field, t.URL, strings.Join(t.Clusters, ","))
	}
	return b.String()
}

// BuildTargets builds every HAProxy target of the config: the Data Plane API
// entries (templates expanded against inv) and the direct HAProxies.
func BuildTargets(cfg *config.Config, inv *topology.Inventory, log *zap.Logger) ([]target.Target, error) {
	dp, warnings, err := ExpandDataPlaneAPI(cfg, inv)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		log.Warn("inventory placement", zap.String("warning", w))
	}
	return buildTargets(cfg, dp, log)
}

func newDataPlaneAPITargets(cfg *config.Config, dp []DataPlaneAPITarget, log *zap.Logger) ([]target.Target, error) {
	var out []target.Target
	for _, t := range dp {
		c, err := dataplaneapi.New(t.URL, dataplaneapi.Options{Username: t.Entry.Username, PasswordFile: t.Entry.PasswordFile, APIVersion: t.Entry.APIVersion})
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", cfg.File, t.describe(), err)
		}
		var tg target.Target = dataplaneapi.NewTarget(c, log, dataplaneapi.TargetOptions{AdminReadEvery: t.Entry.RuntimeReadEvery.Duration,
			ReloadTimeout: t.Entry.ReloadTimeout.Duration})
		if t.Entry.Layout == "twins" {
			tg = target.WithTwins(tg)
		}
		out = append(out, target.OnlyClusters(tg, t.Clusters))
	}
	return out, nil
}

// checkPlacementUnchanged rejects an inventory whose placement would change
// the template-expanded targets (placed is TargetsKey of the running ones):
// targets are built once, so that needs a restart.
func checkPlacementUnchanged(cfg *config.Config, inv *topology.Inventory, placed string) error {
	dp, _, err := ExpandDataPlaneAPI(cfg, inv)
	if err != nil {
		return err
	}
	if TargetsKey(dp) != placed {
		return fmt.Errorf("%s: the HAProxy nodes or the clusters each carries changed (dataplaneapi URL templates expand from the inventory); restart the controller for that", inv.File)
	}
	return nil
}

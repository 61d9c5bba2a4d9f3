package plan

import (
	"errors"
	"fmt"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// Options tune Compute.
type Options struct {
	// IncludeUnknown serves members Patroni reports that the inventory lacks.
	IncludeUnknown bool
	// LastKnownLeaders maps a cluster name to the leader last seen for it, so
	// a cluster whose leader key is momentarily absent keeps its write path
	// (see topology.MergeOptions.LastKnownLeader).
	LastKnownLeaders map[string]string
	// Released maps a cluster name to the member the caller saw Patroni move
	// the primary away from (see topology.MergeOptions.Released; several
	// are comma-separated): write services force it DOWN (the write fence)
	// while it is set.
	Released map[string]string
	// Promoted maps a cluster name to the member that just took the leader
	// key (see topology.MergeOptions.Promoted).
	Promoted map[string]string
	// PromotedConfirmed marks the clusters whose Promoted member answered
	// its REST API's /primary 200 read-write (see
	// topology.MergeOptions.PromotedConfirmed).
	PromotedConfirmed map[string]bool
	// PromotedPending marks the clusters whose Promoted member holds the
	// leader key but was not seen read-write yet (see
	// topology.MergeOptions.PromotedPending): write services force it DOWN.
	PromotedPending map[string]bool
}

// Compute merges the live Patroni state of every cluster of inv into the
// inventory and evaluates its services. dcs maps a cluster name (Patroni
// scope) to its decoded state; a nil map, or a cluster missing from it,
// means no live information for that cluster (inventory roles are used).
// Clusters keep the inventory's order. Compute is pure and deterministic.
func Compute(inv *topology.Inventory, dcs map[string]*patroni.ClusterState, opts Options) (*Plan, error) {
	if inv == nil {
		return nil, fmt.Errorf("compute plan: no inventory")
	}
	p := &Plan{Clusters: make([]Cluster, 0, len(inv.Clusters))}
	for _, c := range inv.Clusters {
		var st *patroni.ClusterState
		if dcs != nil {
			st = dcs[c.Name]
		}
		pc, err := ComputeCluster(inv.File, c, st, dcs != nil, ClusterOptionsOf(opts, c.Name))
		if err != nil {
			return nil, err
		}
		p.Clusters = append(p.Clusters, pc)
	}
	return p, nil
}

// ClusterOptions are the Options that concern one cluster (see Options).
// It is comparable: two calls of ComputeCluster with the same cluster, the
// same *ClusterState (never modified once decoded), the same haveDCS and
// equal ClusterOptions give equal results.
type ClusterOptions struct {
	IncludeUnknown    bool
	LastKnownLeader   string
	Released          string
	Promoted          string
	PromotedConfirmed bool
	PromotedPending   bool
}

// ClusterOptionsOf picks cluster name's options out of opts.
func ClusterOptionsOf(opts Options, name string) ClusterOptions {
	return ClusterOptions{
		IncludeUnknown:    opts.IncludeUnknown,
		LastKnownLeader:   opts.LastKnownLeaders[name],
		Released:          opts.Released[name],
		Promoted:          opts.Promoted[name],
		PromotedConfirmed: opts.PromotedConfirmed[name],
		PromotedPending:   opts.PromotedPending[name],
	}
}

// ComputeCluster is Compute for one cluster c of the inventory file file:
// st is its decoded DCS state (nil: none), haveDCS whether a DCS view was
// given at all (Compute's dcs != nil). Compute is this, cluster by cluster;
// it depends on nothing else, so a caller may keep one cluster's result
// while its inputs do not change. It never modifies st.
func ComputeCluster(file string, c *topology.Cluster, st *patroni.ClusterState, haveDCS bool, opts ClusterOptions) (Cluster, error) {
	st, _ = ignoreGhostLeader(c, st)
	v := topology.Merge(c, st, topology.MergeOptions{
		IncludeUnknown:  opts.IncludeUnknown,
		LastKnownLeader: opts.LastKnownLeader,
		Released:        opts.Released,
		Promoted:        opts.Promoted,

		PromotedConfirmed: opts.PromotedConfirmed,
		PromotedPending:   opts.PromotedPending,
	})
	svcs, err := services.Build(v)
	if err != nil {
		loc := file
		var se *services.Error
		if errors.As(err, &se) && se.Line > 0 {
			loc = fmt.Sprintf("%s:%d", file, se.Line)
		}
		return Cluster{}, fmt.Errorf("%s: %w", loc, err)
	}
	svcs, dropped := dropInvalidServers(svcs)
	pc := Cluster{
		Name:       c.Name,
		Namespace:  c.Namespace,
		DCSKey:     c.DCSKey,
		Leader:     v.Leader,
		Live:       v.Live,
		Leaderless: v.Leaderless,
		Members:    make([]Member, 0, len(v.Members)),
		Services:   svcs,
	}
	if c.Citus {
		g := c.Group
		pc.Scope, pc.CitusGroup = c.Scope, &g
	}
	for _, m := range v.Members {
		pc.Members = append(pc.Members, member(m, st))
	}
	pc.Warnings = warnings(v, st, haveDCS, opts.IncludeUnknown, opts.LastKnownLeader)
	pc.Warnings = append(append(pc.Warnings, dropped...), c.Warnings...)
	return pc, nil
}

func member(m *topology.MemberView, st *patroni.ClusterState) Member {
	pm := Member{
		Name:          m.Name,
		Address:       m.Address,
		InventoryRole: m.InventoryRole,
		Role:          m.Role,
		RoleReason:    m.RoleReason,
		Known:         m.Known,
		Served:        m.Served,
	}
	if l := m.Live; l != nil {
		pm.PatroniRole = l.RawRole
		if pm.PatroniRole == "" {
			pm.PatroniRole = l.Role
		}
		pm.State = l.State
		pm.Timeline = l.Timeline
		pm.LagBytes = l.LagBytes
		pm.Tags = l.Tags
	}
	if st != nil {
		pm.SyncStandby = st.IsSync(m.Name)
	}
	return pm
}

// warnings lists what an operator should know about one cluster, in a fixed
// order: cluster-level state first, then members in view order, then DCS keys.
func warnings(v *topology.View, st *patroni.ClusterState, haveDCS, includeUnknown bool, lastLeader string) []string {
	var w []string
	if haveDCS && st == nil {
		w = append(w, "no Patroni state for this cluster in the DCS: inventory roles are used")
	}
	if v.Leaderless {
		msg := "Patroni reports no leader key: roles are kept"
		if lastLeader != "" {
			msg += " with the last known leader " + lastLeader
		} else {
			msg += " as the inventory says"
		}
		w = append(w, msg)
	}
	for _, m := range v.Members {
		switch {
		case m.TwinClash != "":
			w = append(w, fmt.Sprintf("member %s (%s) is in Patroni but not in the inventory, and its name is the backup twin name of member %s: not served", m.Name, m.Address, m.TwinClash))
		case !m.Known && includeUnknown:
			w = append(w, fmt.Sprintf("member %s (%s) is in Patroni but not in the inventory: served because unknown members are included", m.Name, m.Address))
		case !m.Known:
			w = append(w, fmt.Sprintf("member %s (%s) is in Patroni but not in the inventory: not served (include unknown members to serve it)", m.Name, m.Address))
		case v.Live && m.Live == nil:
			w = append(w, fmt.Sprintf("member %s is not reported by Patroni: it keeps role %s", m.Name, m.Role))
		}
	}
	if st != nil {
		for _, e := range st.Errors {
			w = append(w, "DCS key "+e.Error())
		}
	}
	return w
}

package plan

import (
	"errors"
	"fmt"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// LoadInventory loads an inventory and checks it with Check: the one
// validation every command (plan, render, diff, run and its reloads) uses, so
// run never starts on an inventory plan rejects and plan never accepts one run
// cannot apply.
func LoadInventory(path string, opts topology.ParseOptions) (*topology.Inventory, error) {
	inv, err := topology.LoadWith(path, opts)
	if err != nil {
		return nil, err
	}
	if err := Check(inv); err != nil {
		return nil, err
	}
	return inv, nil
}

// Check computes the plan of inv from the inventory alone (no DCS) and
// validates every service the way renderers and drivers do before writing
// (services.Validate): selectors that fail or return something other than a
// list of members, and services HAProxy could never be given, are errors.
//
// A selector that only fails to evaluate on inventory data (a function
// given a live field that is null without Patroni, e.g.
// starts_with(patroni_state, 'run')) is accepted: it depends on the data, and
// run holds back just that cluster while it fails (plan --dcs shows it).
func Check(inv *topology.Inventory) error {
	var all []services.Service
	for _, c := range inv.Clusters {
		one := &topology.Inventory{File: inv.File, Clusters: []*topology.Cluster{c}}
		p, err := Compute(one, nil, Options{})
		var se *services.Error
		switch {
		case err == nil:
			for _, pc := range p.Clusters {
				all = append(all, pc.Services...)
			}
		case errors.As(err, &se) && (se.Field == "selector" || se.Field == "backup") && !errors.Is(err, services.ErrSelectorShape):
			// Data-dependent evaluation error: see above.
		default:
			return err
		}
	}
	if err := services.Validate(all); err != nil {
		return fmt.Errorf("%s: %w", inv.File, err)
	}
	return nil
}

// ignoreGhostLeader returns st without its leader when the leader key names
// no known member (neither a DCS member key nor an inventory member): a
// garbage or stray value must not demote the real primary. The merge then
// keeps the last known leader, as for a missing key. The returned message
// explains it ("" when st is kept as it is). st is not modified.
func ignoreGhostLeader(c *topology.Cluster, st *patroni.ClusterState) (*patroni.ClusterState, string) {
	if st == nil || st.Leader == "" || st.Members[st.Leader] != nil || c.Member(st.Leader) != nil {
		return st, ""
	}
	cp := *st
	cp.Leader = ""
	cp.LeaderRevision = 0
	msg := fmt.Sprintf("leader key names %q, which is no known member: ignored, roles kept with the last known leader", quoteShort(st.Leader))
	cp.Errors = append(append([]patroni.KeyError(nil), st.Errors...), patroni.KeyError{Key: c.Namespace + "/" + c.Name + "/leader", Err: msg})
	return &cp, msg
}

// dropInvalidServers removes servers HAProxy must never be given (see
// services.ValidateServer) and returns why, one message each. The DCS decoder
// already skips bad member keys; this is the last line before targets.
func dropInvalidServers(svcs []services.Service) ([]services.Service, []string) {
	var warn []string
	for i := range svcs {
		s := &svcs[i]
		// The copy is made only from the first invalid server on: nearly
		// every list is valid, and a copy of each was ~6 MB of garbage per
		// plan of 1,000 clusters (the resync's every 30 s).
		var kept []services.Server
		dropped := false
		for j := range s.Servers {
			if err := services.ValidateServer(&s.Servers[j]); err != nil {
				warn = append(warn, fmt.Sprintf("service %s: %v: server skipped", s.Name, err))
				if !dropped {
					kept = append(make([]services.Server, 0, len(s.Servers)-1), s.Servers[:j]...)
					dropped = true
				}
				continue
			}
			if dropped {
				kept = append(kept, s.Servers[j])
			}
		}
		if dropped {
			s.Servers = kept
		}
	}
	return svcs, warn
}

func quoteShort(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

package plan

import (
	"errors"
	"fmt"

	"github.com/pgsvc/pgsvc/pkg/haproxyname"
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
	msg := fmt.Sprintf("leader key names %s, which is no known member: ignored, roles kept with the last known leader", haproxyname.QuoteShort(st.Leader))
	cp.Errors = append(append([]patroni.KeyError(nil), st.Errors...), patroni.KeyError{Key: c.Namespace + "/" + c.Name + "/leader", Err: msg})
	return &cp, msg
}

// dropInvalidServers removes servers HAProxy must never be given (see
// services.ValidateServer) and returns why, one message each. The DCS decoder
// already skips bad member keys; this is the last line before targets.
//
// The candidates the twin layout is made of (Service.Candidates) lose the
// same servers. A member whose backup twin name would be no HAProxy
// identifier (a member key of more than 120 characters: the decoder lets
// it in as a server name) is served in no service whose members depend on
// roles (the twinned ones), in either layout, with one warning: a twins
// target validates its whole desired (services.Validate) and would refuse
// it for that one server, every cluster's.
func dropInvalidServers(svcs []services.Service) ([]services.Service, []string) {
	var warn []string
	var noTwin map[string]bool // members warned about
	for i := range svcs {
		s := &svcs[i]
		s.Servers = keepServers(s.Servers, func(sv *services.Server) bool {
			if err := services.ValidateServer(sv); err != nil {
				warn = append(warn, fmt.Sprintf("service %s: %v: server skipped", s.Name, err))
				return false
			}
			if !s.RoleDependent {
				return true
			}
			err := twinName(sv.Name)
			if err != nil && !noTwin[sv.Name] {
				if noTwin == nil {
					noTwin = map[string]bool{}
				}
				noTwin[sv.Name] = true
				warn = append(warn, fmt.Sprintf("member %s: its backup twin name: %v: not served in the services whose members depend on roles", sv.Name, err))
			}
			return err == nil
		})
		s.Candidates = keepServers(s.Candidates, func(sv *services.Server) bool {
			return services.ValidateServer(sv) == nil && twinName(sv.Name) == nil
		})
	}
	return svcs, warn
}

// twinName checks the name of member's backup twin (services.Twins). The
// suffix is made of identifier characters, so a valid member name needs
// only the length checked: no name is built for the common case (a string
// per server per plan).
func twinName(member string) error {
	if len(member)+len(services.BackupTwinSuffix) <= haproxyname.MaxIdentifier && haproxyname.Identifier(member) == nil {
		return nil
	}
	return haproxyname.Identifier(member + services.BackupTwinSuffix)
}

// keepServers returns the servers of list keep keeps, list itself when it
// keeps them all. The copy is made only from the first server dropped on:
// nearly every list is valid, and a copy of each was ~6 MB of garbage per
// plan of 1,000 clusters (the resync's every 30 s).
func keepServers(list []services.Server, keep func(*services.Server) bool) []services.Server {
	var kept []services.Server
	dropped := false
	for j := range list {
		if !keep(&list[j]) {
			if !dropped {
				kept = append(make([]services.Server, 0, len(list)-1), list[:j]...)
				dropped = true
			}
			continue
		}
		if dropped {
			kept = append(kept, list[j])
		}
	}
	if dropped {
		return kept
	}
	return list
}

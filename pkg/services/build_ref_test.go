package services

import (
	"fmt"
	"math/rand"
	"reflect"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// TestBuildSameAsReference: on random views (members known or not, served
// or not, any roles, live or not, running or not; definitions with and
// without FullName) Build gives what it gave when each list was its own
// allocation, and each list is capped at its length (an append to one
// never writes into the next).
func TestBuildSameAsReference(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	roles := []string{"primary", "replica", "offline"}
	states := []string{"running", "streaming", "stopped", "starting"}
	for round := 0; round < 3000; round++ {
		var defs []*topology.ServiceDef
		for _, d := range seedDefs(t) {
			if r.Intn(4) == 0 {
				continue
			}
			if r.Intn(2) == 0 {
				d.FullName = "pg-r-" + d.Name
			}
			defs = append(defs, d)
		}
		var ms []mem
		for seq := 1; seq <= r.Intn(6); seq++ {
			m := known(seq, fmt.Sprintf("10.0.0.%d", seq), roles[r.Intn(3)], roles[r.Intn(3)], r.Intn(2) == 0)
			m.known, m.served = r.Intn(6) != 0, r.Intn(6) != 0
			ms = append(ms, m)
		}
		leader := ""
		if len(ms) > 0 && r.Intn(4) != 0 {
			leader = fmt.Sprintf("pg-r-%d", 1+r.Intn(len(ms)))
		}
		v := view("pg-r", leader, defs, ms...)
		for _, mv := range v.Members {
			if v.Live && r.Intn(3) != 0 {
				mv.Live = &patroni.Member{Name: mv.Name, State: states[r.Intn(len(states))]}
			}
			mv.Fenced, mv.Promoted = r.Intn(8) == 0, r.Intn(8) == 0
		}
		got, gerr := Build(v)
		want, werr := referenceBuild(v)
		if (gerr == nil) != (werr == nil) || gerr != nil && gerr.Error() != werr.Error() {
			t.Fatalf("round %d: error %v, reference %v", round, gerr, werr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d:\n got %+v\nwant %+v", round, got, want)
		}
		for _, s := range got {
			if cap(s.Servers) != len(s.Servers) || cap(s.Candidates) != len(s.Candidates) {
				t.Fatalf("round %d: service %s: a list has room past its end", round, s.Name)
			}
		}
	}
}

// referenceBuild is Build as it was, each list its own allocation.
func referenceBuild(v *topology.View) ([]Service, error) {
	if v == nil || v.Cluster == nil {
		return nil, fmt.Errorf("build services: no cluster")
	}
	c := v.Cluster
	served := make([]*topology.MemberView, 0, len(v.Members))
	docs := make([]any, 0, len(v.Members))
	for _, m := range v.Members {
		if m == nil || !m.Served {
			continue
		}
		served = append(served, m)
		docs = append(docs, m.Vars)
	}
	index := newDocIndex(served)
	out := make([]Service, 0, len(c.Services))
	for _, def := range c.Services {
		if def == nil {
			continue
		}
		s, err := referenceBuildOne(v, def, served, docs, index)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func referenceBuildOne(v *topology.View, def *topology.ServiceDef, served []*topology.MemberView, docs []any, index *docIndex) (Service, error) {
	c := v.Cluster
	fail := func(field string, err error) (Service, error) {
		return Service{}, &Error{Cluster: c.Name, Service: def.Name, Field: field, Source: def.Source, Line: def.Line, Err: err}
	}
	dest, destPort, err := resolveDest(def.Dest, c.Vars)
	if err != nil {
		return fail("dest", err)
	}
	selExpr := def.SelectorExpr
	if selExpr == nil {
		// Definitions built by hand (tests, other loaders) may lack the
		// compiled form; compile once here rather than failing.
		if selExpr, err = topology.CompileSelector(def.Selector); err != nil {
			return fail("selector", fmt.Errorf("compile %q: %w", def.Selector, err))
		}
	}
	selected, _, err := match(selExpr, docs, index, new([]int))
	if err != nil {
		return fail("selector", fmt.Errorf("%q: %w", def.Selector, err))
	}
	var backup map[int]bool
	if def.Backup != "" {
		bExpr := def.BackupExpr
		if bExpr == nil {
			if bExpr, err = topology.CompileSelector(def.Backup); err != nil {
				return fail("backup", fmt.Errorf("compile %q: %w", def.Backup, err))
			}
		}
		if backup, _, err = match(bExpr, docs, index, new([]int)); err != nil {
			return fail("backup", fmt.Errorf("%q: %w", def.Backup, err))
		}
	}

	s := Service{
		Cluster:       c.Name,
		Name:          c.Name + "-" + def.Name,
		Service:       def.Name,
		IP:            orDefault(def.IP, "*"),
		Port:          def.Port,
		Check:         orDefault(def.Check, "/"),
		Dest:          dest,
		DestPort:      destPort,
		Balance:       orDefault(def.Balance, "roundrobin"),
		Maxconn:       def.Maxconn,
		DefaultServer: orDefault(def.Options, orDefault(c.DefaultServer, DefaultServerOptions)),
	}
	// Sized as they end (append's doubling left a quarter of every list
	// unused, kept for as long as the plan).
	n := 0
	for i := range served {
		if selected[i] || backup[i] {
			n++
		}
	}
	s.Servers = make([]Server, 0, n)
	if s.Maxconn == 0 {
		s.Maxconn = 5000
	}
	s.RoleDependent = def.Backup != "" || !selectsAll(def.Selector)
	s.BackupIsPrimary = s.RoleDependent && backupIsPrimary(def, served)
	s.BackupIsReplicas = s.RoleDependent && backupIsReplicas(def, served)
	if s.RoleDependent && len(served) > 0 {
		s.Candidates = make([]Server, 0, len(served))
	}
	for _, m := range served {
		if !s.RoleDependent {
			break // Twins leaves such a service as it is
		}
		cand := server(v, def, m, dest, true, false)
		cand.Unconfirmed = v.Live && (m.Live == nil || !aliveState(m.Live.State))
		cand.Primary = m.Role == "primary"
		s.Candidates = append(s.Candidates, cand)
	}
	for i, m := range served {
		if selected[i] {
			s.Servers = append(s.Servers, server(v, def, m, dest, true, backup[i]))
		}
	}
	for i, m := range served {
		if backup[i] && !selected[i] {
			s.Servers = append(s.Servers, server(v, def, m, dest, false, true))
		}
	}
	return s, nil
}

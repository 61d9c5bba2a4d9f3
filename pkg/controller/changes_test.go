package controller

import (
	"fmt"
	"math/rand"
	"reflect"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// desiredChangesFresh is desiredChanges as it was before changeScratch: new
// backends and server maps for every call (the reference).
func desiredChangesFresh(prev, desired []services.Service) []target.Change {
	cur := make(map[string]*target.Backend, len(prev))
	for _, s := range prev {
		st := target.SettingsOf(s)
		b := &target.Backend{Name: s.Name, HasFrontend: true, Settings: &st, Servers: map[string]services.Server{}}
		for _, sv := range s.Servers {
			sv.Down = sv.ForceDown
			b.Servers[sv.Name] = sv
		}
		cur[s.Name] = b
	}
	return target.Diff(cur, desired)
}

// randomCluster is a cluster's services with random servers, flags and
// settings: a few services (more or fewer than the scratch held before),
// in the twin layout or not.
func randomCluster(r *rand.Rand, cluster string) []services.Service {
	var out []services.Service
	for i := r.Intn(6); i > 0; i-- {
		s := services.Service{Name: fmt.Sprintf("%s-svc%d", cluster, r.Intn(5)), Cluster: cluster, IP: "127.0.0.1",
			Port: 5433 + r.Intn(3), Check: []string{"/primary", "/replica", ""}[r.Intn(3)], Maxconn: 100 * r.Intn(3)}
		if r.Intn(2) == 0 {
			s.Layout = services.LayoutTwins
		}
		for j := r.Intn(9); j > 0; j-- {
			name := fmt.Sprintf("%s-%d", cluster, 1+r.Intn(4))
			if r.Intn(2) == 0 {
				name += services.BackupTwinSuffix
			}
			s.Servers = append(s.Servers, services.Server{Name: name, Member: name, Address: "127.0.0.11", Port: 6432 + r.Intn(2),
				CheckPort: 8008, Weight: 100 * r.Intn(2), Backup: r.Intn(2) == 0, Disabled: r.Intn(2) == 0,
				ForceDown: r.Intn(4) == 0, ForceUp: r.Intn(4) == 0})
		}
		out = append(out, s)
	}
	return out
}

// TestChangeScratchIsFresh: one scratch describing cluster after cluster
// (as clusterChanges does) gives, every time, what new maps gave.
func TestChangeScratchIsFresh(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	var sc changeScratch
	nonEmpty := 0
	for run := 0; run < 3000; run++ {
		cl := fmt.Sprintf("pg-%d", r.Intn(4))
		prev, desired := randomCluster(r, cl), randomCluster(r, cl)
		if r.Intn(4) == 0 {
			desired = prev // nothing changed
		}
		want := desiredChangesFresh(prev, desired)
		if got := sc.changes(prev, desired); !reflect.DeepEqual(got, want) {
			t.Fatalf("run %d:\ngot  %+v\nwant %+v", run, got, want)
		}
		if len(want) > 0 {
			nonEmpty++
		}
	}
	if nonEmpty < 1000 {
		t.Errorf("only %d of 3000 runs had changes: the test compares too little", nonEmpty)
	}
}

package controller

import (
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// modelInventory: four ordinary clusters and pg-live, whose replica
// selector fails on a member Patroni does not report (a plan error).
func modelInventory(t *testing.T) *topology.Inventory {
	t.Helper()
	var b strings.Builder
	b.WriteString("all:\n  children:\n")
	for i := 0; i < 4; i++ {
		fmt.Fprintf(&b, "    pg-m%d:\n      hosts:\n", i)
		for seq := 1; seq <= 3; seq++ {
			role := "replica"
			if seq == 1 {
				role = "primary"
			}
			fmt.Fprintf(&b, "        127.0.%d.%d: { pg_seq: %d, pg_role: %s }\n", 10+i, seq, seq, role)
		}
		fmt.Fprintf(&b, "      vars: { pg_cluster: pg-m%d }\n", i)
	}
	b.WriteString(`    pg-live:
      hosts:
        127.0.0.21: { pg_seq: 1, pg_role: primary }
        127.0.0.22: { pg_seq: 2, pg_role: replica }
        127.0.0.23: { pg_seq: 3, pg_role: replica }
      vars:
        pg_cluster: pg-live
        pg_default_services:
          - { name: primary, port: 6433, ip: 127.0.0.20, dest: default, check: /primary, selector: "[]" }
          - { name: replica, port: 6434, ip: 127.0.0.20, dest: default, check: /read-only, selector: "[? starts_with(patroni_state,'run')]" }
`)
	inv, err := topology.Parse("model.yml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// modelCluster is what one cluster has in the DCS.
type modelCluster struct {
	name     string
	host     func(seq int) string
	present  bool   // any key at all
	leader   string // "" = no leader key; may name no member (ghost)
	members  map[int]string
	failover string // failover key value, "" = none
}

func (m *modelCluster) kvs(rev int64) []patroni.KV {
	if !m.present {
		return nil
	}
	key := func(rest string) string { return "/pg/" + m.name + "/" + rest }
	kv := func(k, v string) patroni.KV { return patroni.KV{Key: key(k), Value: []byte(v), ModRevision: rev} }
	out := []patroni.KV{kv("config", `{"ttl":30}`), kv("status", `{"optime":1000}`)}
	if m.leader != "" {
		out = append(out, kv("leader", m.leader))
	}
	if m.failover != "" {
		out = append(out, kv("failover", m.failover))
	}
	for seq := 1; seq <= 3; seq++ {
		state, ok := m.members[seq]
		if !ok {
			continue
		}
		name := fmt.Sprintf("%s-%d", m.name, seq)
		role := "replica"
		if name == m.leader {
			role = "master"
		}
		h := m.host(seq)
		out = append(out, kv("members/"+name, fmt.Sprintf(`{"conn_url":"postgres://%s:5432/postgres","api_url":"http://%s:8008/patroni","state":%q,"role":%q,"xlog_location":1000,"timeline":1}`, h, h, state, role)))
	}
	return out
}

// mutate applies one random DCS change to m.
func (m *modelCluster) mutate(r *rand.Rand) {
	member := func(seq int) string { return fmt.Sprintf("%s-%d", m.name, seq) }
	switch r.Intn(10) {
	case 0: // every key of the cluster vanishes / comes back
		m.present = !m.present
	case 1, 2: // the leader key moves
		m.leader = member(1 + r.Intn(3))
	case 3: // the leader key is released
		m.leader = ""
	case 4: // a ghost leader
		m.leader = "ghost-" + fmt.Sprint(r.Intn(3))
	case 5: // a member key vanishes (pg-live's plan fails) or comes back
		seq := 1 + r.Intn(3)
		if _, ok := m.members[seq]; ok {
			delete(m.members, seq)
		} else {
			m.members[seq] = "running"
		}
	case 6: // a member's state changes
		seq := 1 + r.Intn(3)
		if _, ok := m.members[seq]; ok {
			m.members[seq] = []string{"running", "stopped", "starting"}[r.Intn(3)]
		}
	case 7: // a switchover request appears or goes
		if m.failover == "" && m.leader != "" {
			m.failover = fmt.Sprintf(`{"leader":%q,"member":%q}`, m.leader, member(1+r.Intn(3)))
		} else {
			m.failover = ""
		}
	case 8: // a bad value: a member key that does not decode
		m.members[1+r.Intn(3)] = `x","broken`
	default: // a write that changes nothing the plan reads
	}
}

// TestIncrementalPlanIsFullPlan feeds random sequences of DCS changes to two
// controllers, one planning only the clusters whose inputs changed (as it
// runs), one planning every cluster at every reconcile, and requires the
// same plan, desired services, frozen clusters, plan errors, applies and
// status after every step. The sequences include a cluster losing all its
// keys, a ghost leader, a plan error in one cluster (pg-live), switchover
// requests, undecodable keys, a lost etcd and resyncs.
func TestIncrementalPlanIsFullPlan(t *testing.T) {
	var seen coverage
	for seed := int64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { compareIncremental(t, seed, 120, &seen) })
	}
	// The sequences went through what they are meant to cover.
	t.Logf("coverage %+v", seen)
	if seen.partial == 0 || seen.planError == 0 || seen.vanished == 0 || seen.ghost == 0 || seen.stale == 0 || seen.transition == 0 {
		t.Fatalf("sequences did not cover every case: %+v", seen)
	}
}

// coverage counts the steps that had each case.
type coverage struct {
	partial, planError, vanished, ghost, stale, transition int
}

func (cv *coverage) note(c *Controller) {
	if c.plans.computed < len(c.inv.Clusters) {
		cv.partial++
	}
	if len(c.planErrs) > 0 {
		cv.planError++
	}
	for _, r := range c.frozen {
		switch {
		case r == reasonVanished:
			cv.vanished++
		case strings.HasPrefix(r, "stale"):
			cv.stale++
		}
	}
	for _, cl := range c.plan.Clusters {
		for _, w := range cl.Warnings {
			if strings.Contains(w, "which is no known member") {
				cv.ghost++
			}
		}
	}
	if len(c.released)+len(c.promoted) > 0 {
		cv.transition++
	}
}

func compareIncremental(t *testing.T, seed int64, steps int, seen *coverage) {
	r := rand.New(rand.NewSource(seed))
	inv := modelInventory(t)
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	connected := true
	health := func() patroni.WatchStatus {
		return patroni.WatchStatus{Connected: connected, LastContact: now}
	}
	mk := func(full bool) (*Controller, *fakeTarget) {
		ft := &fakeTarget{}
		c := New(inv, []target.Target{ft}, Options{Now: clock, Prober: nopProber{}})
		c.fullPlan = full
		c.SetHealth("/pg", health)
		return c, ft
	}
	inc, incT := mk(false)
	// A resync checks every other cluster from scratch (in turn).
	inc.plans.checkEvery = 2
	full, fullT := mk(true)

	var models []*modelCluster
	for i := 0; i < 4; i++ {
		i := i
		models = append(models, &modelCluster{name: fmt.Sprintf("pg-m%d", i), present: true, leader: fmt.Sprintf("pg-m%d-1", i),
			members: map[int]string{1: "running", 2: "running", 3: "running"},
			host:    func(seq int) string { return fmt.Sprintf("127.0.%d.%d", 10+i, seq) }})
	}
	models = append(models, &modelCluster{name: "pg-live", present: true, leader: "pg-live-1",
		members: map[int]string{1: "running", 2: "running", 3: "running"},
		host:    func(seq int) string { return fmt.Sprintf("127.0.0.2%d", seq) }})

	states := map[string]*patroni.ClusterState{}
	decode := func(m *modelCluster, rev int64) {
		delete(states, m.name)
		for k, v := range patroni.Decode("/pg", m.kvs(rev)) {
			states[k] = v
		}
	}
	rev := int64(1)
	for _, m := range models {
		decode(m, rev)
	}
	for i := 0; i < steps; i++ {
		rev++
		now = now.Add(time.Duration(r.Intn(3000)) * time.Millisecond)
		force := false
		switch x := r.Intn(20); {
		case x == 0:
			force = true // a resync
		case x == 1:
			connected = !connected // etcd lost / back
		case x < 4:
			// re-decode every cluster: same content, new pointers (a watcher re-list)
			for _, m := range models {
				decode(m, rev)
			}
		default:
			for n := 1 + r.Intn(2); n > 0; n-- {
				m := models[r.Intn(len(models))]
				m.mutate(r)
				decode(m, rev)
			}
		}
		snap := make(map[string]*patroni.ClusterState, len(states))
		for k, v := range states {
			snap[k] = v
		}
		s := patroni.Snapshot{Namespace: "/pg", Revision: rev, At: now, Clusters: snap}
		inc.Observe(s)
		full.Observe(s)
		step(inc, force)
		step(full, force)
		where := fmt.Sprintf("step %d (seed %d)", i, seed)
		if !reflect.DeepEqual(inc.plan, full.plan) {
			t.Fatalf("%s: plans differ:\nincremental %+v\nfull        %+v", where, inc.plan, full.plan)
		}
		for name, a := range map[string][2]any{
			"desired":     {inc.desired.services(), full.desired.services()},
			"frozen":      {inc.frozen, full.frozen},
			"plan errors": {inc.planErrs, full.planErrs},
			"last good":   {inc.lastGood, full.lastGood},
			"released":    {inc.released, full.released},
			"promoted":    {inc.promoted, full.promoted},
			"applies":     {incT.applies, fullT.applies},
		} {
			if !reflect.DeepEqual(a[0], a[1]) {
				t.Fatalf("%s: %s differ:\nincremental %+v\nfull        %+v", where, name, a[0], a[1])
			}
		}
		si, sf := inc.Status(), full.Status()
		if !reflect.DeepEqual(si.History, sf.History) {
			for k := 0; k < len(si.History) && k < len(sf.History); k++ {
				if !reflect.DeepEqual(si.History[k], sf.History[k]) {
					t.Fatalf("%s: history event %d differs:\nincremental %+v %+v\nfull        %+v %+v", where, k, si.History[k], si.History[k].Transition, sf.History[k], sf.History[k].Transition)
				}
			}
			t.Fatalf("%s: history differs: %d events, %d events", where, len(si.History), len(sf.History))
		}
		if !reflect.DeepEqual(si.Clusters, sf.Clusters) || !reflect.DeepEqual(si.NotReady, sf.NotReady) {
			t.Fatalf("%s: status differs:\nincremental %+v %v\nfull        %+v %v", where, si.Clusters, si.NotReady, sf.Clusters, sf.NotReady)
		}
		if turn := (inc.plans.checks - 1) % 2; force && inc.plans.computed < (len(inv.Clusters)+1-turn)/2 {
			t.Fatalf("%s: a resync planned %d clusters of %d, want at least the %d in turn", where, inc.plans.computed, len(inv.Clusters), (len(inv.Clusters)+1-turn)/2)
		}
		seen.note(inc)
	}
}

package plan

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// testInventory is the seed's pg-test (hosts listed 1, 3, 2) plus a 2-member
// cluster whose replica also serves offline queries.
const testInventory = `
all:
  children:
    pg-test:
      hosts:
        10.10.10.11: { pg_seq: 1, pg_role: primary }
        10.10.10.13: { pg_seq: 3, pg_role: replica, pg_offline_query: true }
        10.10.10.12: { pg_seq: 2, pg_role: replica }
      vars: { pg_cluster: pg-test }
    pg-duo:
      hosts:
        10.10.10.21: { pg_seq: 1, pg_role: primary }
        10.10.10.22: { pg_seq: 2, pg_role: replica, pg_offline_query: true }
      vars: { pg_cluster: pg-duo }
  vars:
    pg_default_service_dest: pgbouncer
`

func loadInventory(t testing.TB, text string) *topology.Inventory {
	t.Helper()
	inv, err := topology.Parse("inv.yml", []byte(text))
	if err != nil {
		t.Fatalf("parse inventory: %v", err)
	}
	return inv
}

func i64(n int64) *int64 { return &n }

// state builds a decoded cluster state: leader, then members as name:role.
func state(scope, leader string, members ...string) *patroni.ClusterState {
	st := &patroni.ClusterState{Scope: scope, Leader: leader, Members: map[string]*patroni.Member{}}
	for _, nr := range members {
		name, role, _ := strings.Cut(nr, ":")
		raw := role
		if role == patroni.RolePrimary {
			raw = "master"
		}
		st.Members[name] = &patroni.Member{Name: name, Role: role, RawRole: raw, State: "running", Timeline: 2, LagBytes: i64(0)}
	}
	return st
}

// summary is what the tests compare: roles and server lines per service.
func summary(c Cluster) []string {
	out := []string{"leader=" + c.Leader}
	for _, m := range c.Members {
		out = append(out, fmt.Sprintf("%s %s->%s served=%t", m.Name, m.InventoryRole, m.Role, m.Served))
	}
	for _, s := range c.Services {
		var sv []string
		for _, x := range s.Servers {
			l := x.Name
			if x.Backup {
				l += "(backup)"
			}
			sv = append(sv, l)
		}
		out = append(out, s.Service+": "+strings.Join(sv, " "))
	}
	return append(out, c.Warnings...)
}

func TestCompute(t *testing.T) {
	inv := loadInventory(t, testInventory)
	tests := []struct {
		name    string
		dcs     map[string]*patroni.ClusterState
		opts    Options
		cluster string
		want    []string
	}{
		{
			name: "inventory only", cluster: "pg-test",
			want: []string{"leader=",
				"pg-test-1 primary->primary served=true", "pg-test-3 replica->replica served=true", "pg-test-2 replica->replica served=true",
				"primary: pg-test-1 pg-test-3 pg-test-2",
				"replica: pg-test-1(backup) pg-test-3 pg-test-2",
				"default: pg-test-1 pg-test-3 pg-test-2",
				"offline: pg-test-3 pg-test-2(backup)"},
		},
		{
			name: "dcs without this cluster", cluster: "pg-test", dcs: map[string]*patroni.ClusterState{},
			want: []string{"leader=",
				"pg-test-1 primary->primary served=true", "pg-test-3 replica->replica served=true", "pg-test-2 replica->replica served=true",
				"primary: pg-test-1 pg-test-3 pg-test-2",
				"replica: pg-test-1(backup) pg-test-3 pg-test-2",
				"default: pg-test-1 pg-test-3 pg-test-2",
				"offline: pg-test-3 pg-test-2(backup)",
				"no Patroni state for this cluster in the DCS: inventory roles are used"},
		},
		{
			name: "3 members after switchover", cluster: "pg-test",
			dcs: map[string]*patroni.ClusterState{"pg-test": state("pg-test", "pg-test-2", "pg-test-1:replica", "pg-test-2:primary", "pg-test-3:replica")},
			want: []string{"leader=pg-test-2",
				"pg-test-1 primary->replica served=true", "pg-test-3 replica->replica served=true", "pg-test-2 replica->primary served=true",
				"primary: pg-test-1 pg-test-3 pg-test-2",
				"replica: pg-test-1 pg-test-3 pg-test-2(backup)",
				"default: pg-test-1 pg-test-3 pg-test-2",
				"offline: pg-test-3 pg-test-1(backup)"},
		},
		{
			name: "failover: old primary gone from the DCS", cluster: "pg-test",
			dcs: map[string]*patroni.ClusterState{"pg-test": state("pg-test", "pg-test-3", "pg-test-2:replica", "pg-test-3:primary")},
			want: []string{"leader=pg-test-3",
				"pg-test-1 primary->replica served=true", "pg-test-3 replica->primary served=true", "pg-test-2 replica->replica served=true",
				"primary: pg-test-1 pg-test-3 pg-test-2",
				"replica: pg-test-1 pg-test-3(backup) pg-test-2",
				"default: pg-test-1 pg-test-3 pg-test-2",
				"offline: pg-test-3 pg-test-1(backup) pg-test-2(backup)",
				"member pg-test-1 is not reported by Patroni: it keeps role replica"},
		},
		{
			name: "2 members after switchover", cluster: "pg-duo",
			dcs: map[string]*patroni.ClusterState{"pg-duo": state("pg-duo", "pg-duo-2", "pg-duo-1:replica", "pg-duo-2:primary")},
			want: []string{"leader=pg-duo-2",
				"pg-duo-1 primary->replica served=true", "pg-duo-2 replica->primary served=true",
				"primary: pg-duo-1 pg-duo-2",
				"replica: pg-duo-1 pg-duo-2(backup)",
				"default: pg-duo-1 pg-duo-2",
				"offline: pg-duo-2 pg-duo-1(backup)"},
		},
		{
			name: "leaderless keeps the last known leader", cluster: "pg-duo",
			dcs:  map[string]*patroni.ClusterState{"pg-duo": state("pg-duo", "", "pg-duo-1:replica", "pg-duo-2:demoted")},
			opts: Options{LastKnownLeaders: map[string]string{"pg-duo": "pg-duo-2"}},
			want: []string{"leader=",
				"pg-duo-1 primary->replica served=true", "pg-duo-2 replica->primary served=true",
				"primary: pg-duo-1 pg-duo-2",
				"replica: pg-duo-1 pg-duo-2(backup)",
				"default: pg-duo-1 pg-duo-2",
				"offline: pg-duo-2 pg-duo-1(backup)",
				"Patroni reports no leader key: roles are kept with the last known leader pg-duo-2"},
		},
		{
			name: "unknown member and key errors", cluster: "pg-duo",
			dcs: map[string]*patroni.ClusterState{"pg-duo": func() *patroni.ClusterState {
				st := state("pg-duo", "pg-duo-1", "pg-duo-1:primary", "pg-duo-2:replica", "pg-duo-9:replica")
				st.Members["pg-duo-9"].Host = "10.10.10.29"
				st.Errors = []patroni.KeyError{{Key: "/pg/pg-duo/members/pg-duo-7", Err: "invalid JSON"}}
				return st
			}()},
			want: []string{"leader=pg-duo-1",
				"pg-duo-1 primary->primary served=true", "pg-duo-2 replica->replica served=true", "pg-duo-9 ->replica served=false",
				"primary: pg-duo-1 pg-duo-2",
				"replica: pg-duo-1(backup) pg-duo-2",
				"default: pg-duo-1 pg-duo-2",
				"offline: pg-duo-2",
				"member pg-duo-9 (10.10.10.29) is in Patroni but not in the inventory: not served (include unknown members to serve it)",
				"DCS key /pg/pg-duo/members/pg-duo-7: invalid JSON"},
		},
		{
			name: "unknown member included", cluster: "pg-duo", opts: Options{IncludeUnknown: true},
			dcs: map[string]*patroni.ClusterState{"pg-duo": func() *patroni.ClusterState {
				st := state("pg-duo", "pg-duo-1", "pg-duo-1:primary", "pg-duo-2:replica", "pg-duo-9:replica")
				st.Members["pg-duo-9"].Host = "10.10.10.29"
				return st
			}()},
			want: []string{"leader=pg-duo-1",
				"pg-duo-1 primary->primary served=true", "pg-duo-2 replica->replica served=true", "pg-duo-9 ->replica served=true",
				"primary: pg-duo-1 pg-duo-2 pg-duo-9",
				"replica: pg-duo-1(backup) pg-duo-2 pg-duo-9",
				"default: pg-duo-1 pg-duo-2 pg-duo-9",
				"offline: pg-duo-2 pg-duo-9(backup)",
				"member pg-duo-9 (10.10.10.29) is in Patroni but not in the inventory: served because unknown members are included"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compute(inv, tc.dcs, tc.opts)
			if err != nil {
				t.Fatalf("Compute: %v", err)
			}
			if len(p.Clusters) != 2 || p.Clusters[0].Name != "pg-test" || p.Clusters[1].Name != "pg-duo" {
				t.Fatalf("clusters not in inventory order: %+v", p.Clusters)
			}
			var c Cluster
			for _, x := range p.Clusters {
				if x.Name == tc.cluster {
					c = x
				}
			}
			if got := summary(c); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func TestComputeErrors(t *testing.T) {
	bad := strings.Replace(testInventory, "vars: { pg_cluster: pg-duo }",
		"vars: { pg_cluster: pg-duo, pg_services: [ { name: bad, port: 5999, selector: \"[].pg_role\" } ] }", 1)
	inv := loadInventory(t, bad)
	_, err := Compute(inv, nil, Options{})
	want := "inv.yml:14: cluster pg-duo: service bad (pg_services[0]): selector: "
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %v, want prefix %q", err, want)
	}
	if _, err := Compute(nil, nil, Options{}); err == nil {
		t.Error("Compute(nil) returned no error")
	}
}

func TestComputeLiveFacts(t *testing.T) {
	inv := loadInventory(t, testInventory)
	st := state("pg-test", "pg-test-1", "pg-test-1:primary", "pg-test-2:replica", "pg-test-3:replica")
	// A sync key the current leader wrote, synchronous_mode on.
	st.SynchronousMode, st.SyncLeader, st.SyncStandbys = true, "pg-test-1", []string{"pg-test-2"}
	st.Members["pg-test-3"].Tags = map[string]any{"noloadbalance": true}
	st.Members["pg-test-3"].LagBytes = i64(4096)
	p, err := Compute(inv, map[string]*patroni.ClusterState{"pg-test": st}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Member{}
	for _, m := range p.Clusters[0].Members {
		got[m.Name] = m
	}
	if m := got["pg-test-1"]; m.PatroniRole != "master" || m.State != "running" || m.Timeline != 2 || m.SyncStandby {
		t.Errorf("pg-test-1 live facts: %+v", m)
	}
	if m := got["pg-test-2"]; !m.SyncStandby {
		t.Errorf("pg-test-2 not marked sync standby: %+v", m)
	}
	if m := got["pg-test-3"]; m.LagBytes == nil || *m.LagBytes != 4096 || m.Tags["noloadbalance"] != true {
		t.Errorf("pg-test-3 lag/tags: %+v", m)
	}
}

func TestWriteTextGolden(t *testing.T) {
	inv := loadInventory(t, testInventory)
	st := state("pg-test", "pg-test-2", "pg-test-1:replica", "pg-test-2:primary", "pg-test-3:replica")
	st.SynchronousMode, st.SyncLeader, st.SyncStandbys = true, "pg-test-2", []string{"pg-test-1"}
	st.Members["pg-test-3"].LagBytes = i64(1024)
	p, err := Compute(inv, map[string]*patroni.ClusterState{"pg-test": st}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := p.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "text.golden", buf.Bytes())

	// The JSON form is a public interface: keep its shape under golden too.
	js, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "plan.golden.json", append(js, '\n'))
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (go test -update to accept):\n%s", path, got)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, fmt.Errorf("disk full") }

func TestWriteTextReportsWriteErrors(t *testing.T) {
	p, err := Compute(loadInventory(t, testInventory), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WriteText(failWriter{}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("err = %v, want the writer's error", err)
	}
}

// BenchmarkCompute plans 1,000 clusters of 3 members with live state, the
// scale a large Pigsty deployment reaches.
func BenchmarkCompute(b *testing.B) {
	var y strings.Builder
	y.WriteString("all:\n  children:\n")
	dcs := map[string]*patroni.ClusterState{}
	for i := 0; i < 1000; i++ {
		name := fmt.Sprintf("pg-c%04d", i)
		fmt.Fprintf(&y, "    %s:\n      hosts:\n", name)
		for s := 1; s <= 3; s++ {
			role := "replica"
			if s == 1 {
				role = "primary"
			}
			fmt.Fprintf(&y, "        10.%d.%d.%d: { pg_seq: %d, pg_role: %s%s }\n", i/250, i%250, s, s, role, map[bool]string{true: ", pg_offline_query: true"}[s == 3])
		}
		fmt.Fprintf(&y, "      vars: { pg_cluster: %s }\n", name)
		// Every other cluster has switched over to member 2.
		leader := name + "-1"
		if i%2 == 1 {
			leader = name + "-2"
		}
		st := state(name, leader, name+"-1:replica", name+"-2:replica", name+"-3:replica")
		st.Members[leader].Role = patroni.RolePrimary
		dcs[name] = st
	}
	inv := loadInventory(b, y.String())
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, err := Compute(inv, dcs, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if len(p.Clusters) != 1000 {
			b.Fatalf("%d clusters", len(p.Clusters))
		}
	}
}

// TestComputeSyncStandbyStaleKey: after a failover pg-test-1 -> pg-test-2,
// a sync key still naming the old leader marks nobody as sync standby in
// the plan (Patroni's is_sync_standby), until pg-test-2 rewrites it.
func TestComputeSyncStandbyStaleKey(t *testing.T) {
	inv := loadInventory(t, testInventory)
	st := state("pg-test", "pg-test-2", "pg-test-1:replica", "pg-test-2:primary", "pg-test-3:replica")
	st.SynchronousMode, st.SyncLeader, st.SyncStandbys = true, "pg-test-1", []string{"pg-test-2", "pg-test-3"}
	p, err := Compute(inv, map[string]*patroni.ClusterState{"pg-test": st}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range p.Clusters[0].Members {
		if m.SyncStandby {
			t.Errorf("%s marked sync standby by the old leader's sync key", m.Name)
		}
	}
	st.SyncLeader = "pg-test-2"
	p, err = Compute(inv, map[string]*patroni.ClusterState{"pg-test": st}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range p.Clusters[0].Members {
		if want := m.Name == "pg-test-3"; m.SyncStandby != want {
			t.Errorf("%s: SyncStandby %v, want %v (the leader itself is never one)", m.Name, m.SyncStandby, want)
		}
	}
}

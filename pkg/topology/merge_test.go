package topology

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/jmespath/go-jmespath"

	"github.com/pgsvc/pgsvc/pkg/patroni"
)

const mergeInventory = `all:
  children:
    pg-test:
      hosts:
        127.0.0.11: { pg_seq: 1, pg_role: primary }
        127.0.0.12: { pg_seq: 2, pg_role: replica }
        127.0.0.13: { pg_seq: 3, pg_role: replica, pg_offline_query: true }
      vars: { pg_cluster: pg-test }
    pg-duo:
      hosts:
        127.0.0.21: { pg_seq: 1, pg_role: primary }
        127.0.0.22: { pg_seq: 2, pg_role: replica, pg_offline_query: true }
      vars: { pg_cluster: pg-duo }
    pg-off:
      hosts:
        127.0.0.31: { pg_seq: 1, pg_role: primary }
        127.0.0.32: { pg_seq: 2, pg_role: offline }
      vars: { pg_cluster: pg-off }
`

func mustParse(t testing.TB, src string) *Inventory {
	t.Helper()
	inv, err := Parse("inv.yml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func i64(n int64) *int64 { return &n }

// live builds a Patroni member as the decoder would: role normalised, raw
// role as written.
func live(name, host, raw string) *patroni.Member {
	role := raw
	if raw == "master" {
		role = patroni.RolePrimary
	}
	return &patroni.Member{Name: name, Host: host, Port: 5432, APIURL: "http://" + host + ":8008/patroni",
		APIHost: host, APIPort: 8008, Role: role, RawRole: raw, State: "running", Timeline: 2, LagBytes: i64(0)}
}

func state(leader string, members ...*patroni.Member) *patroni.ClusterState {
	st := &patroni.ClusterState{Leader: leader, Members: map[string]*patroni.Member{}}
	for _, m := range members {
		st.Members[m.Name] = m
	}
	return st
}

type wantMember struct {
	name, role, reason string
	known, served      bool
}

func TestMerge(t *testing.T) {
	inv := mustParse(t, mergeInventory)
	test, duo, off := inv.Cluster("pg-test"), inv.Cluster("pg-duo"), inv.Cluster("pg-off")
	tests := []struct {
		name       string
		c          *Cluster
		st         *patroni.ClusterState
		opts       MergeOptions
		live       bool
		leaderless bool
		roleLeader string
		want       []wantMember
	}{
		{
			name: "no live data keeps inventory roles",
			c:    test,
			want: []wantMember{
				{"pg-test-1", "primary", "no live data; inventory role", true, true},
				{"pg-test-2", "replica", "no live data; inventory role", true, true},
				{"pg-test-3", "replica", "no live data; inventory role", true, true},
			},
		},
		{
			name: "steady state matches the inventory",
			c:    test,
			st:   state("pg-test-1", live("pg-test-1", "127.0.0.11", "master"), live("pg-test-2", "127.0.0.12", "replica"), live("pg-test-3", "127.0.0.13", "replica")),
			live: true, roleLeader: "pg-test-1",
			want: []wantMember{
				{"pg-test-1", "primary", "holds the leader key", true, true},
				{"pg-test-2", "replica", "Patroni replica", true, true},
				{"pg-test-3", "replica", "Patroni replica", true, true},
			},
		},
		{
			name: "3-member switchover 1 to 2",
			c:    test,
			st:   state("pg-test-2", live("pg-test-1", "127.0.0.11", "replica"), live("pg-test-2", "127.0.0.12", "master"), live("pg-test-3", "127.0.0.13", "replica")),
			live: true, roleLeader: "pg-test-2",
			want: []wantMember{
				{"pg-test-1", "replica", "Patroni replica; inventory says primary", true, true},
				{"pg-test-2", "primary", "holds the leader key", true, true},
				{"pg-test-3", "replica", "Patroni replica", true, true},
			},
		},
		{
			name: "2-member switchover with pg_offline_query",
			c:    duo,
			st:   state("pg-duo-2", live("pg-duo-1", "127.0.0.21", "replica"), live("pg-duo-2", "127.0.0.22", "master")),
			live: true, roleLeader: "pg-duo-2",
			want: []wantMember{
				{"pg-duo-1", "replica", "Patroni replica; inventory says primary", true, true},
				{"pg-duo-2", "primary", "holds the leader key", true, true},
			},
		},
		{
			name: "failover with the old primary unreported",
			c:    test,
			st:   state("pg-test-2", live("pg-test-2", "127.0.0.12", "master"), live("pg-test-3", "127.0.0.13", "replica")),
			live: true, roleLeader: "pg-test-2",
			want: []wantMember{
				{"pg-test-1", "replica", "not reported by Patroni; inventory primary, but pg-test-2 holds the leader key", true, true},
				{"pg-test-2", "primary", "holds the leader key", true, true},
				{"pg-test-3", "replica", "Patroni replica", true, true},
			},
		},
		{
			name: "unreported replica keeps its inventory role",
			c:    test,
			st:   state("pg-test-1", live("pg-test-1", "127.0.0.11", "master"), live("pg-test-2", "127.0.0.12", "replica")),
			live: true, roleLeader: "pg-test-1",
			want: []wantMember{
				{"pg-test-1", "primary", "holds the leader key", true, true},
				{"pg-test-2", "replica", "Patroni replica", true, true},
				{"pg-test-3", "replica", "not reported by Patroni; inventory role", true, true},
			},
		},
		{
			name: "leaderless without a last known leader keeps inventory roles",
			c:    test,
			st:   state("", live("pg-test-1", "127.0.0.11", "demoted"), live("pg-test-2", "127.0.0.12", "replica")),
			live: true, leaderless: true,
			want: []wantMember{
				{"pg-test-1", "primary", "no leader key in DCS; inventory role", true, true},
				{"pg-test-2", "replica", "no leader key in DCS; inventory role", true, true},
				{"pg-test-3", "replica", "no leader key in DCS; not reported by Patroni; inventory role", true, true},
			},
		},
		{
			name: "leaderless with a last known leader keeps it",
			c:    test,
			st:   state("", live("pg-test-1", "127.0.0.11", "demoted"), live("pg-test-2", "127.0.0.12", "replica"), live("pg-test-3", "127.0.0.13", "replica")),
			opts: MergeOptions{LastKnownLeader: "pg-test-2"},
			live: true, leaderless: true, roleLeader: "pg-test-2",
			want: []wantMember{
				{"pg-test-1", "replica", "Patroni member in role demoted; inventory says primary", true, true},
				{"pg-test-2", "primary", "no leader key in DCS; keeping last known leader pg-test-2", true, true},
				{"pg-test-3", "replica", "Patroni replica", true, true},
			},
		},
		{
			name: "leaderless with a last known leader and the inventory primary gone",
			c:    test,
			st:   state("", live("pg-test-2", "127.0.0.12", "replica")),
			opts: MergeOptions{LastKnownLeader: "pg-test-2"},
			live: true, leaderless: true, roleLeader: "pg-test-2",
			want: []wantMember{
				{"pg-test-1", "replica", "not reported by Patroni; inventory primary, but pg-test-2 was the last known leader", true, true},
				{"pg-test-2", "primary", "no leader key in DCS; keeping last known leader pg-test-2", true, true},
				{"pg-test-3", "replica", "not reported by Patroni; inventory role", true, true},
			},
		},
		{
			name: "unknown member is not served by default",
			c:    duo,
			st:   state("pg-duo-1", live("pg-duo-1", "127.0.0.21", "master"), live("pg-duo-2", "127.0.0.22", "replica"), live("pg-duo-9", "127.0.0.29", "replica"), live("pg-duo-10", "127.0.0.30", "replica")),
			live: true, roleLeader: "pg-duo-1",
			want: []wantMember{
				{"pg-duo-1", "primary", "holds the leader key", true, true},
				{"pg-duo-2", "replica", "Patroni replica", true, true},
				{"pg-duo-10", "replica", "not in the inventory; Patroni replica; not served (unknown members are excluded)", false, false},
				{"pg-duo-9", "replica", "not in the inventory; Patroni replica; not served (unknown members are excluded)", false, false},
			},
		},
		{
			name: "unknown member served with IncludeUnknown, even as leader",
			c:    duo,
			st:   state("pg-duo-9", live("pg-duo-1", "127.0.0.21", "replica"), live("pg-duo-9", "127.0.0.29", "master")),
			opts: MergeOptions{IncludeUnknown: true},
			live: true, roleLeader: "pg-duo-9",
			want: []wantMember{
				{"pg-duo-1", "replica", "Patroni replica; inventory says primary", true, true},
				{"pg-duo-2", "replica", "not reported by Patroni; inventory role", true, true},
				{"pg-duo-9", "primary", "not in the inventory; holds the leader key", false, true},
			},
		},
		{
			name: "Patroni 4.x role strings",
			c:    test,
			st:   state("pg-test-3", live("pg-test-1", "127.0.0.11", "primary"), live("pg-test-2", "127.0.0.12", "replica"), live("pg-test-3", "127.0.0.13", "primary")),
			live: true, roleLeader: "pg-test-3",
			want: []wantMember{
				{"pg-test-1", "replica", "Patroni primary without the leader key; inventory says primary", true, true},
				{"pg-test-2", "replica", "Patroni replica", true, true},
				{"pg-test-3", "primary", "holds the leader key", true, true},
			},
		},
		{
			name: "standby leader of a standby cluster is the primary",
			c:    duo,
			st:   state("pg-duo-1", live("pg-duo-1", "127.0.0.21", "standby_leader"), live("pg-duo-2", "127.0.0.22", "replica")),
			live: true, roleLeader: "pg-duo-1",
			want: []wantMember{
				{"pg-duo-1", "primary", "holds the leader key (standby leader)", true, true},
				{"pg-duo-2", "replica", "Patroni replica", true, true},
			},
		},
		{
			name: "inventory offline stays offline as a Patroni replica",
			c:    off,
			st:   state("pg-off-1", live("pg-off-1", "127.0.0.31", "master"), live("pg-off-2", "127.0.0.32", "replica")),
			live: true, roleLeader: "pg-off-1",
			want: []wantMember{
				{"pg-off-1", "primary", "holds the leader key", true, true},
				{"pg-off-2", "offline", "Patroni replica", true, true},
			},
		},
		{
			name: "inventory offline promoted becomes primary",
			c:    off,
			st:   state("pg-off-2", live("pg-off-1", "127.0.0.31", "replica"), live("pg-off-2", "127.0.0.32", "master")),
			live: true, roleLeader: "pg-off-2",
			want: []wantMember{
				{"pg-off-1", "replica", "Patroni replica; inventory says primary", true, true},
				{"pg-off-2", "primary", "holds the leader key", true, true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Merge(tt.c, tt.st, tt.opts)
			if v.Cluster != tt.c || v.Live != tt.live || v.Leaderless != tt.leaderless || v.RoleLeader != tt.roleLeader {
				t.Errorf("view live=%v leaderless=%v roleLeader=%q, want %v %v %q", v.Live, v.Leaderless, v.RoleLeader, tt.live, tt.leaderless, tt.roleLeader)
			}
			wantLeader := ""
			if tt.st != nil {
				wantLeader = tt.st.Leader
			}
			if v.Leader != wantLeader {
				t.Errorf("Leader = %q, want %q", v.Leader, wantLeader)
			}
			var got []wantMember
			primaries := 0
			for _, m := range v.Members {
				got = append(got, wantMember{m.Name, m.Role, m.RoleReason, m.Known, m.Served})
				if m.Vars["pg_role"] != m.Role {
					t.Errorf("%s: Vars pg_role = %v, want %s", m.Name, m.Vars["pg_role"], m.Role)
				}
				if m.Role == "primary" {
					primaries++
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("members:\n got %+v\nwant %+v", got, tt.want)
			}
			if primaries > 1 {
				t.Errorf("%d primaries, want at most one", primaries)
			}
		})
	}
}

// selectNames runs a selector over the served members' documents, as the
// services package does, and returns the instance names.
func selectNames(t *testing.T, expr *jmespath.JMESPath, v *View) []string {
	t.Helper()
	var docs []any
	for _, m := range v.Members {
		if m.Served {
			docs = append(docs, m.Vars)
		}
	}
	res, err := expr.Search(docs)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	list, _ := res.([]any)
	for _, d := range list {
		names = append(names, d.(map[string]any)["pg_instance"].(string))
	}
	return names
}

func service(t *testing.T, c *Cluster, name string) *ServiceDef {
	t.Helper()
	for _, s := range c.Services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("cluster %s has no service %s", c.Name, name)
	return nil
}

// TestSeedSelections checks that config/pigsty.yml, without live data,
// selects what Pigsty's Service / Access page shows for pg-test.
func TestSeedSelections(t *testing.T) {
	inv, err := Load("../../config/pigsty.yml")
	if err != nil {
		t.Fatal(err)
	}
	v := Merge(inv.Cluster("pg-test"), nil, MergeOptions{})
	tests := []struct {
		service          string
		selected, backup []string
	}{
		{"primary", []string{"pg-test-1", "pg-test-3", "pg-test-2"}, nil},
		{"replica", []string{"pg-test-1", "pg-test-3", "pg-test-2"}, []string{"pg-test-1"}},
		{"default", []string{"pg-test-1", "pg-test-3", "pg-test-2"}, nil},
		{"offline", []string{"pg-test-3"}, []string{"pg-test-2"}},
		{"standby", []string{"pg-test-1", "pg-test-3", "pg-test-2"}, []string{"pg-test-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			s := service(t, v.Cluster, tt.service)
			if got := selectNames(t, s.SelectorExpr, v); !reflect.DeepEqual(got, tt.selected) {
				t.Errorf("selector picks %v, want %v", got, tt.selected)
			}
			var backup []string
			if s.BackupExpr != nil {
				backup = selectNames(t, s.BackupExpr, v)
			}
			if !reflect.DeepEqual(backup, tt.backup) {
				t.Errorf("backup picks %v, want %v", backup, tt.backup)
			}
		})
	}
}

// TestSwitchoverSelections is the gap this project closes: after a 2-member
// switchover the offline service must still have a server that passes
// /replica (the old primary, as backup), and after a 3-member switchover
// the replica service must make the new primary the backup.
func TestSwitchoverSelections(t *testing.T) {
	inv := mustParse(t, mergeInventory)
	tests := []struct {
		name             string
		c                *Cluster
		st               *patroni.ClusterState
		service          string
		selected, backup []string
	}{
		{"duo offline", inv.Cluster("pg-duo"),
			state("pg-duo-2", live("pg-duo-1", "127.0.0.21", "replica"), live("pg-duo-2", "127.0.0.22", "master")),
			"offline", []string{"pg-duo-2"}, []string{"pg-duo-1"}},
		{"three replica", inv.Cluster("pg-test"),
			state("pg-test-2", live("pg-test-1", "127.0.0.11", "replica"), live("pg-test-2", "127.0.0.12", "master"), live("pg-test-3", "127.0.0.13", "replica")),
			"replica", []string{"pg-test-1", "pg-test-2", "pg-test-3"}, []string{"pg-test-2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Merge(tt.c, tt.st, MergeOptions{})
			s := service(t, tt.c, tt.service)
			if got := selectNames(t, s.SelectorExpr, v); !reflect.DeepEqual(got, tt.selected) {
				t.Errorf("selector picks %v, want %v", got, tt.selected)
			}
			if got := selectNames(t, s.BackupExpr, v); !reflect.DeepEqual(got, tt.backup) {
				t.Errorf("backup picks %v, want %v", got, tt.backup)
			}
		})
	}
}

func TestMergeSelectorDocument(t *testing.T) {
	inv := mustParse(t, mergeInventory)
	c := inv.Cluster("pg-test")
	m2 := live("pg-test-2", "127.0.0.12", "replica")
	m2.LagBytes = i64(4096)
	m2.Timeline = 3
	m2.Tags = map[string]any{"noloadbalance": true, "failover_priority": 2}
	m2.NoLoadBalance = true
	st := state("pg-test-1", live("pg-test-1", "127.0.0.11", "master"), m2, live("pg-test-9", "127.0.0.19", "replica"))
	st.SynchronousMode, st.SyncLeader, st.SyncStandbys = true, "pg-test-1", []string{"pg-test-2"}
	v := Merge(c, st, MergeOptions{IncludeUnknown: true})
	doc := func(name string) map[string]any {
		for _, m := range v.Members {
			if m.Name == name {
				return m.Vars
			}
		}
		t.Fatalf("no member %s", name)
		return nil
	}
	tests := []struct {
		member, key string
		want        any
	}{
		{"pg-test-1", "pg_role", "primary"},
		{"pg-test-1", "pg_inventory_role", "primary"},
		{"pg-test-1", "pg_instance", "pg-test-1"},
		{"pg-test-1", "pg_seq", 1.0},
		{"pg-test-1", "pg_port", 5432.0},
		{"pg-test-1", "pg_cluster", "pg-test"},
		{"pg-test-1", "inventory_hostname", "127.0.0.11"},
		{"pg-test-1", "patroni_live", true},
		{"pg-test-1", "patroni_leader", true},
		{"pg-test-1", "patroni_role", "primary"},
		{"pg-test-1", "patroni_state", "running"},
		{"pg-test-1", "patroni_timeline", 2.0},
		{"pg-test-1", "patroni_lag", 0.0},
		{"pg-test-1", "patroni_sync", false},
		{"pg-test-1", "patroni_tags", map[string]any{}},
		{"pg-test-1", "patroni_noloadbalance", false},
		{"pg-test-2", "patroni_leader", false},
		{"pg-test-2", "patroni_lag", 4096.0},
		{"pg-test-2", "patroni_timeline", 3.0},
		{"pg-test-2", "patroni_sync", true},
		{"pg-test-2", "patroni_tags", map[string]any{"noloadbalance": true, "failover_priority": 2.0}},
		{"pg-test-2", "patroni_noloadbalance", true},
		{"pg-test-2", "patroni_nofailover", false},
		{"pg-test-3", "patroni_live", false},
		{"pg-test-3", "patroni_role", nil},
		{"pg-test-3", "patroni_state", nil},
		{"pg-test-3", "patroni_timeline", nil},
		{"pg-test-3", "patroni_lag", nil},
		{"pg-test-3", "pg_offline_query", true},
		{"pg-test-9", "pg_inventory_role", nil},
		{"pg-test-9", "pg_role", "replica"},
		{"pg-test-9", "inventory_hostname", "127.0.0.19"},
		{"pg-test-9", "pg_cluster", "pg-test"},
		{"pg-test-9", "patroni_live", true},
	}
	for _, tt := range tests {
		t.Run(tt.member+"/"+tt.key, func(t *testing.T) {
			got, ok := doc(tt.member)[tt.key]
			if !ok {
				t.Fatalf("key absent")
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("= %#v, want %#v", got, tt.want)
			}
		})
	}
	if _, ok := doc("pg-test-9")["pg_seq"]; ok {
		t.Errorf("unknown member has pg_seq; want it absent")
	}
	// The inventory is not modified by the merge.
	if got := c.Member("pg-test-1").Vars["patroni_live"]; got != nil {
		t.Errorf("inventory Vars gained patroni_live = %v", got)
	}

	// Selectors over live facts, as docs/selector-fields.md shows them.
	selectors := []struct {
		expr string
		want []string
	}{
		{"[? pg_seq == `1`]", []string{"pg-test-1"}},
		{"[? !patroni_noloadbalance ]", []string{"pg-test-1", "pg-test-3", "pg-test-9"}},
		{"[? patroni_sync ]", []string{"pg-test-2"}},
		{"[? pg_role == `replica` && patroni_lag != null && patroni_lag < `1048576` ]", []string{"pg-test-2", "pg-test-9"}},
		{"[? pg_inventory_role == `primary` ]", []string{"pg-test-1"}},
		{"[? patroni_tags.failover_priority == `2` ]", []string{"pg-test-2"}},
	}
	for _, s := range selectors {
		t.Run(s.expr, func(t *testing.T) {
			expr, err := CompileSelector(s.expr)
			if err != nil {
				t.Fatal(err)
			}
			if got := selectNames(t, expr, v); !reflect.DeepEqual(got, s.want) {
				t.Errorf("selects %v, want %v", got, s.want)
			}
		})
	}
}

func TestMergeUnknownMemberPorts(t *testing.T) {
	inv := mustParse(t, strings.Replace(mergeInventory, "vars: { pg_cluster: pg-duo }", "vars: { pg_cluster: pg-duo, pgbouncer_port: 7432, pg_weight: 50 }", 1))
	m := live("pg-duo-9", "127.0.0.29", "replica")
	m.Port, m.APIPort = 15432, 18008
	v := Merge(inv.Cluster("pg-duo"), state("pg-duo-1", m), MergeOptions{IncludeUnknown: true})
	u := v.Members[len(v.Members)-1]
	got := [5]any{u.Address, u.PgPort, u.PgbouncerPort, u.PatroniPort, u.Weight}
	want := [5]any{"127.0.0.29", 15432, 7432, 18008, 50}
	if got != want {
		t.Errorf("address, pg_port, pgbouncer_port, patroni_port, weight = %v, want %v", got, want)
	}
	if u.Inv != nil || u.InventoryRole != "" || u.Live != m {
		t.Errorf("unknown member: Inv=%v InventoryRole=%q Live=%p, want nil, \"\", %p", u.Inv, u.InventoryRole, u.Live, m)
	}
}

func TestMergeNilCluster(t *testing.T) {
	if v := Merge(nil, state("x"), MergeOptions{}); v == nil || len(v.Members) != 0 {
		t.Errorf("Merge(nil) = %+v, want an empty view", v)
	}
}

// TestSelectorDocExamples keeps the examples of docs/selector-fields.md
// loadable: their selectors must compile and their fields must validate.
func TestSelectorDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/selector-fields.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	start := strings.Index(text, "```yaml\n")
	if start < 0 {
		t.Fatal("no yaml example block")
	}
	block := text[start+len("```yaml\n"):]
	block = block[:strings.Index(block, "```")]
	var b strings.Builder
	b.WriteString("all:\n  children:\n    pg-test:\n      hosts:\n        127.0.0.11: { pg_seq: 1, pg_role: primary }\n      vars:\n        pg_cluster: pg-test\n")
	for _, line := range strings.Split(block, "\n") {
		b.WriteString("        " + line + "\n")
	}
	inv, err := Parse("selector-fields.md", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(inv.Clusters[0].Services); n != 4+3 {
		t.Errorf("%d services, want the 4 defaults + 3 examples", n)
	}
}

// TestRoleReasonsShared: two merges give their replicas one copy of the
// role reason (the plan keeps it for every member of the fleet).
func TestRoleReasonsShared(t *testing.T) {
	inv := mustParse(t, mergeInventory)
	c := inv.Cluster("pg-test")
	st := state("pg-test-2", live("pg-test-1", "127.0.0.11", "replica"), live("pg-test-2", "127.0.0.12", "master"), live("pg-test-3", "127.0.0.13", "replica"))
	a, b := Merge(c, st, MergeOptions{}), Merge(c, st, MergeOptions{})
	ra, rb := a.Members[2].RoleReason, b.Members[2].RoleReason
	if ra == "" || ra != rb || unsafe.StringData(ra) != unsafe.StringData(rb) {
		t.Fatalf("role reasons %q and %q are two copies", ra, rb)
	}
}

// TestMergeRefusesTwinNames: an unknown member named like another member's
// backup twin is not served (its cluster's twin layout would hold two
// servers of one name); one whose base name is no member is.
func TestMergeRefusesTwinNames(t *testing.T) {
	inv := mustParse(t, mergeInventory)
	st := state("pg-test-1",
		live("pg-test-1", "127.0.0.11", "master"), live("pg-test-2", "127.0.0.12", "replica"),
		live("pg-test-1"+BackupTwinSuffix, "127.0.0.21", "replica"),
		live("pg-x"+BackupTwinSuffix, "127.0.0.22", "replica"))
	v := Merge(inv.Cluster("pg-test"), st, MergeOptions{IncludeUnknown: true})
	got := map[string]*MemberView{}
	for _, m := range v.Members {
		got[m.Name] = m
	}
	if m := got["pg-test-1.backup"]; m == nil || m.Served || m.TwinClash != "pg-test-1" || !strings.Contains(m.RoleReason, "backup twin name of member pg-test-1") {
		t.Errorf("pg-test-1.backup: %+v, want not served, TwinClash pg-test-1", m)
	}
	if m := got["pg-x.backup"]; m == nil || !m.Served || m.TwinClash != "" {
		t.Errorf("pg-x.backup: %+v, want served (no member pg-x)", m)
	}
	if m := got["pg-test-1"]; m == nil || !m.Served {
		t.Errorf("pg-test-1: %+v, want served", m)
	}
}

// TestMergeSyncAfterFailover: after a failover pg-test-1 -> pg-test-2 the
// sync key still names the old leader until the new one rewrites it.
// Patroni then counts nobody as a sync standby; neither does patroni_sync,
// so a "[? patroni_sync ]" service does not follow a stale key (to the new
// primary, or to a replica the new primary does not wait for).
func TestMergeSyncAfterFailover(t *testing.T) {
	inv := mustParse(t, mergeInventory)
	c := inv.Cluster("pg-test")
	expr, err := CompileSelector("[? patroni_sync ]")
	if err != nil {
		t.Fatal(err)
	}
	st := state("pg-test-2", live("pg-test-1", "127.0.0.11", "replica"),
		live("pg-test-2", "127.0.0.12", "master"), live("pg-test-3", "127.0.0.13", "replica"))
	st.SynchronousMode = true
	st.SyncLeader, st.SyncStandbys = "pg-test-1", []string{"pg-test-2", "pg-test-3"}
	if got := selectNames(t, expr, Merge(c, st, MergeOptions{})); len(got) != 0 {
		t.Errorf("stale sync key of the old leader: patroni_sync selects %v, want none", got)
	}
	// The new leader rewrites the key: pg-test-3 (Patroni compares names
	// case-insensitively, as PostgreSQL does).
	st2 := *st
	st2.SyncLeader, st2.SyncStandbys = "PG-TEST-2", []string{"Pg-Test-3"}
	if got := selectNames(t, expr, Merge(c, &st2, MergeOptions{})); !reflect.DeepEqual(got, []string{"pg-test-3"}) {
		t.Errorf("rewritten sync key: patroni_sync selects %v, want [pg-test-3]", got)
	}
	// No leader key (a switchover's gap, roles kept): the sync key as it
	// stands, as Patroni's REST /sync answers; a selector on patroni_sync
	// is not emptied by every switchover.
	st3 := st2
	st3.Leader = ""
	if got := selectNames(t, expr, Merge(c, &st3, MergeOptions{LastKnownLeader: "pg-test-2"})); !reflect.DeepEqual(got, []string{"pg-test-3"}) {
		t.Errorf("no leader key: patroni_sync selects %v, want [pg-test-3]", got)
	}
}

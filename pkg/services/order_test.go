package services

import (
	"reflect"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/topology"
)

// TestBuildSelectorOrder: servers come in the order the selectors return
// the members, as Pigsty's template iterates them (json_query's result):
// the selector's members first, then the members only the backup selector
// returns, in its order. `balance first` sends every session to the first
// server with a free slot, and hash balancing maps over the server list,
// so member order in place of a sort_by or reverse selector's order would
// move traffic elsewhere than Pigsty does. A member a selector returns
// twice is one server, where it first appears.
func TestBuildSelectorOrder(t *testing.T) {
	members := []mem{
		known(1, "10.10.10.11", "primary", "primary", false),
		known(3, "10.10.10.13", "replica", "replica", true),
		known(2, "10.10.10.12", "replica", "replica", false),
	}
	for _, tc := range []struct {
		selector, backup string
		want             []string
	}{
		// Filters keep the members' order.
		{"[]", "", []string{"pg-test-1", "pg-test-3", "pg-test-2"}},
		{"sort_by([], &pg_seq)", "", []string{"pg-test-1", "pg-test-2", "pg-test-3"}},
		{"reverse(sort_by([], &pg_seq))", "", []string{"pg-test-3", "pg-test-2", "pg-test-1"}},
		{"reverse([? pg_role == `replica`])", "[? pg_role == `primary`]", []string{"pg-test-2", "pg-test-3", "pg-test-1 backup"}},
		// A member both select is a backup server in the selector's place.
		{"reverse(@)", "[? pg_role == `primary`]", []string{"pg-test-2", "pg-test-3", "pg-test-1 backup"}},
		// Backup-only members in the backup selector's order.
		{"[? pg_seq == `2`]", "reverse([? pg_seq != `2`])", []string{"pg-test-2", "pg-test-3 backup", "pg-test-1 backup"}},
		{"[? pg_seq == `2`]", "sort_by(@, &pg_seq)", []string{"pg-test-2 backup", "pg-test-1 backup", "pg-test-3 backup"}},
		// Returned twice: served once, where it first appears.
		{"[[1], [0], [1]] | []", "", []string{"pg-test-3", "pg-test-1"}},
		{"[[2]] | []", "[[0], [1], [0]] | []", []string{"pg-test-2", "pg-test-1 backup", "pg-test-3 backup"}},
	} {
		d := def(t, "svc", 5440, "postgres", "/", tc.selector, tc.backup)
		svcs, err := Build(view("pg-test", "", []*topology.ServiceDef{d}, members...))
		if err != nil {
			t.Fatalf("selector %s, backup %s: %v", tc.selector, tc.backup, err)
		}
		var got []string
		for _, sv := range svcs[0].Servers {
			n := sv.Name
			if sv.Backup {
				n += " backup"
			}
			got = append(got, n)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("selector %s, backup %s: servers %q, want %q", tc.selector, tc.backup, got, tc.want)
		}
	}
}

// TestBuildSortInPlace: go-jmespath's sort_by sorts the list it is given in
// place. Each selector must run over its own copy of the members: a
// sort_by(@, ...) selector left the list sorted for the selectors run after
// it (the same service's backup, the cluster's next services), whose
// servers then came in its order instead of the members'.
func TestBuildSortInPlace(t *testing.T) {
	members := []mem{
		known(1, "10.10.10.11", "primary", "primary", false),
		known(3, "10.10.10.13", "replica", "replica", true),
		known(2, "10.10.10.12", "replica", "replica", false),
	}
	defs := []*topology.ServiceDef{
		def(t, "sorted", 5440, "postgres", "/", "sort_by(@, &pg_seq)", "[? pg_role == `replica`]"),
		def(t, "filtered", 5441, "postgres", "/", "[? pg_seq > `0`]", ""),
		def(t, "onlybackup", 5442, "postgres", "/", "[? pg_seq == `0`]", "reverse(sort_by(@, &pg_seq))"),
		def(t, "filtered2", 5443, "postgres", "/", "[? pg_seq > `0`]", "[? pg_seq > `0`]"),
	}
	svcs, err := Build(view("pg-test", "", defs, members...))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"sorted":     {"pg-test-1", "pg-test-2 backup", "pg-test-3 backup"},
		"filtered":   {"pg-test-1", "pg-test-3", "pg-test-2"},
		"onlybackup": {"pg-test-3 backup", "pg-test-2 backup", "pg-test-1 backup"},
		"filtered2":  {"pg-test-1 backup", "pg-test-3 backup", "pg-test-2 backup"},
	}
	for _, s := range svcs {
		var got []string
		for _, sv := range s.Servers {
			n := sv.Name
			if sv.Backup {
				n += " backup"
			}
			got = append(got, n)
		}
		if !reflect.DeepEqual(got, want[s.Service]) {
			t.Errorf("%s: servers %q, want %q", s.Service, got, want[s.Service])
		}
	}
}

// TestBuildBackupAddrs: Pigsty's "# service backups" comment lists what the
// backup selector returned, in its order; the backup servers list the
// selected ones in the selector's order first. BackupAddrs keeps the
// comment's order when the two differ, and is nil when they agree (filters
// keep the members' order: every default service).
func TestBuildBackupAddrs(t *testing.T) {
	members := []mem{
		known(1, "10.10.10.11", "primary", "primary", false),
		known(3, "10.10.10.13", "replica", "replica", true),
		known(2, "10.10.10.12", "replica", "replica", false),
	}
	for _, tc := range []struct {
		selector, backup string
		want             []string
	}{
		{"[]", "[? pg_role == `primary` || pg_role == `offline` ]", nil},
		{"[]", "", nil},
		{"[? pg_seq == `2`]", "reverse([? pg_seq != `2`])", nil},
		{"[? pg_seq >= `2`]", "reverse(@)", []string{"10.10.10.12", "10.10.10.13", "10.10.10.11"}},
		{"sort_by(@, &pg_seq)", "[? pg_role == `replica`]", []string{"10.10.10.13", "10.10.10.12"}},
	} {
		d := def(t, "svc", 5440, "postgres", "/", tc.selector, tc.backup)
		svcs, err := Build(view("pg-test", "", []*topology.ServiceDef{d}, members...))
		if err != nil {
			t.Fatal(err)
		}
		if got := svcs[0].BackupAddrs; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("selector %s, backup %s: BackupAddrs %q, want %q", tc.selector, tc.backup, got, tc.want)
		}
	}
}

// TestBuildSortByKeepsInventory: sort_by over a list inside the member
// documents sorts that list in place in go-jmespath. The documents share
// their lists with the inventory (every member, every plan, whatever reads
// the inventory meanwhile): a selector must leave them as they are.
func TestBuildSortByKeepsInventory(t *testing.T) {
	dbs := func() []any {
		return []any{map[string]any{"name": "b", "k": 2.0}, map[string]any{"name": "a", "k": 1.0}}
	}
	shared := dbs()
	d := def(t, "svc", 5440, "postgres", "/", "[? sort_by(pg_databases, &k)[0].name == 'a']", "sort_by(@, &pg_seq)")
	v := view("pg-test", "", []*topology.ServiceDef{d},
		known(1, "10.10.10.11", "primary", "primary", false),
		known(2, "10.10.10.12", "replica", "replica", false))
	for _, m := range v.Members {
		m.Vars["pg_databases"] = shared
	}
	svcs, err := Build(v)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(svcs[0].Servers); n != 2 {
		t.Errorf("%d servers, want both members (selected, and backup)", n)
	}
	if !reflect.DeepEqual(shared, dbs()) {
		t.Errorf("the inventory's pg_databases is now %v, want it as it was: %v", shared, dbs())
	}
}

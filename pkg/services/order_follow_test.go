package services

import (
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/topology"
)

// TestBuildFollowsSelectorOrder: Pigsty's template writes the selector's
// members in the order the selector returns them, then the backup
// selector's other members in its order (HAProxy sends a backend's traffic
// to its first available backup server, and `balance first` fills servers
// in order). A selector that sorts or reverses the members orders the
// servers as Pigsty's layout does; a member returned twice is one server.
func TestBuildFollowsSelectorOrder(t *testing.T) {
	ms := []mem{
		known(1, "10.10.10.11", "primary", "primary", false),
		known(3, "10.10.10.13", "replica", "replica", true),
		known(2, "10.10.10.12", "replica", "replica", false),
		known(4, "10.10.10.14", "replica", "replica", false),
	}
	tests := []struct{ selector, backup, want string }{
		{"[]", "", "pg-o-1 pg-o-3 pg-o-2 pg-o-4"},
		{"sort_by(@, &pg_seq)", "", "pg-o-1 pg-o-2 pg-o-3 pg-o-4"},
		{"reverse(@)", "[? pg_role == `primary`]", "pg-o-4 pg-o-2 pg-o-3 pg-o-1(backup)"},
		{"[? pg_offline_query]", "reverse([? pg_role == `replica`])", "pg-o-3(backup) pg-o-4(backup) pg-o-2(backup)"},
		{"[? pg_role == `primary`]", "sort_by([? pg_role == `replica`], &pg_seq)", "pg-o-1 pg-o-2(backup) pg-o-3(backup) pg-o-4(backup)"},
		{"[@[2], @[0], @[2]]", "", "pg-o-2 pg-o-1"},
	}
	for _, tc := range tests {
		v := view("pg-o", "", []*topology.ServiceDef{def(t, "x", 5999, "postgres", "/read-only", tc.selector, tc.backup)}, ms...)
		got, err := Build(v)
		if err != nil {
			t.Fatalf("%s / %s: %v", tc.selector, tc.backup, err)
		}
		var names []string
		for _, sv := range got[0].Servers {
			n := sv.Name
			if sv.Backup {
				n += "(backup)"
			}
			names = append(names, n)
		}
		if g := strings.Join(names, " "); g != tc.want {
			t.Errorf("selector %s, backup %s:\n got %s\nwant %s", tc.selector, tc.backup, g, tc.want)
		}
	}
}

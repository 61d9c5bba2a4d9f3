package services

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/jmespath/go-jmespath"

	"github.com/pgsvc/pgsvc/pkg/topology"
)

// seedServices are pg_default_services of the seed page plus its standby example.
var seedServices = []struct{ name, port, dest, check, selector, backup string }{
	{"primary", "5433", "default", "/primary", "[]", ""},
	{"replica", "5434", "default", "/read-only", "[]", "[? pg_role == `primary` || pg_role == `offline` ]"},
	{"default", "5436", "postgres", "/primary", "[]", ""},
	{"offline", "5438", "postgres", "/replica", "[? pg_role == `offline` || pg_offline_query ]", "[? pg_role == `replica` && !pg_offline_query]"},
	{"standby", "5435", "default", "/sync", "[]", "[? pg_role == `primary`]"},
}

func def(t testing.TB, name string, port int, dest, check, selector, backup string) *topology.ServiceDef {
	t.Helper()
	d := &topology.ServiceDef{Name: name, Port: port, IP: "*", Dest: dest, Check: check, Selector: selector,
		Backup: backup, Maxconn: 5000, Balance: "roundrobin", SelectorExpr: mustCompile(t, selector)}
	if backup != "" {
		d.BackupExpr = mustCompile(t, backup)
	}
	return d
}

func mustCompile(t testing.TB, expr string) *jmespath.JMESPath {
	t.Helper()
	e, err := topology.CompileSelector(expr)
	if err != nil {
		t.Fatalf("compile %q: %v", expr, err)
	}
	return e
}

func seedDefs(t testing.TB) []*topology.ServiceDef {
	var out []*topology.ServiceDef
	for _, s := range seedServices {
		var port int
		fmt.Sscan(s.port, &port)
		out = append(out, def(t, s.name, port, s.dest, s.check, s.selector, s.backup))
	}
	return out
}

// mem describes one member for a test view.
type mem struct {
	seq           int
	addr          string
	invRole, role string
	offlineQuery  bool
	known, served bool
}

// view builds a merged view the way topology.Merge shapes it: Vars hold every
// variable plus pg_instance, numbers as float64.
func view(cluster, leader string, defs []*topology.ServiceDef, ms ...mem) *topology.View {
	c := &topology.Cluster{Name: cluster, Namespace: "/pg", Services: defs,
		Vars: map[string]any{"pg_cluster": cluster, "pg_default_service_dest": "pgbouncer", "pg_port": 5432.0, "pgbouncer_port": 6432.0}}
	v := &topology.View{Cluster: c, Leader: leader, Live: leader != ""}
	for _, m := range ms {
		name := fmt.Sprintf("%s-%d", cluster, m.seq)
		vars := map[string]any{
			"pg_cluster": cluster, "pg_seq": float64(m.seq), "pg_role": m.role, "pg_instance": name,
			"inventory_hostname": m.addr, "pg_offline_query": m.offlineQuery, "pg_weight": 100.0,
			"pg_port": 5432.0, "pgbouncer_port": 6432.0, "patroni_port": 8008.0,
		}
		mv := &topology.MemberView{Name: name, Address: m.addr, InventoryRole: m.invRole, Role: m.role,
			Known: m.known, Served: m.served, Vars: vars}
		if m.known {
			mv.Inv = &topology.Member{Name: name, Host: m.addr, Seq: m.seq, Role: m.invRole, Weight: 100,
				PgPort: 5432, PgbouncerPort: 6432, PatroniPort: 8008, Vars: vars}
			c.Members = append(c.Members, mv.Inv)
		}
		v.Members = append(v.Members, mv)
	}
	return v
}

func known(seq int, addr, invRole, role string, offline bool) mem {
	return mem{seq: seq, addr: addr, invRole: invRole, role: role, offlineQuery: offline, known: true, served: true}
}

// line renders a server the way HAProxy would see it, to keep expectations short.
func line(s Server) string {
	l := fmt.Sprintf("%s %s:%d check port %d weight %d", s.Name, s.Address, s.Port, s.CheckPort, s.Weight)
	if s.Backup {
		l += " backup"
	}
	return l
}

func lines(s Service) []string {
	out := []string{}
	for _, sv := range s.Servers {
		out = append(out, line(sv))
	}
	return out
}

func TestBuild(t *testing.T) {
	// The seed's pg-test lists its hosts as 1, 3, 2 (pg-test-3 has pg_offline_query).
	static := func(defs []*topology.ServiceDef) *topology.View {
		return view("pg-test", "", defs,
			known(1, "10.10.10.11", "primary", "primary", false),
			known(3, "10.10.10.13", "replica", "replica", true),
			known(2, "10.10.10.12", "replica", "replica", false))
	}
	tests := []struct {
		name string
		v    *topology.View
		want map[string][]string
	}{
		{
			name: "seed examples without live state",
			v:    static(nil),
			want: map[string][]string{
				"pg-test-primary": {"pg-test-1 10.10.10.11:6432 check port 8008 weight 100", "pg-test-3 10.10.10.13:6432 check port 8008 weight 100", "pg-test-2 10.10.10.12:6432 check port 8008 weight 100"},
				"pg-test-replica": {"pg-test-1 10.10.10.11:6432 check port 8008 weight 100 backup", "pg-test-3 10.10.10.13:6432 check port 8008 weight 100", "pg-test-2 10.10.10.12:6432 check port 8008 weight 100"},
				"pg-test-default": {"pg-test-1 10.10.10.11:5432 check port 8008 weight 100", "pg-test-3 10.10.10.13:5432 check port 8008 weight 100", "pg-test-2 10.10.10.12:5432 check port 8008 weight 100"},
				"pg-test-offline": {"pg-test-3 10.10.10.13:5432 check port 8008 weight 100", "pg-test-2 10.10.10.12:5432 check port 8008 weight 100 backup"},
				"pg-test-standby": {"pg-test-1 10.10.10.11:6432 check port 8008 weight 100 backup", "pg-test-3 10.10.10.13:6432 check port 8008 weight 100", "pg-test-2 10.10.10.12:6432 check port 8008 weight 100"},
			},
		},
		{
			name: "3 members after switchover to pg-test-2",
			v: view("pg-test", "pg-test-2", nil,
				known(1, "10.10.10.11", "primary", "replica", false),
				known(3, "10.10.10.13", "replica", "replica", true),
				known(2, "10.10.10.12", "replica", "primary", false)),
			want: map[string][]string{
				"pg-test-primary": {"pg-test-1 10.10.10.11:6432 check port 8008 weight 100", "pg-test-3 10.10.10.13:6432 check port 8008 weight 100", "pg-test-2 10.10.10.12:6432 check port 8008 weight 100"},
				"pg-test-replica": {"pg-test-1 10.10.10.11:6432 check port 8008 weight 100", "pg-test-3 10.10.10.13:6432 check port 8008 weight 100", "pg-test-2 10.10.10.12:6432 check port 8008 weight 100 backup"},
				"pg-test-default": {"pg-test-1 10.10.10.11:5432 check port 8008 weight 100", "pg-test-3 10.10.10.13:5432 check port 8008 weight 100", "pg-test-2 10.10.10.12:5432 check port 8008 weight 100"},
				"pg-test-offline": {"pg-test-3 10.10.10.13:5432 check port 8008 weight 100", "pg-test-1 10.10.10.11:5432 check port 8008 weight 100 backup"},
				"pg-test-standby": {"pg-test-1 10.10.10.11:6432 check port 8008 weight 100", "pg-test-3 10.10.10.13:6432 check port 8008 weight 100", "pg-test-2 10.10.10.12:6432 check port 8008 weight 100 backup"},
			},
		},
		{
			name: "2 members after switchover: offline falls back to the old primary",
			v: view("pg-duo", "pg-duo-2", nil,
				known(1, "10.10.10.21", "primary", "replica", false),
				known(2, "10.10.10.22", "replica", "primary", true)),
			want: map[string][]string{
				"pg-duo-replica": {"pg-duo-1 10.10.10.21:6432 check port 8008 weight 100", "pg-duo-2 10.10.10.22:6432 check port 8008 weight 100 backup"},
				"pg-duo-offline": {"pg-duo-2 10.10.10.22:5432 check port 8008 weight 100", "pg-duo-1 10.10.10.21:5432 check port 8008 weight 100 backup"},
			},
		},
		{
			name: "members not served are left out",
			v: view("pg-test", "pg-test-1", nil,
				known(1, "10.10.10.11", "primary", "primary", false),
				mem{seq: 4, addr: "10.10.10.14", role: "replica", served: false}),
			want: map[string][]string{
				"pg-test-replica": {"pg-test-1 10.10.10.11:6432 check port 8008 weight 100 backup"},
				"pg-test-offline": {},
			},
		},
		{
			name: "unknown member served when included",
			v: view("pg-test", "pg-test-1", nil,
				known(1, "10.10.10.11", "primary", "primary", false),
				mem{seq: 4, addr: "10.10.10.14", role: "replica", served: true}),
			want: map[string][]string{
				"pg-test-replica": {"pg-test-1 10.10.10.11:6432 check port 8008 weight 100 backup", "pg-test-4 10.10.10.14:6432 check port 8008 weight 100"},
				"pg-test-offline": {"pg-test-4 10.10.10.14:5432 check port 8008 weight 100 backup"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.v.Cluster.Services = seedDefs(t)
			got, err := Build(tc.v)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			byName := map[string]Service{}
			for _, s := range got {
				byName[s.Name] = s
			}
			if len(got) != len(seedServices) {
				t.Fatalf("got %d services, want %d", len(got), len(seedServices))
			}
			for name, want := range tc.want {
				s, ok := byName[name]
				if !ok {
					t.Fatalf("service %s missing", name)
				}
				if g := lines(s); !reflect.DeepEqual(g, want) {
					t.Errorf("%s servers:\n got %q\nwant %q", name, g, want)
				}
			}
		})
	}
}

func TestBuildServiceFields(t *testing.T) {
	v := view("pg-test", "pg-test-1", nil, known(1, "10.10.10.11", "primary", "primary", false))
	d := def(t, "etl", 5439, "6543", "/replica", "[]", "")
	d.IP, d.Maxconn, d.Balance, d.Options = "127.0.0.10", 100, "leastconn", "inter 1s"
	v.Cluster.Services = []*topology.ServiceDef{d, def(t, "direct", 5440, "default", "/", "[]", "")}
	v.Cluster.Vars["pg_default_service_dest"] = "postgres"
	got, err := Build(v)
	if err != nil {
		t.Fatal(err)
	}
	want := []Service{
		{Cluster: "pg-test", Name: "pg-test-etl", Service: "etl", IP: "127.0.0.10", Port: 5439, Check: "/replica", Dest: "6543",
			DestPort: 6543, Balance: "leastconn", Maxconn: 100, DefaultServer: "inter 1s",
			Servers: []Server{{Name: "pg-test-1", Address: "10.10.10.11", Port: 6543, CheckPort: 8008, Weight: 100, Selected: true,
				Reason: "selected by [] (role primary, holds leader key)"}}},
		{Cluster: "pg-test", Name: "pg-test-direct", Service: "direct", IP: "*", Port: 5440, Check: "/", Dest: "postgres",
			DestPort: 5432, Balance: "roundrobin", Maxconn: 5000, DefaultServer: DefaultServerOptions,
			Servers: []Server{{Name: "pg-test-1", Address: "10.10.10.11", Port: 5432, CheckPort: 8008, Weight: 100, Selected: true,
				Reason: "selected by [] (role primary, holds leader key)"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestBuildReasons(t *testing.T) {
	v := view("pg-test", "pg-test-2", nil,
		known(1, "10.10.10.11", "primary", "replica", false),
		known(2, "10.10.10.12", "replica", "primary", false))
	v.Cluster.Services = seedDefs(t)[3:4] // offline
	v.Cluster.Services[0].Selector = "[? pg_role == `offline` || pg_offline_query ]"
	got, err := Build(v)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"not selected by [? pg_role == `offline` || pg_offline_query ] (role replica, inventory primary); backup: matches [? pg_role == `replica` && !pg_offline_query]"}
	var reasons []string
	for _, s := range got[0].Servers {
		reasons = append(reasons, s.Reason)
	}
	if !reflect.DeepEqual(reasons, want) {
		t.Errorf("reasons:\n got %q\nwant %q", reasons, want)
	}
	v.Cluster.Services = seedDefs(t)[1:2] // replica
	got, err = Build(v)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{
		"selected by [] (role replica, inventory primary); not backup: does not match [? pg_role == `primary` || pg_role == `offline` ]",
		"selected by [] (role primary, inventory replica, holds leader key); backup: matches [? pg_role == `primary` || pg_role == `offline` ]",
	}
	reasons = nil
	for _, s := range got[0].Servers {
		reasons = append(reasons, s.Reason)
	}
	if !reflect.DeepEqual(reasons, want) {
		t.Errorf("reasons:\n got %q\nwant %q", reasons, want)
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name, selector, backup, dest, clusterDest string
		field, msg                                string
	}{
		{name: "selector returns a number", selector: "length(@)", field: "selector", msg: "returned a number, want a list of members"},
		{name: "selector returns null", selector: "nosuchfield", field: "selector", msg: "returned null"},
		{name: "selector is a projection", selector: "[].pg_role", field: "selector", msg: "element 0 is a string, want a member"},
		{name: "selector builds foreign objects", selector: "[].{a: pg_role}", field: "selector", msg: "not a member of the cluster"},
		{name: "runtime type error", selector: "[? length(pg_seq) > `1`]", field: "selector", msg: "Invalid type"},
		{name: "backup returns an object", selector: "[]", backup: "[0]", field: "backup", msg: "returned an object"},
		{name: "bad dest", selector: "[]", dest: "nowhere", field: "dest", msg: `"nowhere"`},
		{name: "bad pg_default_service_dest", selector: "[]", dest: "default", clusterDest: "default", field: "dest", msg: "pg_default_service_dest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := view("pg-test", "pg-test-1", nil, known(1, "10.10.10.11", "primary", "primary", false))
			if tc.clusterDest != "" {
				v.Cluster.Vars["pg_default_service_dest"] = tc.clusterDest
			}
			dest := tc.dest
			if dest == "" {
				dest = "postgres"
			}
			v.Cluster.Services = []*topology.ServiceDef{def(t, "x", 5999, dest, "/", tc.selector, tc.backup)}
			_, err := Build(v)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if e.Cluster != "pg-test" || e.Service != "x" || e.Field != tc.field {
				t.Errorf("error names %s/%s/%s, want pg-test/x/%s", e.Cluster, e.Service, e.Field, tc.field)
			}
			if !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(err.Error(), "cluster pg-test: service x: "+tc.field+": ") {
				t.Errorf("error %q does not name the field or lacks %q", err, tc.msg)
			}
		})
	}
}

func TestBuildUncompiledSelectors(t *testing.T) {
	v := view("pg-test", "pg-test-1", nil, known(1, "10.10.10.11", "primary", "primary", false))
	v.Cluster.Services = []*topology.ServiceDef{{Name: "x", Port: 5999, Selector: "[]", Backup: "[? pg_role == `primary`]"}}
	got, err := Build(v)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || len(got[0].Servers) != 1 || !got[0].Servers[0].Backup || got[0].Dest != "pgbouncer" {
		t.Errorf("got %+v", got)
	}
	v.Cluster.Services[0].Selector = "[?"
	if _, err := Build(v); err == nil || !strings.Contains(err.Error(), "service x: selector: compile") {
		t.Errorf("bad selector: err = %v", err)
	}
}

func TestBuildDeterministic(t *testing.T) {
	mk := func() *topology.View {
		v := view("pg-test", "pg-test-2", nil,
			known(1, "10.10.10.11", "primary", "replica", false),
			known(3, "10.10.10.13", "replica", "replica", true),
			known(2, "10.10.10.12", "replica", "primary", false))
		v.Cluster.Services = seedDefs(t)
		return v
	}
	first, err := Build(mk())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		again, err := Build(mk())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(first, again) {
			t.Fatalf("run %d differs:\n%+v\n%+v", i, first, again)
		}
	}
}

func TestBuildNilView(t *testing.T) {
	if _, err := Build(nil); err == nil {
		t.Error("Build(nil) returned no error")
	}
}

func TestBuildUsesMergedPortsAndLastKnownLeader(t *testing.T) {
	v := view("pg-test", "", nil,
		known(1, "10.10.10.11", "primary", "primary", false),
		known(2, "10.10.10.12", "replica", "replica", false))
	// The merge decided these (e.g. an unknown member's live ports); they win
	// over the inventory's fields.
	v.Members[1].PgbouncerPort, v.Members[1].PatroniPort, v.Members[1].Weight = 7432, 9008, 50
	v.Live, v.Leaderless, v.RoleLeader = true, true, "pg-test-1"
	v.Cluster.Services = seedDefs(t)[1:2] // replica
	v.Cluster.Services[0].Source, v.Cluster.Services[0].Line = "pg_default_services[1]", 0
	got, err := Build(v)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"pg-test-1 10.10.10.11:6432 check port 8008 weight 100 backup", "pg-test-2 10.10.10.12:7432 check port 9008 weight 50"}
	if g := lines(got[0]); !reflect.DeepEqual(g, want) {
		t.Errorf("servers:\n got %q\nwant %q", g, want)
	}
	if r := got[0].Servers[0].Reason; !strings.Contains(r, "(role primary, last known leader, no leader key)") {
		t.Errorf("reason %q does not say the leader is only last known", r)
	}
	v.Cluster.Services[0].Selector, v.Cluster.Services[0].SelectorExpr = "length(@)", mustCompile(t, "length(@)")
	if _, err := Build(v); err == nil || !strings.HasPrefix(err.Error(), "cluster pg-test: service replica (pg_default_services[1]): selector: ") {
		t.Errorf("err = %v, want it to name the definition", err)
	}
}

// TestBuildFencedIsForcedDown: a member being demoted (topology's Fenced)
// is forced DOWN in the write services (check /primary: primary, default)
// and in those only; its weight stays what the inventory says (the file
// carries no fence). In the twin layout the force rides on its active twin.
func TestBuildFencedIsForcedDown(t *testing.T) {
	v := view("pg-test", "pg-test-1", seedDefs(t),
		known(1, "10.10.10.11", "primary", "primary", false),
		known(2, "10.10.10.12", "replica", "replica", false))
	v.Members[0].Fenced, v.Members[0].FenceReason = true, "Patroni is stopping its PostgreSQL"
	got, err := Build(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range got {
		for _, sv := range s.Servers {
			want := sv.Name == "pg-test-1" && WriteCheck(s.Check)
			if sv.ForceDown != want {
				t.Errorf("%s/%s ForceDown %v, want %v", s.Name, sv.Name, sv.ForceDown, want)
			}
			if sv.Weight != 100 {
				t.Errorf("%s/%s weight %d, want 100", s.Name, sv.Name, sv.Weight)
			}
			if sv.ForceDown && !strings.Contains(sv.Reason, "forced DOWN, sessions cut: Patroni is stopping its PostgreSQL") {
				t.Errorf("%s/%s reason %q does not say why it is forced DOWN", s.Name, sv.Name, sv.Reason)
			}
		}
	}
	tw, err := Twins(got)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range tw {
		for _, sv := range s.Servers {
			if sv.ForceDown && (sv.Disabled || sv.Member != "" && sv.Member != "pg-test-1") {
				t.Errorf("%s/%s forced DOWN while inactive (%v) or not the fenced member", s.Name, sv.Name, sv.Disabled)
			}
		}
	}
}

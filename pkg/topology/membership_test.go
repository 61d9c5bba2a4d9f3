package topology

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func loadLayout(t *testing.T, name string) *Inventory {
	t.Helper()
	inv, err := Load(filepath.Join("testdata", "layouts", name))
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// clusterLine sums up a cluster: name, DCS key, members as name@host/role.
func clusterLine(c *Cluster) string {
	var ms []string
	for _, m := range c.Members {
		ms = append(ms, m.Name+"@"+m.Host+"/"+m.Role)
	}
	return c.Name + " " + c.DCSKey + " [" + strings.Join(ms, " ") + "]"
}

func clusterLines(inv *Inventory) []string {
	var out []string
	for _, c := range inv.Clusters {
		out = append(out, clusterLine(c))
	}
	return out
}

func TestMembershipLayouts(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		// One group per host, pg_cluster at host level; the etcd and
		// infra groups list the same hosts and add only their own vars.
		{"build.yml", []string{
			"el9 el9 [el9-1@10.10.10.9/primary]",
			"el10 el10 [el10-1@10.10.10.10/primary]",
			"d12 d12 [d12-1@10.10.10.12/primary]",
		}},
		// One group, six clusters by host-level pg_cluster; Patroni keys
		// under pg_shard/pg_group.
		{"citus.yml", []string{
			"pg-meta pg-meta [pg-meta-1@10.10.10.10/primary]",
			"pg-citus1 pg-citus/0 [pg-citus1-1@10.10.10.21/primary pg-citus1-2@10.10.10.22/replica]",
			"pg-citus2 pg-citus/1 [pg-citus2-1@10.10.10.31/primary pg-citus2-2@10.10.10.32/replica]",
			"pg-citus3 pg-citus/2 [pg-citus3-1@10.10.10.41/primary pg-citus3-2@10.10.10.42/replica]",
			"pg-citus4 pg-citus/3 [pg-citus4-1@10.10.10.51/primary pg-citus4-2@10.10.10.52/replica]",
			"pg-citus5 pg-citus/4 [pg-citus5-1@10.10.10.61/primary pg-citus5-2@10.10.10.62/replica]",
			"pg-citus6 pg-citus/5 [pg-citus6-1@10.10.10.71/primary pg-citus6-2@10.10.10.72/replica]",
		}},
		// The provider group has no pg_cluster: not a cluster.
		{"provider.yml", []string{
			"pg-a pg-a [pg-a-1@10.10.10.31/primary pg-a-2@10.10.10.32/replica]",
			"pg-b pg-b [pg-b-1@10.10.10.41/primary pg-b-2@10.10.10.42/replica]",
		}},
		{"precedence.yml", []string{
			"pg-test pg-test [pg-test-1@10.10.10.11/primary pg-test-2@10.10.10.12/replica]",
			"pg-solo pg-solo [pg-solo-1@10.10.10.13/primary]",
		}},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSuffix(tt.file, ".yml"), func(t *testing.T) {
			got := clusterLines(loadLayout(t, tt.file))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("clusters:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tt.want, "\n     "))
			}
		})
	}
}

func TestMembershipCitusFields(t *testing.T) {
	inv := loadLayout(t, "citus.yml")
	for i := 1; i <= 6; i++ {
		c := inv.Clusters[i]
		if !c.Citus || c.Mode != "citus" || c.Shard != "pg-citus" || c.Scope != "pg-citus" || c.Group != i-1 {
			t.Errorf("%s: citus=%v mode=%q shard=%q scope=%q group=%d, want citus scope pg-citus group %d",
				c.Name, c.Citus, c.Mode, c.Shard, c.Scope, c.Group, i-1)
		}
		// Group vars reach the members; host vars they share are cluster vars.
		if c.Vars["pg_primary_db"] != "citus" || c.Vars["pg_vip_address"] == nil || c.Vars["pg_seq"] != nil {
			t.Errorf("%s vars: pg_primary_db=%v pg_vip_address=%v pg_seq=%v", c.Name, c.Vars["pg_primary_db"], c.Vars["pg_vip_address"], c.Vars["pg_seq"])
		}
		if len(c.Services) != 4 {
			t.Errorf("%s: %d services, want the 4 defaults", c.Name, len(c.Services))
		}
	}
	meta := inv.Cluster("pg-meta")
	if meta.Citus || meta.Mode != "pgsql" || meta.Scope != "pg-meta" {
		t.Errorf("pg-meta: citus=%v mode=%q scope=%q", meta.Citus, meta.Mode, meta.Scope)
	}
	// infra/etcd vars reach the shared host.
	if meta.Members[0].Vars["infra_seq"] != 1.0 || meta.Members[0].Vars["etcd_cluster"] != "etcd" {
		t.Errorf("pg-meta-1 vars lack the infra/etcd group vars: %v", meta.Members[0].Vars)
	}
}

func TestMembershipPrecedence(t *testing.T) {
	inv := loadLayout(t, "precedence.yml")
	c := inv.Cluster("pg-test")
	m1, m2 := c.Member("pg-test-1"), c.Member("pg-test-2")
	if m1.Weight != 99 || m1.PgbouncerPort != 16432 {
		t.Errorf("pg-test-1 weight %d pgbouncer_port %d, want 99 (aa-prio has the higher priority) and 16432", m1.Weight, m1.PgbouncerPort)
	}
	if m2.Weight != 30 || m2.PgbouncerPort != 16432 || m2.Vars["pg_offline_query"] != true {
		t.Errorf("pg-test-2 weight %d pgbouncer_port %d offline %v, want 30 (zz-tuned after pg-test), 16432 (pg-test after aa-early), true",
			m2.Weight, m2.PgbouncerPort, m2.Vars["pg_offline_query"])
	}
	for _, m := range []*Member{m1, m2} {
		if m.Vars["region"] != "dc1" {
			t.Errorf("%s region %v, want dc1", m.Name, m.Vars["region"])
		}
	}
	solo := inv.Cluster("pg-solo").Members[0]
	if solo.Weight != 10 || solo.Vars["region"] != "global" {
		t.Errorf("pg-solo-1 weight %d region %v, want all.vars", solo.Weight, solo.Vars["region"])
	}
	// Cluster vars: what both members agree on, no identities.
	if c.Vars["pg_weight"] != nil || c.Vars["region"] != "dc1" || c.Vars["pg_role"] != nil || c.Vars["inventory_hostname"] != nil {
		t.Errorf("pg-test cluster vars: pg_weight=%v region=%v pg_role=%v", c.Vars["pg_weight"], c.Vars["region"], c.Vars["pg_role"])
	}
}

func TestMembershipRejects(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"members disagree on a cluster setting", `all:
  children:
    g1: { hosts: { 10.0.0.1: { pg_cluster: pg-x, pg_seq: 1, pg_role: primary, pg_namespace: /a } } }
    g2: { hosts: { 10.0.0.2: { pg_cluster: pg-x, pg_seq: 2, pg_role: replica, pg_namespace: /b } } }
`, `inv.yml:4: cluster pg-x, host 10.0.0.2: pg_namespace: is a cluster setting: every member needs the same value (host 10.0.0.1 has another)`},
		{"host-level invalid name", `all:
  children:
    g1: { hosts: { 10.0.0.1: { pg_cluster: "a b", pg_seq: 1, pg_role: primary } } }
`, `inv.yml:3: all.children.g1.hosts.10.0.0.1.pg_cluster: invalid cluster name "a b" (want letters, digits, '-', '_', '.')`},
		{"citus without pg_group", `all:
  children:
    pg-c:
      hosts: { 10.0.0.1: { pg_cluster: pg-c1, pg_seq: 1, pg_role: primary } }
      vars: { pg_mode: citus, pg_shard: pg-c }
`, `inv.yml: cluster pg-c1: pg_group: pg_mode citus needs pg_group, a non-negative integer (Patroni's citus group), got null`},
		{"citus without pg_shard", `all:
  children:
    pg-c:
      hosts: { 10.0.0.1: { pg_cluster: pg-c1, pg_group: 1, pg_seq: 1, pg_role: primary } }
      vars: { pg_mode: citus }
`, `inv.yml: cluster pg-c1: pg_shard: invalid shard name "": pg_mode citus needs pg_shard (letters, digits, '-', '_', '.'), Patroni's scope`},
		{"two clusters on one citus group", `all:
  children:
    pg-c:
      hosts:
        10.0.0.1: { pg_cluster: pg-c1, pg_group: 1, pg_seq: 1, pg_role: primary }
        10.0.0.2: { pg_cluster: pg-c2, pg_group: 1, pg_seq: 1, pg_role: primary }
      vars: { pg_mode: citus, pg_shard: pg-c }
`, `inv.yml: cluster pg-c2: pg_group: pg_shard pg-c and pg_group 1 in namespace /pg are also cluster pg-c1's: Patroni would mix both clusters' keys`},
		{"group is its own ancestor", `all:
  children:
    a:
      children:
        a: { hosts: { 10.0.0.1: { pg_cluster: x, pg_seq: 1, pg_role: primary } } }
`, `inv.yml:3: all.children.a: group a is its own ancestor`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, err := Parse("inv.yml", []byte(tt.yaml))
			if inv != nil {
				t.Fatalf("Parse accepted it: %v", clusterLines(inv))
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v, want an *Error", err)
			}
			if e.Error() != tt.want {
				t.Errorf("first error:\n got %s\nwant %s", e.Error(), tt.want)
			}
		})
	}
}

func TestInventoryGroups(t *testing.T) {
	inv := loadLayout(t, "provider.yml")
	if got := strings.Join(inv.GroupHosts("proxy"), " "); got != "10.10.10.20 10.10.10.21" {
		t.Errorf("groups[proxy] = %q", got)
	}
	inv = loadLayout(t, "precedence.yml")
	if got := strings.Join(inv.GroupHosts("dc1"), " "); got != "10.10.10.11 10.10.10.12" {
		t.Errorf("groups[dc1] = %q, want its children's hosts, each once", got)
	}
	if got := strings.Join(inv.Hosts, " "); got != "10.10.10.11 10.10.10.12 10.10.10.13" {
		t.Errorf("hosts = %q", got)
	}
	if inv.GroupHosts("nope") != nil {
		t.Error("unknown group has hosts")
	}
}

// TestProviderNotAGroupIsLocal: Pigsty runs service_local.yml when
// pg_service_provider is not in groups (each member's own HAProxy carries
// its cluster's services), and placement.Place does the same. Clusters
// naming such a provider do not share HAProxies: the same ports are fine,
// and their members' own ports are checked as for local clusters.
func TestProviderNotAGroupIsLocal(t *testing.T) {
	src := `all:
  children:
    pg-a:
      hosts: { 10.10.10.11: { pg_seq: 1, pg_role: primary } }
      vars: { pg_cluster: pg-a }
    pg-b:
      hosts: { 10.10.10.12: { pg_seq: 1, pg_role: primary } }
      vars: { pg_cluster: pg-b }
  vars:
    pg_service_provider: proxy
`
	inv, err := Parse("inv.yml", []byte(src))
	if err != nil {
		t.Fatalf("provider proxy names no group: want both clusters local (distinct HAProxies), got %v", err)
	}
	if len(inv.Clusters) != 2 {
		t.Fatalf("%d clusters, want 2", len(inv.Clusters))
	}

	// A member's own port under a service port: rejected as for local.
	clash := strings.Replace(src, "vars: { pg_cluster: pg-b }",
		`vars: { pg_cluster: pg-b, pg_services: [ { name: bouncer, port: 6432, selector: "[]" } ] }`, 1)
	_, err = Parse("inv.yml", []byte(clash))
	want := `inv.yml:8: cluster pg-b, host 10.10.10.12: pg_services[0].port: service "bouncer": port 6432 collides with pgbouncer_port on the member (every member's HAProxy binds the service ports)`
	if err == nil || err.Error() != want {
		t.Errorf("service on the member's pgbouncer port:\n got %v\nwant %s", err, want)
	}

	// An existing group is a provider: its clusters share its HAProxies.
	shared := strings.Replace(src, "  vars:\n    pg_service_provider", "    proxy: { hosts: { 10.10.10.20: {} } }\n  vars:\n    pg_service_provider", 1)
	_, err = Parse("inv.yml", []byte(shared))
	if err == nil || !strings.Contains(err.Error(), "on provider group proxy") {
		t.Errorf("provider group proxy exists: want the shared-port error, got %v", err)
	}
}

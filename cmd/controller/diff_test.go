package main

import (
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// listFrom serves decoded namespaces from kvs as etcd would to diff.
func listFrom(kvs []patroni.KV) func(ns string) (map[string]*patroni.ClusterState, error) {
	return func(ns string) (map[string]*patroni.ClusterState, error) {
		return patroni.Decode(ns, kvs), nil
	}
}

// serversOf summarises one HAProxy section of desired as "name" / "name(backup)".
func serversOf(t *testing.T, desired []services.Service, section string) string {
	t.Helper()
	for _, s := range desired {
		if s.Name != section {
			continue
		}
		var parts []string
		for _, sv := range s.Servers {
			if sv.Backup {
				parts = append(parts, sv.Name+"(backup)")
			} else {
				parts = append(parts, sv.Name)
			}
		}
		return strings.Join(parts, " ")
	}
	t.Fatalf("no section %s", section)
	return ""
}

// TestDiffDesiredCitusFollowsLiveState: `controller diff` computes what the
// controller would set now from etcd. For Pigsty's Citus layout Patroni's keys
// are <ns>/<pg_shard>/<pg_group>/...: the switchover inside group 1 must reach
// pg-citus2 (it used to be looked up under the decoded key "pg-citus/1" by
// cluster name, so diff ignored live state and reported drift).
func TestDiffDesiredCitusFollowsLiveState(t *testing.T) {
	inv, err := plan.LoadInventory(citusInv, topology.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kvs, _, err := patroni.LoadSnapshot(citusSnap)
	if err != nil {
		t.Fatal(err)
	}
	desired, _, err := desiredFrom(inv, listFrom(kvs), false)
	if err != nil {
		t.Fatal(err)
	}
	for section, want := range map[string]string{
		"pg-citus2-replica": "pg-citus2-1 pg-citus2-2(backup)",
		"pg-citus2-offline": "pg-citus2-1(backup)",
		"pg-citus1-replica": "pg-citus1-1(backup) pg-citus1-2",
	} {
		if got := serversOf(t, desired, section); got != want {
			t.Errorf("%s = %q, want %q (the live roles after the group 1 switchover)", section, got, want)
		}
	}
}

// TestDiffDesiredNamespacesDoNotMix: each cluster takes the state of its
// own scope in its own pg_namespace; a cluster of the same scope in another
// namespace (another deployment sharing the etcd) must not replace it.
func TestDiffDesiredNamespacesDoNotMix(t *testing.T) {
	inv, err := topology.Parse("inv.yml", []byte(`all:
  children:
    pg-a:
      hosts:
        10.10.10.11: { pg_seq: 1, pg_role: primary }
        10.10.10.12: { pg_seq: 2, pg_role: replica }
      vars: { pg_cluster: pg-a }
    pg-b:
      hosts:
        10.10.10.21: { pg_seq: 1, pg_role: primary }
      vars: { pg_cluster: pg-b, pg_namespace: /zz }
`))
	if err != nil {
		t.Fatal(err)
	}
	member := func(host, role string) []byte {
		return []byte(`{"conn_url":"postgres://` + host + `:5432/postgres","api_url":"http://` + host + `:8008/patroni","state":"running","role":"` + role + `","timeline":2}`)
	}
	kvs := []patroni.KV{
		// pg-a in its own namespace: switched over to pg-a-2.
		{Key: "/pg/pg-a/leader", Value: []byte("pg-a-2"), ModRevision: 5},
		{Key: "/pg/pg-a/members/pg-a-1", Value: member("10.10.10.11", "replica"), ModRevision: 5},
		{Key: "/pg/pg-a/members/pg-a-2", Value: member("10.10.10.12", "primary"), ModRevision: 5},
		// Another pg-a under /zz, not this inventory's: pg-a-1 leads there.
		{Key: "/zz/pg-a/leader", Value: []byte("pg-a-1"), ModRevision: 6},
		{Key: "/zz/pg-a/members/pg-a-1", Value: member("10.10.10.11", "primary"), ModRevision: 6},
		{Key: "/zz/pg-b/leader", Value: []byte("pg-b-1"), ModRevision: 6},
		{Key: "/zz/pg-b/members/pg-b-1", Value: member("10.10.10.21", "primary"), ModRevision: 6},
	}
	desired, _, err := desiredFrom(inv, listFrom(kvs), false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := serversOf(t, desired, "pg-a-replica"), "pg-a-1 pg-a-2(backup)"; got != want {
		t.Errorf("pg-a-replica = %q, want %q (pg-a's own namespace /pg: pg-a-2 leads)", got, want)
	}
}

// TestDiffDesiredWarns: a cluster without a leader key is planned from its
// inventory roles in a one-shot diff, and the diff says so (it did not: the
// drift it shows may be one the running controller would not make).
func TestDiffDesiredWarns(t *testing.T) {
	inv, err := topology.Parse("inv.yml", []byte(`all:
  children:
    pg-a:
      hosts:
        10.10.10.11: { pg_seq: 1, pg_role: primary }
        10.10.10.12: { pg_seq: 2, pg_role: replica }
      vars: { pg_cluster: pg-a }
`))
	if err != nil {
		t.Fatal(err)
	}
	member := func(host, role string) []byte {
		return []byte(`{"conn_url":"postgres://` + host + `:5432/postgres","api_url":"http://` + host + `:8008/patroni","state":"running","role":"` + role + `","timeline":2}`)
	}
	kvs := []patroni.KV{
		{Key: "/pg/pg-a/members/pg-a-1", Value: member("10.10.10.11", "primary"), ModRevision: 5},
		{Key: "/pg/pg-a/members/pg-a-2", Value: member("10.10.10.12", "replica"), ModRevision: 5},
		{Key: "/pg/pg-a/members/pg-a-3", Value: []byte("{not json"), ModRevision: 5},
	}
	_, warnings, err := desiredFrom(inv, listFrom(kvs), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) == 0 {
		t.Fatal("no warning for a cluster without a leader key and with a bad member key")
	}
	for _, w := range warnings {
		if !strings.HasPrefix(w, "pg-a: ") {
			t.Errorf("warning %q does not name its cluster", w)
		}
	}
	joined := strings.Join(warnings, "\n")
	for _, want := range []string{"no leader key", "DCS key /pg/pg-a/members/pg-a-3"} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings %q lack %q", warnings, want)
		}
	}
}

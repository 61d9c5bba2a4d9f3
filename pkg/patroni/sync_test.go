package patroni

import "testing"

// syncCluster decodes a three-member cluster p1 (leader unless leader is
// given otherwise), p2, p3 with the given sync and config values ("" leaves
// the key out).
func syncCluster(t *testing.T, leader, sync, config string) *ClusterState {
	t.Helper()
	kvs := []KV{
		kv("/pg/c/members/p1", member("master", 100, ""), 2),
		kv("/pg/c/members/p2", member("replica", 100, ""), 3),
		kv("/pg/c/members/p3", member("replica", 100, ""), 4),
	}
	if leader != "" {
		kvs = append(kvs, kv("/pg/c/leader", leader, 1))
	}
	if sync != "" {
		kvs = append(kvs, kv("/pg/c/sync", sync, 5))
	}
	if config != "" {
		kvs = append(kvs, kv("/pg/c/config", config, 6))
	}
	cs := Decode("/pg", kvs)["c"]
	if cs == nil {
		t.Fatal("cluster c not decoded")
	}
	if len(cs.Errors) != 0 {
		t.Fatalf("decode errors: %v", cs.Errors)
	}
	return cs
}

// TestIsSyncFollowsPatroni checks IsSync against Patroni's rules: ha.py
// is_sync_standby (a leader key, the sync key's leader matching it, the name
// in sync_standby, case-insensitively) and api.py's sync_standby flag behind
// /sync (a replica, synchronous_mode on and not quorum).
func TestIsSyncFollowsPatroni(t *testing.T) {
	const on = `{"synchronous_mode":true}`
	cases := []struct {
		name, leader, sync, config string
		want                       map[string]bool // members not listed: false
	}{
		{"current leader's sync key", "p1", `{"leader":"p1","sync_standby":"p2"}`, on,
			map[string]bool{"p2": true}},
		{"two standbys, spaces and empty items", "p1", `{"leader":"p1","sync_standby":" p2 ,, p3,"}`, on,
			map[string]bool{"p2": true, "p3": true}},
		// After a failover p1 -> p2, before p2 rewrites the sync key: the
		// key still names the old leader, so nobody is sync (p2 is leader).
		{"stale sync key of the old leader", "p2", `{"leader":"p1","sync_standby":"p2,p3"}`, on, nil},
		// No leader key (a switchover's gap): the sync key as it stands, as
		// Patroni's REST /sync answers; its own leader is never its standby.
		{"no leader key", "", `{"leader":"p1","sync_standby":"p2"}`, on, map[string]bool{"p2": true}},
		{"no leader key, the key's leader listed", "", `{"leader":"p1","sync_standby":"P1,p3"}`, on, map[string]bool{"p3": true}},
		{"no leader key, synchronous_mode off", "", `{"leader":"p1","sync_standby":"p2"}`, `{"synchronous_mode":false}`, nil},
		{"sync key without leader", "p1", `{"sync_standby":"p2"}`, on, nil},
		{"sync key with empty leader", "p1", `{"leader":"","sync_standby":"p2"}`, on, nil},
		{"no sync key", "p1", "", on, nil},
		// Patroni (>= 3.0.3) lowercases both sides, as PostgreSQL does for
		// synchronous_standby_names.
		{"case differences", "p1", `{"leader":"P1","sync_standby":"P2,p3"}`, on,
			map[string]bool{"p2": true, "p3": true}},
		// Patroni compares the sync leader as written: not trimmed.
		{"sync leader with a space", "p1", `{"leader":" p1","sync_standby":"p2"}`, on, nil},
		// The leader is never a sync standby (api.py: role replica only).
		{"leader itself listed", "p1", `{"leader":"p1","sync_standby":"p1,p2"}`, on,
			map[string]bool{"p2": true}},
		// api.py sets sync_standby only when synchronous_mode is on.
		{"synchronous_mode absent", "p1", `{"leader":"p1","sync_standby":"p2"}`, `{"ttl":30}`, nil},
		// Without a (readable) config key Patroni goes on with its last
		// valid dynamic config; the leader keeps a sync key naming itself
		// only in synchronous mode: the sync key decides.
		{"no config key", "p1", `{"leader":"p1","sync_standby":"p2"}`, "", map[string]bool{"p2": true}},
		{"no config key, stale sync key", "p2", `{"leader":"p1","sync_standby":"p2,p3"}`, "", nil},
		{"synchronous_mode false", "p1", `{"leader":"p1","sync_standby":"p2"}`, `{"synchronous_mode":false}`, nil},
		{"synchronous_mode off", "p1", `{"leader":"p1","sync_standby":"p2"}`, `{"synchronous_mode":"off"}`, nil},
		{"synchronous_mode junk", "p1", `{"leader":"p1","sync_standby":"p2"}`, `{"synchronous_mode":"maybe"}`, nil},
		{"synchronous_mode ON", "p1", `{"leader":"p1","sync_standby":"p2"}`, `{"synchronous_mode":"ON"}`,
			map[string]bool{"p2": true}},
		{"synchronous_mode 1", "p1", `{"leader":"p1","sync_standby":"p2"}`, `{"synchronous_mode":1}`,
			map[string]bool{"p2": true}},
		// parse_bool does not trim.
		{"synchronous_mode ' on'", "p1", `{"leader":"p1","sync_standby":"p2"}`, `{"synchronous_mode":" on"}`, nil},
		// Quorum commit (4.x): quorum_standby, never sync_standby.
		{"synchronous_mode quorum", "p1", `{"leader":"p1","sync_standby":"p2","quorum":1}`, `{"synchronous_mode":"Quorum"}`, nil},
		// 4.x is_synchronous_mode is false in a standby cluster.
		{"standby cluster", "p1", `{"leader":"p1","sync_standby":"p2"}`,
			`{"synchronous_mode":true,"standby_cluster":{"host":"10.0.0.1"}}`, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cs := syncCluster(t, c.leader, c.sync, c.config)
			for _, n := range []string{"p1", "p2", "p3", "P2", ""} {
				want := c.want[n]
				if n == "P2" {
					// Not a member here, but Patroni matches it as p2.
					want = c.want["p2"]
				}
				if got := cs.IsSync(n); got != want {
					t.Errorf("IsSync(%q) = %v, want %v (leader %q, sync %q/%q, mode %v quorum %v)",
						n, got, want, cs.Leader, cs.SyncLeader, cs.SyncStandbys, cs.SynchronousMode, cs.QuorumCommit)
				}
			}
		})
	}
	// An unreadable config key is reported, and decides nothing (Patroni
	// keeps its last valid config): the sync key does.
	bad := Decode("/pg", []KV{
		kv("/pg/c/leader", "p1", 1),
		kv("/pg/c/members/p1", member("master", 100, ""), 2),
		kv("/pg/c/members/p2", member("replica", 100, ""), 3),
		kv("/pg/c/sync", `{"leader":"p1","sync_standby":"p2"}`, 5),
		kv("/pg/c/config", `{"synchronous_mode":`, 6),
	})["c"]
	if len(bad.Errors) != 1 || bad.Errors[0].Key != "/pg/c/config" {
		t.Errorf("errors %v, want one on /pg/c/config", bad.Errors)
	}
	if !bad.IsSync("p2") || bad.IsSync("p1") {
		t.Errorf("unreadable config: IsSync(p2) %v, IsSync(p1) %v; want true, false", bad.IsSync("p2"), bad.IsSync("p1"))
	}
	var nilState *ClusterState
	if nilState.IsSync("p2") {
		t.Error("nil state: IsSync true")
	}
}

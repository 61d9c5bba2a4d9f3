package patroni

import (
	"context"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// configState is what a test checks of a cluster's dynamic config flags.
type configState struct {
	failsafe, paused, sync, quorum, standby, read, kept bool
}

func configOf(cs *ClusterState) configState {
	return configState{failsafe: cs.FailsafeMode, paused: cs.Paused, sync: cs.SynchronousMode, quorum: cs.QuorumCommit,
		standby: cs.StandbyCluster, read: cs.ConfigRead, kept: cs.ConfigKept}
}

// configError returns the text of cs's key error for key, "" when none.
func configError(cs *ClusterState, key string) string {
	for _, e := range cs.Errors {
		if e.Key == key {
			return e.Err
		}
	}
	return ""
}

// TestDecoderKeepsLastValidConfig: a config key that turns undecodable
// (bad JSON, not an object) keeps the flags of its last value that decoded,
// which its key error names, as Patroni goes on with its last valid
// dynamic config; so does an absent config key (no error then). A re-list
// keeps them; a scope that vanished forgets them. Decode alone has no
// earlier value: flags off, and its key error says so.
func TestDecoderKeepsLastValidConfig(t *testing.T) {
	const (
		cfgKey = "/pg/c/config"
		good   = `{"ttl":30,"failsafe_mode":true,"pause":"on","synchronous_mode":"quorum","standby_cluster":{"host":"10.1.0.1"}}`
	)
	all := map[string]KV{}
	d := newDecoder("/pg")
	set := func(k KV) { all[k.Key] = k; d.put(k) }
	del := func(key string) { delete(all, key); d.del(key) }
	set(kv("/pg/c/leader", "m1", 1))
	set(kv("/pg/c/members/m1", member("master", 100, ""), 2))
	set(kv("/pg/c/members/m2", member("replica", 100, ""), 3))
	set(kv("/pg/c/sync", `{"leader":"m1","sync_standby":"m2"}`, 4))
	set(kv(cfgKey, good, 5))
	goodFlags := configState{failsafe: true, paused: true, sync: true, quorum: true, standby: true}

	cs := d.clusters()["c"]
	want := goodFlags
	want.read = true
	if got := configOf(cs); got != want || len(cs.Errors) != 0 {
		t.Fatalf("valid config: flags %+v errors %v, want %+v", got, cs.Errors, want)
	}

	kept := goodFlags
	kept.kept = true
	for i, bad := range []string{`{"failsafe_mode":`, `null`, `[1]`, `"failsafe_mode"`, `{"failsafe_mode":false} x`} {
		set(kv(cfgKey, bad, int64(6+i)))
		cs = d.clusters()["c"]
		if got := configOf(cs); got != kept {
			t.Errorf("config %s: flags %+v, want the last valid ones %+v", bad, got, kept)
		}
		if e := configError(cs, cfgKey); !strings.Contains(e, "keeping the last valid config (revision 5: failsafe_mode on, pause on, synchronous_mode quorum, standby_cluster on)") {
			t.Errorf("config %s: key error %q, want it to name the flags kept", bad, e)
		}
		// Patroni 4.x reports quorum standbys as quorum_standby: /sync
		// fails on them, with the flags kept as with the key valid.
		if cs.IsSync("m2") {
			t.Errorf("config %s: m2 sync under the kept quorum commit", bad)
		}
	}

	// A re-list (after a lost watch) with the key changed meanwhile, still bad.
	set(kv(cfgKey, `{`, 20))
	d.reset(all)
	cs = d.clusters()["c"]
	if got := configOf(cs); got != kept || !strings.Contains(configError(cs, cfgKey), "revision 5:") {
		t.Errorf("after a re-list: flags %+v error %q, want the last valid ones of revision 5", got, configError(cs, cfgKey))
	}

	// Deleted: no key error, the flags kept.
	del(cfgKey)
	cs = d.clusters()["c"]
	if got := configOf(cs); got != kept || len(cs.Errors) != 0 {
		t.Errorf("config key deleted: flags %+v errors %v, want the last valid ones %+v and no error", got, cs.Errors, kept)
	}

	// A new valid value (every flag off) is the new last valid one.
	set(kv(cfgKey, `{"ttl":30}`, 21))
	cs = d.clusters()["c"]
	if got := configOf(cs); got != (configState{read: true}) {
		t.Errorf("config {ttl:30}: flags %+v", got)
	}
	set(kv(cfgKey, `{`, 22))
	cs = d.clusters()["c"]
	if got := configOf(cs); got != (configState{kept: true}) ||
		!strings.Contains(configError(cs, cfgKey), "(revision 21: failsafe_mode off, pause off, synchronous_mode off, standby_cluster off)") {
		t.Errorf("bad after {ttl:30}: flags %+v error %q", got, configError(cs, cfgKey))
	}

	// Every key gone: the cluster is forgotten, its config too.
	for k := range all {
		del(k)
	}
	if n := len(d.clusters()); n != 0 {
		t.Fatalf("%d clusters left", n)
	}
	set(kv("/pg/c/leader", "m1", 30))
	set(kv(cfgKey, `{`, 31))
	cs = d.clusters()["c"]
	if got := configOf(cs); got != (configState{}) || !strings.Contains(configError(cs, cfgKey), "no valid config seen") {
		t.Errorf("recreated cluster, bad config: flags %+v error %q, want none kept", got, configError(cs, cfgKey))
	}

	// Decode alone knows no earlier value, and says so.
	one := Decode("/pg", []KV{kv("/pg/c/leader", "m1", 1), kv("/pg/c/members/m2", member("replica", 100, ""), 3),
		kv("/pg/c/sync", `{"leader":"m1","sync_standby":"m2"}`, 4), kv(cfgKey, `{"failsafe_mode":`, 5)})["c"]
	if got := configOf(one); got != (configState{}) {
		t.Errorf("Decode of a bad config: flags %+v, want all off", got)
	}
	if e := configError(one, cfgKey); !strings.HasPrefix(e, "config: invalid JSON object") ||
		!strings.HasSuffix(e, "; no valid config seen: failsafe_mode, pause, synchronous_mode and standby_cluster read as off") {
		t.Errorf("Decode of a bad config: key error %q", e)
	}
	if !one.IsSync("m2") {
		t.Error("Decode of a bad config: with no config known the sync key alone decides, m2 not sync")
	}
}

// TestWatcherKeepsLastValidConfig: through a live watch, a failsafe
// cluster's config key turned to bad JSON keeps failsafe_mode (and the key
// error is reported), also once the leader's lease expired; the next valid
// value is read again.
func TestWatcherKeepsLastValidConfig(t *testing.T) {
	e := newTestEtcd(t)
	cli := e.client(t)
	ctx := context.Background()
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	put(t, cli, "/pg/c/config", `{"ttl":30,"failsafe_mode":true}`)
	put(t, cli, "/pg/c/members/a", pgMember("10.0.0.1", "master", 5), clientv3.WithLease(lease.ID))
	put(t, cli, "/pg/c/leader", "a", clientv3.WithLease(lease.ID))
	put(t, cli, "/pg/c/members/b", pgMember("10.0.0.2", "replica", 5))

	w := NewWatcher(cli, "/pg", zap.NewNop(), fastOpts())
	out := runWatcher(t, w)
	waitSnap(t, out, "failsafe cluster led by a", func(s Snapshot) bool {
		c := s.Clusters["c"]
		return c != nil && c.Leader == "a" && c.FailsafeMode && c.ConfigRead
	})

	put(t, cli, "/pg/c/config", `{"ttl":30,"failsafe_mode":`)
	s := waitSnap(t, out, "config key error", func(s Snapshot) bool { return configError(s.Clusters["c"], "/pg/c/config") != "" })
	if c := s.Clusters["c"]; !c.FailsafeMode || !c.ConfigKept || c.ConfigRead {
		t.Errorf("bad config: failsafe %v kept %v read %v, want the last valid failsafe_mode kept", c.FailsafeMode, c.ConfigKept, c.ConfigRead)
	}
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	s = waitSnap(t, out, "leader key expired", func(s Snapshot) bool { return s.Clusters["c"].Leader == "" })
	if c := s.Clusters["c"]; !c.FailsafeMode || !c.ConfigKept || configError(c, "/pg/c/config") == "" {
		t.Errorf("leader key expired under a bad config: failsafe %v kept %v errors %v, want failsafe_mode kept and the key error", c.FailsafeMode, c.ConfigKept, c.Errors)
	}

	put(t, cli, "/pg/c/config", `{"ttl":30}`)
	waitSnap(t, out, "failsafe_mode turned off", func(s Snapshot) bool {
		c := s.Clusters["c"]
		return !c.FailsafeMode && c.ConfigRead && !c.ConfigKept && len(c.Errors) == 0
	})
}

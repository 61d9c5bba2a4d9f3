package patroni

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

func i64(v int64) *int64 { return &v }

// memberWant is what a fixture test checks of one member.
type memberWant struct {
	role     string
	raw      string
	timeline int64
	host     string
	lag      *int64
}

func TestDecodeFixtures(t *testing.T) {
	tests := []struct {
		file     string
		rev      int64
		leader   string
		leaderRv int64
		optime   int64
		revision int64
		members  map[string]memberWant
	}{
		{
			file: "dcs-initial.json", rev: 28, leader: "pg-test-1", leaderRv: 8, optime: 71531312, revision: 28,
			members: map[string]memberWant{
				"pg-test-1": {RolePrimary, "master", 1, "127.0.0.11", i64(0)},
				"pg-test-2": {RoleReplica, "replica", 1, "127.0.0.12", i64(0)},
				"pg-test-3": {RoleReplica, "replica", 1, "127.0.0.13", i64(0)},
			},
		},
		{
			// pg-test-2 was just killed: its lease has not expired yet, so
			// leader and members/pg-test-2 are still there (the REST answers
			// of the survivors say the same). Replicas report positions past
			// the last status optime: lag clamps to 0.
			file: "dcs-during-failover.json", rev: 92, leader: "pg-test-2", leaderRv: 57, optime: 72321656, revision: 92,
			members: map[string]memberWant{
				"pg-test-1": {RoleReplica, "replica", 2, "127.0.0.11", i64(0)},
				"pg-test-2": {RolePrimary, "master", 2, "127.0.0.12", i64(0)},
				"pg-test-3": {RoleReplica, "replica", 2, "127.0.0.13", i64(0)},
			},
		},
		{
			file: "dcs-after-failover.json", rev: 113, leader: "pg-test-3", leaderRv: 96, optime: 72769432, revision: 113,
			members: map[string]memberWant{
				"pg-test-1": {RoleReplica, "replica", 3, "127.0.0.11", i64(0)},
				"pg-test-3": {RolePrimary, "master", 3, "127.0.0.13", i64(0)},
			},
		},
		{
			file: "dcs-after-switchover.json", rev: 83, leader: "pg-test-2", leaderRv: 57, optime: 72272768, revision: 83,
			members: map[string]memberWant{
				"pg-test-1": {RoleReplica, "replica", 2, "127.0.0.11", i64(0)},
				"pg-test-2": {RolePrimary, "master", 2, "127.0.0.12", i64(0)},
				"pg-test-3": {RoleReplica, "replica", 2, "127.0.0.13", i64(0)},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			kvs, rev, err := LoadSnapshot(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if rev != tc.rev {
				t.Errorf("revision %d, want %d", rev, tc.rev)
			}
			for _, ns := range []string{"/pg", "/pg/", "pg"} {
				got := Decode(ns, kvs)
				if len(got) != 1 {
					t.Fatalf("ns %q: %d clusters, want 1: %v", ns, len(got), keys(got))
				}
				cs := got["pg-test"]
				if cs == nil {
					t.Fatalf("ns %q: no pg-test cluster", ns)
				}
				if len(cs.Errors) != 0 {
					t.Errorf("errors: %v", cs.Errors)
				}
				if cs.Leader != tc.leader || cs.LeaderRevision != tc.leaderRv {
					t.Errorf("leader %q@%d, want %q@%d", cs.Leader, cs.LeaderRevision, tc.leader, tc.leaderRv)
				}
				if cs.LeaderOptime == nil || *cs.LeaderOptime != tc.optime {
					t.Errorf("leader optime %v, want %d", ptrStr(cs.LeaderOptime), tc.optime)
				}
				if cs.Revision != tc.revision {
					t.Errorf("cluster revision %d, want %d", cs.Revision, tc.revision)
				}
				if cs.StandbyCluster || cs.FailsafeMode || cs.Paused || cs.Group != nil {
					t.Errorf("unexpected flags: %+v", cs)
				}
				if len(cs.Members) != len(tc.members) {
					t.Errorf("members %v, want %d", memberNames(cs), len(tc.members))
				}
				for name, w := range tc.members {
					m := cs.Members[name]
					if m == nil {
						t.Errorf("member %s missing", name)
						continue
					}
					if m.Role != w.role || m.RawRole != w.raw || m.Timeline != w.timeline ||
						m.Host != w.host || m.Port != 5432 || m.APIHost != w.host || m.APIPort != 8008 ||
						m.State != "running" || m.Version != "3.0.2" {
						t.Errorf("member %s = %+v, want %+v", name, *m, w)
					}
					if ptrStr(m.LagBytes) != ptrStr(w.lag) {
						t.Errorf("member %s lag %s, want %s", name, ptrStr(m.LagBytes), ptrStr(w.lag))
					}
				}
			}
		})
	}
}

// TestDecodeMatchesREST checks the decoded DCS against what Patroni's own
// REST API (GET /cluster of every member that answered) said at the same
// moment: same members, leader, hosts, ports, timelines and lag.
func TestDecodeMatchesREST(t *testing.T) {
	for _, label := range []string{"initial", "during-failover", "after-failover", "after-switchover"} {
		t.Run(label, func(t *testing.T) {
			kvs, _, err := LoadSnapshot(filepath.Join("testdata", "dcs-"+label+".json"))
			if err != nil {
				t.Fatal(err)
			}
			cs := Decode("/pg", kvs)["pg-test"]
			data, err := os.ReadFile(filepath.Join("testdata", "rest-"+label+".json"))
			if err != nil {
				t.Fatal(err)
			}
			var rest struct {
				Members map[string]struct {
					Cluster *struct {
						Status int `json:"status"`
						Body   struct {
							Members []struct {
								Name     string `json:"name"`
								Role     string `json:"role"`
								Host     string `json:"host"`
								Port     int    `json:"port"`
								Timeline int64  `json:"timeline"`
								Lag      *int64 `json:"lag"`
							} `json:"members"`
						} `json:"body"`
					} `json:"GET /cluster"`
				} `json:"members"`
			}
			if err := json.Unmarshal(data, &rest); err != nil {
				t.Fatal(err)
			}
			answered := 0
			for from, r := range rest.Members {
				if r.Cluster == nil || r.Cluster.Status != 200 {
					continue // that member was down
				}
				answered++
				var names []string
				for _, rm := range r.Cluster.Body.Members {
					names = append(names, rm.Name)
					m := cs.Members[rm.Name]
					if m == nil {
						t.Errorf("%s sees member %s, decoder does not", from, rm.Name)
						continue
					}
					if (rm.Role == "leader") != (cs.Leader == rm.Name) {
						t.Errorf("%s: %s REST role %s, decoded leader %q", from, rm.Name, rm.Role, cs.Leader)
					}
					if m.Host != rm.Host || m.Port != rm.Port || m.Timeline != rm.Timeline {
						t.Errorf("%s: %s REST %s:%d tl %d, decoded %s:%d tl %d", from, rm.Name,
							rm.Host, rm.Port, rm.Timeline, m.Host, m.Port, m.Timeline)
					}
					if rm.Lag != nil && (m.LagBytes == nil || *m.LagBytes != *rm.Lag) {
						t.Errorf("%s: %s REST lag %d, decoded %s", from, rm.Name, *rm.Lag, ptrStr(m.LagBytes))
					}
				}
				sort.Strings(names)
				if !reflect.DeepEqual(names, memberNames(cs)) {
					t.Errorf("%s sees members %v, decoded %v", from, names, memberNames(cs))
				}
			}
			if answered == 0 {
				t.Fatal("no member answered GET /cluster in the fixture")
			}
		})
	}
}

// TestParseSnapshotBase64 feeds the real etcdctl form (base64 keys/values,
// "header") and expects the same decoding as the plain fixture form.
func TestParseSnapshotBase64(t *testing.T) {
	for _, label := range []string{"initial", "during-failover", "after-failover", "after-switchover"} {
		t.Run(label, func(t *testing.T) {
			plainKVs, rev, err := LoadSnapshot(filepath.Join("testdata", "dcs-"+label+".json"))
			if err != nil {
				t.Fatal(err)
			}
			type kvJSON struct {
				Key            string `json:"key"`
				Value          string `json:"value,omitempty"`
				CreateRevision int64  `json:"create_revision"`
				ModRevision    int64  `json:"mod_revision"`
				Version        int64  `json:"version"`
				Lease          int64  `json:"lease,omitempty"`
			}
			doc := map[string]any{
				"header": map[string]any{"cluster_id": uint64(13824966444253996648), "revision": rev, "raft_term": 2},
				"count":  len(plainKVs),
			}
			var enc []kvJSON
			for _, kv := range plainKVs {
				enc = append(enc, kvJSON{
					Key:   base64.StdEncoding.EncodeToString([]byte(kv.Key)),
					Value: base64.StdEncoding.EncodeToString(kv.Value), CreateRevision: kv.CreateRevision,
					ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease,
				})
			}
			doc["kvs"] = enc
			data, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			kvs, rev2, err := ParseSnapshot("etcdctl.json", data)
			if err != nil {
				t.Fatal(err)
			}
			if rev2 != rev {
				t.Errorf("revision %d, want %d", rev2, rev)
			}
			if !reflect.DeepEqual(kvs, plainKVs) {
				t.Errorf("base64 kvs differ from plain kvs:\n%+v\n%+v", kvs, plainKVs)
			}
			if !reflect.DeepEqual(Decode("/pg", kvs), Decode("/pg", plainKVs)) {
				t.Error("decoding differs between base64 and plain forms")
			}
		})
	}
}

func TestParseSnapshotErrors(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"not json", `{`, "snap.json: invalid snapshot JSON"},
		{"no header, no kvs", `{"foo":[]}`, "snap.json: kvs missing (and no header: not an etcdctl -w json answer)"},
		{"no revision", `{"header":{"cluster_id":1}}`, "snap.json: header.revision missing"},
		{"etcd_header no revision", `{"etcd_header":{}}`, "snap.json: etcd_header.revision missing"},
		{"revision not a number", `{"header":{"revision":"x"}}`, "snap.json: invalid snapshot JSON"},
		{"negative revision", `{"header":{"revision":-1}}`, "header.revision -1 is negative"},
		{"key missing", `{"header":{"revision":3},"kvs":[{"value":"eA=="}]}`, "snap.json: kvs[0].key missing"},
		{"key bad base64", `{"header":{"revision":3},"kvs":[{"key":"%%%"}]}`, "snap.json: kvs[0].key: neither a plain key"},
		{"value bad base64", `{"header":{"revision":3},"kvs":[{"key":"L3BnL2EvbGVhZGVy","value":"%%"}]}`,
			"snap.json: kvs[0].value (key /pg/a/leader): invalid base64"},
		{"kv wrong type", `{"header":{"revision":3},"kvs":[{"key":"/pg/a/leader","mod_revision":"x"}]}`,
			"snap.json: kvs[0]: json: cannot unmarshal"},
		{"kv not an object", `{"header":{"revision":3},"kvs":[1]}`, "snap.json: kvs[0]: json: cannot unmarshal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseSnapshot("snap.json", []byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want containing %q", err, tc.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, _, err := LoadSnapshot(filepath.Join(t.TempDir(), "nope.json"))
		if err == nil || !strings.Contains(err.Error(), "nope.json") {
			t.Fatalf("error %v, want one naming the file", err)
		}
	})
	t.Run("hand-written, no header", func(t *testing.T) {
		// Plain strings and no header, as the README invites: revision unknown (0).
		kvs, rev, err := ParseSnapshot("snap.json", []byte(`{"kvs":[{"key":"/pg/pg-test/leader","value":"pg-test-2"},`+
			`{"key":"/pg/pg-test/members/pg-test-2","value":"{\"conn_url\":\"postgres://10.0.0.2:5432/postgres\",\"api_url\":\"http://10.0.0.2:8008/patroni\",\"state\":\"running\",\"role\":\"primary\"}"}]}`))
		if err != nil || rev != 0 || len(kvs) != 2 {
			t.Fatalf("got %d kvs at revision %d, %v; want 2 kvs, revision 0", len(kvs), rev, err)
		}
		st := Decode("/pg", kvs)["pg-test"]
		if st == nil || st.Leader != "pg-test-2" || st.Members["pg-test-2"] == nil || st.Members["pg-test-2"].Role != RolePrimary {
			t.Fatalf("decoded %+v, want pg-test led by its primary pg-test-2", st)
		}
	})
	t.Run("empty kvs", func(t *testing.T) {
		kvs, rev, err := ParseSnapshot("snap.json", []byte(`{"header":{"revision":5}}`))
		if err != nil || len(kvs) != 0 || rev != 5 {
			t.Fatalf("got %v %d %v, want no kvs at revision 5", kvs, rev, err)
		}
	})
}

// kv is a shorthand for building synthetic DCS content.
func kv(key, value string, rev int64) KV {
	return KV{Key: key, Value: []byte(value), CreateRevision: rev, ModRevision: rev, Version: 1}
}

func member(role string, xlog int64, extra string) string {
	return fmt.Sprintf(`{"conn_url":"postgres://10.0.0.%d:5432/postgres","api_url":"http://10.0.0.%d:8008/patroni",`+
		`"state":"running","role":%q,"version":"4.0.4","xlog_location":%d,"timeline":5%s}`,
		len(role), len(role), role, xlog, extra)
}

func TestDecodePatroni4(t *testing.T) {
	kvs := []KV{
		kv("/service/c4/leader", "a", 10),
		kv("/service/c4/members/a", `{"conn_url":"postgres://[::1]:6543/postgres","api_url":"https://[::1]/patroni",`+
			`"state":"running","role":"primary","version":"4.0.4","xlog_location":5000,"timeline":5}`, 11),
		kv("/service/c4/members/b", member("replica", 4000, `,"replication_state":"streaming","tags":{"nofailover":true,"noloadbalance":"true"}`), 12),
		kv("/service/c4/members/c", member("replica", 6000, `,"tags":{"failover_priority":0,"nosync":1,"custom":"x"},"pending_restart":true`), 13),
		kv("/service/c4/members/d", `{"conn_url":"postgres://d:5432/postgres","api_url":"http://d:8008/patroni","state":"stopped","role":"demoted","timeline":5,"pause":true}`, 14),
		kv("/service/c4/members/e", `{"conn_url":"postgres://e:5432/postgres","api_url":"http://e:8008/patroni","state":"creating replica","role":"uninitialized"}`, 15),
		kv("/service/c4/members/f", member("Promoted", 4500, `,"tags":{"nofailover":false,"failover_priority":0,"noloadbalance":"false"}`), 16),
		kv("/service/c4/sync", `{"leader":"a","sync_standby":"b, c,,","quorum":1}`, 17),
		kv("/service/c4/config", `{"ttl":30,"failsafe_mode":"on","pause":true,"synchronous_mode":"quorum"}`, 18),
		kv("/service/c4/status", `{"optime":5100,"slots":{"b":4000},"retain_slots":["b"]}`, 19),
		kv("/service/c4/failover", `{}`, 20),
		kv("/service/c4/failsafe", `{"a":"http://a:8008/patroni"}`, 21),
		kv("/service/c4/history", `[[4,100,"no recovery target specified","2025-01-01T00:00:00+00:00","a"]]`, 22),
		kv("/service/c4/initialize", `7712458376925434727`, 23),
		kv("/service/c4/some/future/key", `?`, 30),
		// Standby cluster in the same namespace.
		kv("/service/sb/leader", "s1", 40),
		kv("/service/sb/members/s1", member("standby_leader", 900, ""), 41),
		kv("/service/sb/members/s2", member("replica", 800, ""), 42),
		kv("/service/sb/config", `{"standby_cluster":{"host":"10.1.0.1","port":5432}}`, 43),
		kv("/service/sb/optime/leader", "1000", 44),
		// Not under the namespace: ignored.
		kv("/servicex/zz/leader", "z", 99),
		kv("/other/zz/leader", "z", 99),
	}
	got := Decode(DefaultNamespace, kvs)
	if len(got) != 2 {
		t.Fatalf("clusters %v, want c4 and sb", keys(got))
	}
	c4 := got["c4"]
	if len(c4.Errors) != 0 {
		t.Fatalf("errors: %v", c4.Errors)
	}
	if c4.Leader != "a" || c4.LeaderRevision != 10 || c4.Revision != 30 {
		t.Errorf("leader %q@%d revision %d", c4.Leader, c4.LeaderRevision, c4.Revision)
	}
	if c4.SyncLeader != "a" || !reflect.DeepEqual(c4.SyncStandbys, []string{"b", "c"}) || c4.SyncQuorum != 1 {
		t.Errorf("sync %q %q quorum %d", c4.SyncLeader, c4.SyncStandbys, c4.SyncQuorum)
	}
	if !c4.SynchronousMode || !c4.QuorumCommit {
		t.Errorf("synchronous_mode quorum: SynchronousMode %v QuorumCommit %v", c4.SynchronousMode, c4.QuorumCommit)
	}
	// Quorum commit: Patroni 4 reports b and c as quorum_standby, never
	// sync_standby (its /sync check fails on them).
	if c4.IsSync("b") || c4.IsSync("c") || c4.IsSync("a") {
		t.Error("IsSync true under synchronous_mode quorum")
	}
	if !c4.FailsafeMode || !c4.Paused || c4.StandbyCluster {
		t.Errorf("flags failsafe=%v paused=%v standby=%v", c4.FailsafeMode, c4.Paused, c4.StandbyCluster)
	}
	if ptrStr(c4.LeaderOptime) != "5100" {
		t.Errorf("leader optime %s, want 5100 from status", ptrStr(c4.LeaderOptime))
	}
	type want struct {
		role, raw, state                  string
		host                              string
		port, apiPort                     int
		lag                               string
		nolb, nofo, nosync, pending, paus bool
		timeline                          int64
	}
	wants := map[string]want{
		"a": {RolePrimary, "primary", "running", "::1", 6543, 443, "0", false, false, false, false, false, 5},
		"b": {RoleReplica, "replica", "running", "10.0.0.7", 5432, 8008, "1100", true, true, false, false, false, 5},
		"c": {RoleReplica, "replica", "running", "10.0.0.7", 5432, 8008, "0", false, true, true, true, false, 5},
		"d": {RoleDemoted, "demoted", "stopped", "d", 5432, 8008, "nil", false, false, false, false, true, 5},
		"e": {RoleUninitialized, "uninitialized", "creating replica", "e", 5432, 8008, "nil", false, false, false, false, false, 0},
		// nofailover:false wins over failover_priority 0; the string "false"
		// is truthy, as in Patroni (Python bool("false") is True).
		"f": {RolePromoted, "Promoted", "running", "10.0.0.8", 5432, 8008, "600", true, false, false, false, false, 5},
	}
	for name, w := range wants {
		m := c4.Members[name]
		if m == nil {
			t.Errorf("member %s missing", name)
			continue
		}
		g := want{m.Role, m.RawRole, m.State, m.Host, m.Port, m.APIPort, ptrStr(m.LagBytes),
			m.NoLoadBalance, m.NoFailover, m.NoSync, m.PendingRestart, m.Pause, m.Timeline}
		if g != w {
			t.Errorf("member %s:\n got %+v\nwant %+v", name, g, w)
		}
	}
	if c4.Members["b"].ReplicationState != "streaming" || c4.Members["c"].Tags["custom"] != "x" {
		t.Errorf("replication_state/tags not kept: %+v %+v", c4.Members["b"], c4.Members["c"].Tags)
	}

	sb := got["sb"]
	if len(sb.Errors) != 0 || !sb.StandbyCluster || sb.Leader != "s1" {
		t.Fatalf("standby cluster: %+v", sb)
	}
	if sb.Members["s1"].Role != RoleStandbyLeader || ptrStr(sb.LeaderOptime) != "1000" ||
		ptrStr(sb.Members["s2"].LagBytes) != "200" || ptrStr(sb.Members["s1"].LagBytes) != "0" {
		t.Errorf("standby: optime %s, s1 %+v, s2 lag %s", ptrStr(sb.LeaderOptime), sb.Members["s1"], ptrStr(sb.Members["s2"].LagBytes))
	}
}

func TestDecodeOptimeFallbacks(t *testing.T) {
	tests := []struct {
		name   string
		kvs    []KV
		optime string
		lagB   string
	}{
		{"status wins over optime/leader", []KV{
			kv("/pg/c/status", `{"optime":300}`, 1), kv("/pg/c/optime/leader", "200", 2),
			kv("/pg/c/leader", "a", 3), kv("/pg/c/members/a", member("master", 100, ""), 4),
			kv("/pg/c/members/b", member("replica", 50, ""), 5),
		}, "300", "250"},
		{"legacy bare status", []KV{
			kv("/pg/c/status", `250`, 1), kv("/pg/c/leader", "a", 3),
			kv("/pg/c/members/b", member("replica", 50, ""), 5),
		}, "250", "200"},
		{"status without optime falls back to optime/leader", []KV{
			kv("/pg/c/status", `{"slots":{}}`, 1), kv("/pg/c/optime/leader", " 200\n", 2),
			kv("/pg/c/members/b", member("replica", 50, ""), 5),
		}, "200", "150"},
		{"string optime", []KV{
			kv("/pg/c/status", `{"optime":"120"}`, 1), kv("/pg/c/members/b", member("replica", 50, ""), 5),
		}, "120", "70"},
		{"leader member xlog_location", []KV{
			kv("/pg/c/leader", "a", 3), kv("/pg/c/members/a", member("master", 100, ""), 4),
			kv("/pg/c/members/b", member("replica", 50, ""), 5),
		}, "100", "50"},
		{"unknown: no leader, no status", []KV{
			kv("/pg/c/members/a", member("master", 100, ""), 4),
			kv("/pg/c/members/b", member("replica", 50, ""), 5),
		}, "nil", "nil"},
		{"replica ahead of stale optime", []KV{
			kv("/pg/c/status", `{"optime":10}`, 1), kv("/pg/c/members/b", member("replica", 50, ""), 5),
		}, "10", "0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := Decode("/pg", tc.kvs)["c"]
			if len(cs.Errors) != 0 {
				t.Fatalf("errors: %v", cs.Errors)
			}
			if ptrStr(cs.LeaderOptime) != tc.optime || ptrStr(cs.Members["b"].LagBytes) != tc.lagB {
				t.Errorf("optime %s lag(b) %s, want %s %s", ptrStr(cs.LeaderOptime), ptrStr(cs.Members["b"].LagBytes), tc.optime, tc.lagB)
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	good := member("replica", 10, "")
	tests := []struct {
		name    string
		kv      KV
		errPart string
		member  bool // the member in kv must be left out
	}{
		{"member bad JSON", kv("/pg/c/members/x", `{"conn_url":`, 5), "invalid JSON", true},
		{"member not an object", kv("/pg/c/members/x", `[1,2]`, 5), "invalid JSON", true},
		{"member trailing data", kv("/pg/c/members/x", good+`{}`, 5), "trailing data", true},
		{"member null", kv("/pg/c/members/x", `null`, 5), "conn_url missing", true},
		{"member no conn_url", kv("/pg/c/members/x", `{"role":"replica"}`, 5), "conn_url missing", true},
		{"member bad conn_url", kv("/pg/c/members/x", `{"conn_url":"postgres://h:99999/db"}`, 5), "bad port", true},
		{"member conn_url no host", kv("/pg/c/members/x", `{"conn_url":"postgres:///db"}`, 5), "no host", true},
		{"member conn_url wrong scheme", kv("/pg/c/members/x", `{"conn_url":"http://h:5432/db"}`, 5), "scheme", true},
		{"member conn_url unparsable", kv("/pg/c/members/x", `{"conn_url":"postgres://h:5432/%zz"}`, 5), "invalid URL", true},
		{"member conn_url empty port", kv("/pg/c/members/x", `{"conn_url":"postgres://h:/db"}`, 5), "empty port", true},
		{"member bad api_url", kv("/pg/c/members/x", `{"conn_url":"postgres://h:5432/db","api_url":"ftp://h/x"}`, 5), "api_url", true},
		{"member xlog not a number", kv("/pg/c/members/x", `{"conn_url":"postgres://h:5432/db","xlog_location":"abc"}`, 5), "invalid JSON", true},
		{"member timeline float", kv("/pg/c/members/x", `{"conn_url":"postgres://h:5432/db","timeline":1.5}`, 5), "invalid JSON", true},
		{"member tags not an object", kv("/pg/c/members/x", `{"conn_url":"postgres://h:5432/db","tags":[1]}`, 5), "invalid JSON", true},
		{"member empty name", kv("/pg/c/members/", good, 5), "empty member name", false},
		{"empty leader", kv("/pg/c/leader", " \n", 5), "empty leader name", false},
		{"sync bad JSON", kv("/pg/c/sync", `{"leader":`, 5), "sync: invalid JSON", false},
		{"sync not an object", kv("/pg/c/sync", `"a"`, 5), "sync: invalid JSON object", false},
		{"sync null", kv("/pg/c/sync", `null`, 5), "sync: not a JSON object", false},
		{"sync standby list", kv("/pg/c/sync", `{"leader":"a","sync_standby":["b"]}`, 5), "sync_standby is", false},
		{"sync leader number", kv("/pg/c/sync", `{"leader":1}`, 5), "leader is", false},
		{"sync bad quorum", kv("/pg/c/sync", `{"leader":"a","quorum":"x"}`, 5), "quorum", false},
		{"sync negative quorum", kv("/pg/c/sync", `{"leader":"a","quorum":-1}`, 5), "quorum", false},
		// Patroni's json.loads rejects what follows the object: such a sync
		// key names nobody there.
		{"sync trailing data", kv("/pg/c/sync", `{"leader":"a","sync_standby":"b"} x`, 5), "sync: invalid JSON object: trailing data", false},
		{"config bad JSON", kv("/pg/c/config", `{`, 5), "config: invalid JSON", false},
		{"config null", kv("/pg/c/config", `null`, 5), "config: not a JSON object", false},
		// Patroni's json.loads rejects what follows the object ("Extra data").
		{"config trailing data", kv("/pg/c/config", `{"failsafe_mode":false} {"failsafe_mode":true}`, 5), "config: invalid JSON object: trailing data", false},
		{"config trailing brace", kv("/pg/c/config", `{"failsafe_mode":false}}`, 5), "config: invalid JSON object: trailing data", false},
		{"status bad JSON", kv("/pg/c/status", `{"optime":`, 5), "status: invalid JSON", false},
		{"status non-numeric optime", kv("/pg/c/status", `{"optime":"abc"}`, 5), "not an integer LSN", false},
		{"status optime object", kv("/pg/c/status", `{"optime":{}}`, 5), "want integer", false},
		{"status negative optime", kv("/pg/c/status", `-5`, 5), "negative LSN", false},
		{"status list", kv("/pg/c/status", `[]`, 5), "want object or integer", false},
		{"optime/leader non-numeric", kv("/pg/c/optime/leader", `xyz`, 5), "optime:", false},
		{"optime/leader float", kv("/pg/c/optime/leader", `1.5`, 5), "optime:", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kvs := []KV{
				kv("/pg/c/leader", "a", 1),
				kv("/pg/c/members/a", member("master", 10, ""), 2),
				kv("/pg/ok/leader", "z", 3),
				kv("/pg/ok/members/z", member("master", 10, ""), 4),
				tc.kv,
			}
			got := Decode("/pg", kvs)
			c, ok := got["c"], got["ok"]
			if len(ok.Errors) != 0 || ok.Leader != "z" || ok.Members["z"] == nil {
				t.Errorf("other cluster affected: %+v", ok)
			}
			if len(c.Errors) != 1 {
				t.Fatalf("errors %v, want exactly one", c.Errors)
			}
			e := c.Errors[0]
			if e.Key != tc.kv.Key || !strings.Contains(e.Err, tc.errPart) {
				t.Errorf("error %q, want key %s and %q", e.Error(), tc.kv.Key, tc.errPart)
			}
			if tc.member && c.Members["x"] != nil {
				t.Error("malformed member x kept")
			}
			if c.Members["a"] == nil {
				t.Error("good member a lost")
			}
			if c.Revision != 5 {
				t.Errorf("revision %d, want 5 (malformed keys count)", c.Revision)
			}
			if tc.kv.Key != "/pg/c/leader" && c.Leader != "a" {
				t.Errorf("leader %q lost", c.Leader)
			}
		})
	}
}

func TestDecodeMemberFormats(t *testing.T) {
	tests := []struct {
		name, value, host, apiHost string
		port, apiPort              int
	}{
		{"no port in conn_url", `{"conn_url":"postgresql://db1/postgres","api_url":"http://db1/patroni"}`, "db1", "db1", 5432, 80},
		{"legacy bare URL", `postgres://10.0.0.1:5433/postgres?application_name=http://10.0.0.1:8009/patroni`, "10.0.0.1", "10.0.0.1", 5433, 8009},
		{"no api_url", `{"conn_url":"postgres://h:5432/postgres"}`, "h", "", 5432, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := Decode("/pg", []KV{kv("/pg/c/members/m", tc.value, 1)})["c"]
			if len(cs.Errors) != 0 {
				t.Fatalf("errors: %v", cs.Errors)
			}
			m := cs.Members["m"]
			if m.Host != tc.host || m.Port != tc.port || m.APIHost != tc.apiHost || m.APIPort != tc.apiPort {
				t.Errorf("got %s:%d api %s:%d", m.Host, m.Port, m.APIHost, m.APIPort)
			}
		})
	}
}

func TestDecodeMPPGroups(t *testing.T) {
	kvs := []KV{
		kv("/pg/citus/0/leader", "coord1", 1),
		kv("/pg/citus/0/members/coord1", member("master", 100, ""), 2),
		kv("/pg/citus/1/leader", "w1a", 3),
		kv("/pg/citus/1/members/w1a", member("primary", 100, ""), 4),
		kv("/pg/citus/1/members/w1b", member("replica", 90, ""), 5),
		kv("/pg/citus/1/sync", `{"leader":"w1a","sync_standby":"w1b"}`, 6),
		kv("/pg/citus/1/config", `{"synchronous_mode":true}`, 6),
		// A member whose name is digits is not a group.
		kv("/pg/plain/members/7", member("replica", 1, ""), 7),
		kv("/pg/plain/leader", "7", 8),
	}
	got := Decode("/pg/", kvs)
	if !reflect.DeepEqual(keys(got), []string{"citus/0", "citus/1", "plain"}) {
		t.Fatalf("clusters %v", keys(got))
	}
	g1 := got["citus/1"]
	if g1.Scope != "citus/1" || g1.Group == nil || *g1.Group != 1 || g1.Leader != "w1a" ||
		len(g1.Members) != 2 || !g1.IsSync("w1b") || ptrStr(g1.Members["w1b"].LagBytes) != "10" {
		t.Errorf("group 1: %+v", g1)
	}
	if g0 := got["citus/0"]; g0.Group == nil || *g0.Group != 0 || g0.Leader != "coord1" {
		t.Errorf("group 0: %+v", g0)
	}
	if p := got["plain"]; p.Group != nil || p.Leader != "7" || p.Members["7"] == nil {
		t.Errorf("plain: %+v", p)
	}
}

func TestNormalizeNamespace(t *testing.T) {
	for in, want := range map[string]string{"/pg": "/pg", "/pg/": "/pg", "pg": "/pg", "": "", "/": "", "//a/b//": "/a/b"} {
		t.Run(in, func(t *testing.T) {
			if got := NormalizeNamespace(in); got != want {
				t.Errorf("NormalizeNamespace(%q) = %q, want %q", in, got, want)
			}
			if got := Prefix(in); got != want+"/" {
				t.Errorf("Prefix(%q) = %q", in, got)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{member("master", 1, ""), `{"leader":"a","sync_standby":"b"}`, `{"optime":5}`, "a", `{`, `null`, `postgres://h/x?application_name=http://h/y`} {
		for _, k := range []string{"leader", "members/m", "sync", "config", "status", "optime/leader", "3/members/m"} {
			f.Add("/pg/c/"+k, []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		got := Decode("/pg", []KV{kv("/pg/c/leader", "m", 1), {Key: key, Value: value, ModRevision: 2}})
		checkDecoded(t, got) // only HAProxy-safe members come out
		for scope, cs := range got {
			if cs == nil || cs.Scope != scope || cs.Members == nil {
				t.Fatalf("bad cluster %q: %+v", scope, cs)
			}
			for name, m := range cs.Members {
				if m == nil || m.Name != name || (m.LagBytes != nil && *m.LagBytes < 0) {
					t.Fatalf("bad member %q: %+v", name, m)
				}
			}
		}
	})
}

func keys(m map[string]*ClusterState) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func memberNames(cs *ClusterState) []string {
	var out []string
	for k := range cs.Members {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func ptrStr(p *int64) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// TestParseSnapshotBadNamesStayInTheirCluster: member and leader names
// HAProxy could not take, in one cluster of a snapshot, do not make the
// whole snapshot unusable: Decode skips them with key errors of that
// cluster, as it does for a live watch, and the other clusters decode as
// if they were not there.
func TestParseSnapshotBadNamesStayInTheirCluster(t *testing.T) {
	good := `{"key":"/pg/good/leader","value":"g-1"},` +
		`{"key":"/pg/good/members/g-1","value":"{\"conn_url\":\"postgres://10.0.0.1:5432/postgres\",\"state\":\"running\",\"role\":\"primary\"}"},`
	data := `{"header":{"revision":9},"kvs":[` + good +
		`{"key":"/pg/bad/leader","value":"a#1"},` +
		`{"key":"/pg/bad/members/pg a-1","value":"{\"conn_url\":\"postgres://10.0.0.2:5432/postgres\"}"},` +
		// /pg/bad/1/members/a  (base64), a Citus group's member "a " (trailing space)
		`{"key":"L3BnL2JhZC8xL21lbWJlcnMvYSA=","value":"e30="}]}`
	kvs, rev, err := ParseSnapshot("snap.json", []byte(data))
	if err != nil || rev != 9 || len(kvs) != 5 {
		t.Fatalf("ParseSnapshot: %d kvs, revision %d, %v; want 5 kvs at revision 9", len(kvs), rev, err)
	}
	got := Decode("/pg", kvs)
	alone, _, err := ParseSnapshot("good.json", []byte(`{"header":{"revision":9},"kvs":[`+strings.TrimSuffix(good, ",")+`]}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := Decode("/pg", alone)["good"]; !reflect.DeepEqual(got["good"], want) {
		t.Errorf("cluster good decoded as %+v beside the bad one, %+v alone", got["good"], want)
	}
	bad := got["bad"]
	if bad == nil || len(bad.Members) != 0 || len(bad.Errors) != 1 || bad.Errors[0].Key != "/pg/bad/members/pg a-1" {
		t.Errorf("cluster bad: %+v, want no members and one error on /pg/bad/members/pg a-1", bad)
	}
	if g := got["bad/1"]; g == nil || len(g.Members) != 0 || len(g.Errors) != 1 || g.Errors[0].Key != "/pg/bad/1/members/a " {
		t.Errorf("cluster bad/1: %+v, want no members and one error on /pg/bad/1/members/a ", g)
	}
}

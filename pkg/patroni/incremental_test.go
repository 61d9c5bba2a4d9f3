package patroni

import (
	"fmt"
	"math/rand"
	"reflect"
	"testing"
	"unsafe"
)

// TestDecoderIsDecode: after random puts and deletes (ordinary and Citus
// scopes, undecodable values, keys Decode ignores), the incremental decoder
// gives exactly Decode over all keys, with the same memory of each scope's
// last config value that decoded (kept while the scope has a key), and a
// scope none of whose keys changed keeps its ClusterState pointer.
func TestDecoderIsDecode(t *testing.T) {
	scopes := []string{"pg-a", "pg-b", "pg-c/0", "pg-c/1", "pg-d"}
	values := map[string][]string{
		"leader": {"m1", "m2", "", "ghost"},
		"members/m1": {`{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"master","xlog_location":100,"timeline":1}`,
			`{"conn_url":"postgres://127.0.0.1:5432/postgres","state":"stopped","role":"replica","xlog_location":90,"timeline":1}`, `{broken`},
		"members/m2":    {`{"conn_url":"postgres://127.0.0.2:5432/postgres","api_url":"http://127.0.0.2:8008/patroni","state":"running","role":"replica","xlog_location":80,"timeline":1}`, `"x"`},
		"status":        {`{"optime":120}`, `{"optime":"bad"}`, `110`},
		"optime/leader": {"100", "x"},
		"sync":          {`{"leader":"m1","sync_standby":"m2"}`, `[]`},
		"config":        {`{"pause":true}`, `{}`, `{"failsafe_mode":true,"synchronous_mode":"on"}`, `{`, `[1]`},
		"failover":      {`{"leader":"m1","member":"m2"}`, ``},
		"initialize":    {"1"},
		"unknown/x":     {"y"},
	}
	kept := 0 // states with flags kept: the memory is exercised
	var subs []string
	for k := range values {
		subs = append(subs, k)
	}
	for seed := int64(1); seed <= 30; seed++ {
		r := rand.New(rand.NewSource(seed))
		all := map[string]KV{}
		dec := newDecoder("/pg")
		rev := int64(0)
		key := func() string {
			switch r.Intn(12) {
			case 0:
				return "/other/pg-a/leader" // outside the namespace
			case 1:
				return "/pg/pg-a" // too short
			}
			sub := subs[r.Intn(len(subs))]
			return "/pg/" + scopes[r.Intn(len(scopes))] + "/" + sub
		}
		var prev map[string]*ClusterState
		lastConfig := map[string]configFlags{} // the decoder's memory, modelled
		for step := 0; step < 60; step++ {
			changed := map[string]bool{}
			for n := 1 + r.Intn(4); n > 0; n-- {
				rev++
				k := key()
				if sc, _, _, ok := splitKey("/pg/", k); ok {
					changed[sc] = true
				}
				if r.Intn(4) == 0 {
					delete(all, k)
					dec.del(k)
					continue
				}
				sub := k[len("/pg/"):]
				vals := []string{"x"}
				for s, v := range values {
					if len(sub) >= len(s) && sub[len(sub)-len(s):] == s {
						vals = v
					}
				}
				kv := KV{Key: k, Value: []byte(vals[r.Intn(len(vals))]), ModRevision: rev}
				all[k] = kv
				dec.put(kv)
			}
			if step%20 == 10 {
				kept := map[string]uintptr{}
				for sc, m := range dec.byScope {
					if !dec.dirty[sc] {
						kept[sc] = reflect.ValueOf(m).Pointer()
					}
				}
				dec.reset(all) // a re-list: unchanged scopes keep their state
				for sc, m := range dec.byScope {
					if p, ok := kept[sc]; ok && !changed[sc] && reflect.ValueOf(m).Pointer() != p {
						t.Fatalf("seed %d step %d: scope %s unchanged but its keys replaced by the re-list's", seed, step, sc)
					}
				}
			}
			if step == 45 {
				// a re-list after etcd lost some keys behind the watch
				for k := range all {
					if r.Intn(3) == 0 {
						if sc, _, _, ok := splitKey("/pg/", k); ok {
							changed[sc] = true
						}
						delete(all, k)
					}
				}
				dec.reset(all)
			}
			kvs := make([]KV, 0, len(all))
			for _, kv := range all {
				kvs = append(kvs, kv)
			}
			want := decode("/pg", kvs, func(sc string) (configFlags, bool) { f, ok := lastConfig[sc]; return f, ok })
			for sc := range lastConfig {
				if want[sc] == nil {
					delete(lastConfig, sc)
				}
			}
			for sc, st := range want {
				if st.ConfigKept {
					kept++
				}
				if st.ConfigRead {
					lastConfig[sc] = flagsOf(st, all["/pg/"+sc+"/config"].ModRevision)
				}
			}
			got := dec.clusters()
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d step %d: decoder\n%s\nDecode\n%s", seed, step, dump(got), dump(want))
			}
			for sc, st := range prev {
				if !changed[sc] && got[sc] != st {
					t.Fatalf("seed %d step %d: scope %s unchanged but decoded again", seed, step, sc)
				}
			}
			prev = got
		}
	}
	if kept == 0 {
		t.Error("no state kept its last valid config flags: the test does not exercise them")
	}
}

func dump(m map[string]*ClusterState) string {
	s := ""
	for k, v := range m {
		s += fmt.Sprintf("  %s: %+v\n", k, *v)
	}
	return s
}

// BenchmarkWatcherEventDecode1000: what the watcher decodes for one changed
// key in a namespace of 1,000 three-member clusters.
func BenchmarkWatcherEventDecode1000(b *testing.B) {
	dec := newDecoder("/pg")
	member := func(i, seq int, role string) KV {
		return KV{Key: fmt.Sprintf("/pg/pg-b%04d/members/pg-b%04d-%d", i, i, seq), ModRevision: 1,
			Value: []byte(fmt.Sprintf(`{"conn_url":"postgres://127.0.0.%d:5432/postgres","api_url":"http://127.0.0.%d:8008/patroni","state":"running","role":%q,"version":"3.0.2","xlog_location":1000,"timeline":1}`, seq, seq, role))}
	}
	all := map[string]KV{}
	for i := 0; i < 1000; i++ {
		for seq := 1; seq <= 3; seq++ {
			role := "replica"
			if seq == 1 {
				role = "master"
			}
			kv := member(i, seq, role)
			all[kv.Key] = kv
		}
		kv := KV{Key: fmt.Sprintf("/pg/pg-b%04d/leader", i), Value: []byte(fmt.Sprintf("pg-b%04d-1", i)), ModRevision: 1}
		all[kv.Key] = kv
	}
	dec.reset(all)
	dec.clusters()
	b.Run("changed", func(b *testing.B) {
		b.ReportAllocs()
		for n := 0; n < b.N; n++ {
			i := n % 1000
			dec.put(KV{Key: fmt.Sprintf("/pg/pg-b%04d/leader", i), Value: []byte(fmt.Sprintf("pg-b%04d-%d", i, 1+n%3)), ModRevision: int64(n)})
			if len(dec.clusters()) != 1000 {
				b.Fatal("clusters lost")
			}
		}
	})
	// full: what every event cost before, a Decode of every key.
	b.Run("full", func(b *testing.B) {
		kvs := make([]KV, 0, len(all))
		for _, kv := range all {
			kvs = append(kvs, kv)
		}
		b.ReportAllocs()
		for n := 0; n < b.N; n++ {
			if len(Decode("/pg", kvs)) != 1000 {
				b.Fatal("clusters lost")
			}
		}
	})
}

// TestDecodedStringsShared: members' roles, states and versions are one
// copy each across decodes (a decoded state is kept until its cluster's
// keys change).
func TestDecodedStringsShared(t *testing.T) {
	v := func(role string) []byte {
		return []byte(`{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"` + role + `","version":"3.0.2","replication_state":"streaming"}`)
	}
	a, err := decodeMember("a", v("replica"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := decodeMember("b", v(string([]byte("replica"))))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]string{{a.RawRole, b.RawRole}, {a.State, b.State}, {a.Version, b.Version}, {a.ReplicationState, b.ReplicationState}} {
		if p[0] != p[1] || unsafe.StringData(p[0]) != unsafe.StringData(p[1]) {
			t.Fatalf("%q and %q are two copies", p[0], p[1])
		}
	}
}

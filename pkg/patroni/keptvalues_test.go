package patroni

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"reflect"
	"testing"
	"unsafe"
)

// refValues are values of every kind of key, good, odd and bad.
var refValues = map[string][]string{
	"leader": {"m1", "m2", "", " ", "m1\n", "ghost"},
	"members/m1": {
		`{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"master","version":"3.0.2","xlog_location":100,"timeline":1}`,
		`{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.9:8008/patroni","state":"stopped","role":"replica","xlog_location":90,"timeline":-1,"tags":{"nofailover":true,"noloadbalance":"x"}}`,
		`{"conn_url":"postgres://127.0.0.1:5432/postgres","state":"running","role":"replica","xlog_location":-5,"timeline":2,"tags":{"failover_priority":0,"sync_priority":"0"},"pending_restart":true,"pause":1}`,
		`postgres://127.0.0.1:5433/postgres?application_name=http://127.0.0.1:8009/patroni`,
		`{broken`, `{"api_url":"http://127.0.0.1:8008/patroni"}`, `{"conn_url":"postgres://a b/"}`},
	"members/m2": {
		`{"conn_url":"postgres://127.0.0.2:5432/postgres","api_url":"https://127.0.0.2/patroni","state":"streaming","role":"replica","xlog_location":80,"timeline":1,"replication_state":"streaming"}`,
		`{"conn_url":"postgres://127.0.0.2:5432/postgres","api_url":"http://127.0.0.2:8008/patroni","role":"replica","xlog_location":130}`,
		`"x"`, `{} x`},
	"members/bad name": {`{"conn_url":"postgres://127.0.0.3:5432/postgres"}`},
	"members/":         {`{"conn_url":"postgres://127.0.0.3:5432/postgres"}`},
	"status":           {`{"optime":120}`, `{"optime":"bad"}`, `110`, `{"slots":{}}`, `{"optime":-1}`, `[]`},
	"optime/leader":    {"100", "x", " 140 "},
	"sync": {`{"leader":"m1","sync_standby":"m2"}`, `{"leader":"m1","sync_standby":"m2, m3","quorum":1}`, `{"leader":" ","sync_standby":"m2"}`,
		`[]`, `{"leader":1}`, `{"leader":"m1"} x`, `{"leader":"m1","quorum":-1}`},
	"config": {`{"pause":true}`, `{}`, `{"failsafe_mode":true,"synchronous_mode":"on"}`, `{"synchronous_mode":"quorum"}`,
		`{"standby_cluster":{"host":"10.0.0.1"}}`, `{"standby_cluster":{"port":""}}`, `{"standby_cluster":"x"}`, `{`, `[1]`, `null`, `{} x`},
	"failover":   {`{"leader":"m1","member":"m2"}`, ``, `{}`, `{"scheduled_at":"2024-01-01T00:00:00Z","member":"m2"}`, `{"leader":1}`, `[`},
	"history":    {`[[1,25165984,"no recovery target specified","2024-01-01T00:00:00+00:00","m1"]]`},
	"initialize": {"1"},
	"failsafe":   {`{"m1":"http://127.0.0.1:8008/patroni"}`},
	"unknown/x":  {"y"},
}

// randomKVs draws n keys of refValues's kinds (with repeated keys: Decode
// takes any list) in ordinary and Citus scopes, and a few it ignores.
func randomKVs(r *rand.Rand, n int) []KV {
	scopes := []string{"pg-a", "pg-b", "pg-c/0", "pg-c/1"}
	var subs []string
	for k := range refValues {
		subs = append(subs, k)
	}
	kvs := make([]KV, 0, n)
	for i := 0; i < n; i++ {
		var key string
		switch r.Intn(15) {
		case 0:
			key = "/other/pg-a/leader"
		case 1:
			key = "/pg/pg-a"
		default:
			key = "/pg/" + scopes[r.Intn(len(scopes))] + "/" + subs[r.Intn(len(subs))]
		}
		vals := []string{"x"}
		for s, v := range refValues {
			if len(key) >= len(s) && key[len(key)-len(s):] == s {
				vals = v
			}
		}
		kvs = append(kvs, KV{Key: key, Value: []byte(vals[r.Intn(len(vals))]), ModRevision: int64(r.Intn(50)), CreateRevision: 1, Version: 1})
	}
	return kvs
}

// TestDecodeIsRefDecode: decode (each key's value decoded alone, then
// assembled) gives exactly what it gave before (refDecode: every value
// decoded into the state in turn), for random key lists with and without
// an earlier valid config.
func TestDecodeIsRefDecode(t *testing.T) {
	flags := []configFlags{{revision: 3, failsafeMode: true}, {revision: 4, quorum: true, syncMode: true, standbyCluster: true}, {revision: 5, paused: true}}
	for seed := int64(1); seed <= 3000; seed++ {
		r := rand.New(rand.NewSource(seed))
		kvs := randomKVs(r, 1+r.Intn(30))
		var last func(string) (configFlags, bool)
		if r.Intn(2) == 0 {
			got := map[string]configFlags{}
			for _, sc := range []string{"pg-a", "pg-b", "pg-c/0", "pg-c/1"} {
				if r.Intn(2) == 0 {
					got[sc] = flags[r.Intn(len(flags))]
				}
			}
			last = func(sc string) (configFlags, bool) { f, ok := got[sc]; return f, ok }
		}
		want := refDecode("/pg", kvs, last)
		got := decode("/pg", kvs, last)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("seed %d: decode\n%s\nrefDecode\n%s", seed, dumpJSON(got), dumpJSON(want))
		}
	}
}

func dumpJSON(m map[string]*ClusterState) string {
	b, _ := json.MarshalIndent(m, "", " ")
	return string(b)
}

// TestDecoderKeepsNoValues: once decoded, the decoder keeps no value; a
// state it returned stays as it was while later changes to its cluster
// (new lags, a new leader) are decoded from what it kept; and the
// decoder still gives Decode's answer, which refDecode confirms.
func TestDecoderKeepsNoValues(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	all := map[string]KV{}
	dec := newDecoder("/pg")
	var earlier []map[string]*ClusterState
	var frozen []string
	for step := 0; step < 200; step++ {
		for _, kv := range randomKVs(r, 1+r.Intn(3)) {
			kv.ModRevision = int64(step + 1)
			if r.Intn(5) == 0 {
				delete(all, kv.Key)
				dec.del(kv.Key)
				continue
			}
			all[kv.Key] = kv
			dec.put(kv)
		}
		if step%50 == 25 {
			dec.reset(all)
		}
		got := dec.clusters()
		for sc, m := range dec.byScope {
			for k, e := range m {
				if _, raw := e.dec.(rawValue); raw {
					t.Fatalf("step %d: scope %s key %s: value kept after the decode", step, sc, k)
				}
			}
		}
		kvs := make([]KV, 0, len(all))
		for _, kv := range all {
			kvs = append(kvs, kv)
		}
		want := refDecode("/pg", kvs, nil)
		for sc, st := range got {
			if st.ConfigKept {
				continue // the memory of an earlier config: TestDecoderIsDecode
			}
			if w := want[sc]; !reflect.DeepEqual(st, w) {
				t.Fatalf("step %d: scope %s: decoder\n%+v\nrefDecode\n%+v", step, sc, *st, *w)
			}
		}
		earlier = append(earlier, got)
		frozen = append(frozen, dumpJSON(got))
		for i, e := range earlier {
			if s := dumpJSON(e); s != frozen[i] {
				t.Fatalf("step %d: the states returned at step %d changed since:\n%s\nnow\n%s", step, i, frozen[i], s)
			}
		}
	}
}

func ExampleDecode_keyErrors() {
	st := Decode("/pg", []KV{
		{Key: "/pg/c/leader", Value: []byte("m1\n")},
		{Key: "/pg/c/config", Value: []byte("{")},
	})["c"]
	for _, e := range st.Errors {
		fmt.Println(e.Key, e.Err)
	}
	// Output:
	// /pg/c/config config: invalid JSON object: unexpected EOF; no valid config seen: failsafe_mode, pause, synchronous_mode and standby_cluster read as off
	// /pg/c/leader leader name "m1\n" has leading or trailing white space: Patroni matches it against member names as written
}

// TestDecoderPutKeepsKeyCopy: a new value of a known key updates its entry
// in place: the key's first copy stays (a watch event's copy is garbage).
func TestDecoderPutKeepsKeyCopy(t *testing.T) {
	dec := newDecoder("/pg")
	first := string([]byte("/pg/c/leader"))
	dec.put(KV{Key: first, Value: []byte("m1"), ModRevision: 1})
	dec.clusters()
	dec.put(KV{Key: string([]byte("/pg/c/leader")), Value: []byte("m2"), ModRevision: 2})
	if st := dec.clusters()["c"]; st.Leader != "m2" || st.LeaderRevision != 2 {
		t.Fatalf("leader %q revision %d, want m2 at 2", st.Leader, st.LeaderRevision)
	}
	for k := range dec.byScope["c"] {
		if unsafe.StringData(k) != unsafe.StringData(first) {
			t.Errorf("key %s: a new copy kept", k)
		}
	}
}

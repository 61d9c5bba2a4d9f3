package patroni

import (
	"fmt"
	"runtime"
	"testing"
)

// fleetKVs is the DCS of n three-member Patroni 3.0.2 clusters under /pg,
// its values shaped as the fixtures' (/work/shared/fixtures/patroni-3.0.2):
// per cluster config, initialize, leader, sync, status and three member
// keys.
func fleetKVs(n int) map[string]KV {
	all := map[string]KV{}
	rev := int64(0)
	add := func(key, value string) {
		rev++
		all[key] = KV{Key: key, Value: []byte(value), CreateRevision: rev, ModRevision: rev, Version: 1, Lease: 7587883154030014000 + rev%3}
	}
	for i := 0; i < n; i++ {
		c := fmt.Sprintf("pg-b%04d", i)
		add("/pg/"+c+"/config", `{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,"postgresql":{"use_pg_rewind":true,"use_slots":true,"parameters":{"max_connections":100,"wal_level":"replica","hot_standby":"on","wal_log_hints":"on","max_wal_senders":10,"max_replication_slots":10,"wal_keep_size":"256MB"}}}`)
		add("/pg/"+c+"/initialize", "7712458376925434727")
		add("/pg/"+c+"/leader", c+"-1")
		add("/pg/"+c+"/sync", `{"leader":"`+c+`-1","sync_standby":null}`)
		add("/pg/"+c+"/status", `{"optime":71531312}`)
		for seq := 1; seq <= 3; seq++ {
			role := "replica"
			if seq == 1 {
				role = "master"
			}
			ip := fmt.Sprintf("127.%d.%d.%d", i/250, i%250, seq)
			add(fmt.Sprintf("/pg/%s/members/%s-%d", c, c, seq), fmt.Sprintf(`{"conn_url":"postgres://%s:5432/postgres","api_url":"http://%s:8008/patroni","state":"running","role":%q,"version":"3.0.2","xlog_location":71531312,"timeline":1}`, ip, ip, role))
		}
	}
	return all
}

// BenchmarkDecoderRetained1000 reports the heap the watcher's decoder keeps
// alive for 1,000 three-member clusters (retained-MB): its keys and the
// decoded states, after a list (reset) and one decode, the list's own
// copies gone, as between two watch events.
func BenchmarkDecoderRetained1000(b *testing.B) {
	var ms runtime.MemStats
	for b.Loop() {
		all := fleetKVs(1000)
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		dec := newDecoder("/pg")
		// The list's values are the watcher's copies (fromPB), garbage
		// once the decoder has what it keeps.
		cache := make(map[string]KV, len(all))
		for k, kv := range all {
			kv.Key = string([]byte(k))
			kv.Value = append([]byte(nil), kv.Value...)
			cache[kv.Key] = kv
		}
		dec.reset(cache)
		states := dec.clusters()
		if len(states) != 1000 {
			b.Fatalf("%d clusters", len(states))
		}
		cache = nil
		runtime.GC()
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(int64(ms.HeapAlloc)-int64(before))/(1<<20), "retained-MB")
		runtime.KeepAlive(dec)
		runtime.KeepAlive(states)
		runtime.KeepAlive(all) // measured in before: not freed in between
	}
}

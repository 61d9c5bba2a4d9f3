package patroni

import "testing"

// TestDecodeNoSyncPriority: Patroni 4.1 reads nosync as it reads nofailover
// (tags.py _bool_tag): the tag wins when present, even false; without it a
// sync_priority <= 0 means nosync.
func TestDecodeNoSyncPriority(t *testing.T) {
	cases := []struct {
		tags           string
		nosync, nofail bool
	}{
		{`{}`, false, false},
		{`{"nosync":true}`, true, false},
		{`{"sync_priority":0}`, true, false},
		{`{"sync_priority":"0"}`, true, false},
		{`{"sync_priority":-1}`, true, false},
		{`{"sync_priority":2}`, false, false},
		{`{"nosync":false,"sync_priority":0}`, false, false},
		{`{"failover_priority":0}`, false, true},
		{`{"nofailover":false,"failover_priority":0,"sync_priority":1}`, false, false},
	}
	for _, c := range cases {
		st := Decode("/pg", []KV{kv("/pg/c/members/m", member("replica", 1, `,"tags":`+c.tags), 1)})["c"]
		m := st.Members["m"]
		if m == nil {
			t.Fatalf("tags %s: member not decoded: %v", c.tags, st.Errors)
		}
		if m.NoSync != c.nosync || m.NoFailover != c.nofail {
			t.Errorf("tags %s: NoSync %v NoFailover %v, want %v %v", c.tags, m.NoSync, m.NoFailover, c.nosync, c.nofail)
		}
	}
}

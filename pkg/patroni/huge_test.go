package patroni

import (
	"strings"
	"testing"
)

// TestDecodeHugeValuesShortErrors: etcd takes values up to 1.5 MiB. A huge
// hostile value is reported by a short error naming its key: key errors go
// to the plan's warnings, the status page and the log, and must not carry
// megabytes of someone else's data there.
func TestDecodeHugeValuesShortErrors(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	hugeJSON := strings.Repeat(`\"`, 1<<19) // each character quotes as 2+
	cases := []struct{ key, value string }{
		{"/pg/c/leader", " " + huge},
		{"/pg/c/members/m1", `{"conn_url":"postgres://` + huge + `:5432/postgres"}`},
		{"/pg/c/members/m2", `{"conn_url":"postgres://h:5432/postgres","api_url":"http://` + huge + `:8008/patroni"}`},
		{"/pg/c/members/m3", `{"conn_url":"postgres://h:` + huge + `/postgres"}`},
		{"/pg/c/members/m4", `{"conn_url":"ftp://` + hugeJSON + `"}`},
		{"/pg/c/members/m5", `{"conn_url":"postgres://h:5432/postgres","api_url":"http://h:8008/` + "\x7f" + huge + `"}`},
		{"/pg/c/members/m6", "postgres://" + huge + "%zz"},
		{"/pg/c/sync", `{"leader":"a","sync_standby":"b","quorum":"` + huge + `"}`},
		{"/pg/c/optime/leader", huge},
		{"/pg/c/status", `{"optime":"` + huge + `"}`},
		{"/pg/c/config", `{"ttl":` + huge},
		{"/pg/c/failover", `{"leader":"` + huge},
	}
	for _, c := range cases {
		st := Decode("/pg", []KV{kv(c.key, c.value, 1)})["c"]
		if st == nil || len(st.Errors) == 0 {
			t.Errorf("%s: no key error for a huge bad value", c.key)
			continue
		}
		for _, e := range st.Errors {
			if e.Key != c.key {
				t.Errorf("error on %s, want %s", e.Key, c.key)
			}
			if len(e.Error()) > 1024 {
				t.Errorf("%s: error of %d bytes: %.200s...", c.key, len(e.Error()), e.Error())
			}
		}
	}
}

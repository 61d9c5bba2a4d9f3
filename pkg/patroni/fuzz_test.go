package patroni

import (
	"os"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/haproxyname"
)

// checkDecoded fails unless every decoded member can go to HAProxy as it is
// (the decoder's promise) and no number is negative.
func checkDecoded(t *testing.T, clusters map[string]*ClusterState) {
	t.Helper()
	for scope, cs := range clusters {
		for key, m := range cs.Members {
			if key != m.Name {
				t.Fatalf("%s: member keyed %q is named %q", scope, key, m.Name)
			}
			if err := haproxyname.Identifier(m.Name); err != nil {
				t.Fatalf("%s: member name emitted unvalidated: %v", scope, err)
			}
			if err := haproxyname.Address(m.Host); err != nil {
				t.Fatalf("%s: member %s host emitted unvalidated: %v", scope, m.Name, err)
			}
			if err := haproxyname.Port(m.Port); err != nil {
				t.Fatalf("%s: member %s: %v", scope, m.Name, err)
			}
			if m.APIURL != "" {
				if err := haproxyname.Address(m.APIHost); err != nil {
					t.Fatalf("%s: member %s api host emitted unvalidated: %v", scope, m.Name, err)
				}
				if err := haproxyname.Port(m.APIPort); err != nil {
					t.Fatalf("%s: member %s api: %v", scope, m.Name, err)
				}
			}
			if m.Timeline < 0 || (m.XLogLocation != nil && *m.XLogLocation < 0) || (m.LagBytes != nil && *m.LagBytes < 0) {
				t.Fatalf("%s: member %s: negative timeline/xlog/lag", scope, m.Name)
			}
		}
	}
}

// FuzzDecodeMember: any member key name, member value and leader value decode
// without panicking, and only well-formed members come out.
func FuzzDecodeMember(f *testing.F) {
	f.Add("pg-test-1", []byte(memberJSONFor("127.0.0.11")), []byte("pg-test-1"))
	f.Add("pwn 127.4.0.99:5432 #", []byte(memberJSONFor("127.4.0.99")), []byte("ghost-9"))
	f.Add("pg-test-2", []byte(`postgres://127.0.0.12:5432/postgres?application_name=http://127.0.0.12:8008/patroni`), []byte("\x00\xff"))
	f.Add("x", []byte(`{"conn_url":"postgres://[::1]:5432/","api_url":"https://h:0/","timeline":-1,"xlog_location":-9,"tags":{"nofailover":"x"}}`), []byte(""))
	f.Add("y", []byte(`{"conn_url":"postgres://a b:99999/"}`), []byte("y"))
	f.Fuzz(func(t *testing.T, name string, value, leader []byte) {
		kvs := []KV{
			{Key: "/pg/pg-test/members/" + name, Value: value, ModRevision: 3},
			{Key: "/pg/pg-test/members/pg-test-1", Value: []byte(memberJSONFor("127.0.0.11")), ModRevision: 2},
			{Key: "/pg/pg-test/leader", Value: leader, ModRevision: 4},
			{Key: "/pg/pg-test/status", Value: value, ModRevision: 5},
			{Key: "/pg/pg-test/sync", Value: value},
			{Key: "/pg/pg-test/config", Value: value},
			{Key: "/pg/pg-test/failover", Value: value},
			{Key: "/pg/" + name + "/members/" + name, Value: value},
		}
		checkDecoded(t, Decode("/pg", kvs))
	})
}

// FuzzParseSnapshot: any etcdctl -w json document parses or fails cleanly,
// and what it decodes to obeys the decoder's promise.
func FuzzParseSnapshot(f *testing.F) {
	if b, err := os.ReadFile("testdata/dcs-after-failover.json"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"header":{"revision":5},"kvs":[{"key":"/pg/pg-test/members/pwn #","value":"{\"conn_url\":\"postgres://127.4.0.99:5432/\"}"},{"key":"/pg/pg-test/leader","value":"pwn #"}]}`))
	f.Add([]byte(`{"etcd_header":{"revision":1},"kvs":[{"key":"L3BnL3BnLXRlc3QvbGVhZGVy","value":"cGctdGVzdC0x"}]}`))
	f.Add([]byte(`{"header":{"revision":-1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		kvs, _, err := ParseSnapshot("fuzz.json", data)
		if err != nil {
			return
		}
		for _, ns := range []string{"/pg", "/service", ""} {
			checkDecoded(t, Decode(ns, kvs))
		}
	})
}

package patroni

import (
	"strings"
	"testing"
)

func memberJSONFor(host string) string {
	return `{"conn_url":"postgres://` + host + `:5432/postgres","api_url":"http://` + host + `:8008/patroni","state":"running","role":"replica","xlog_location":100,"timeline":2}`
}

// TestDecodeSkipsHostileMembers (issue 12 rows 1, 14): member keys whose
// name or addresses HAProxy would read as configuration are skipped with a
// key error; negative timelines and WAL positions are dropped with one.
func TestDecodeSkipsHostileMembers(t *testing.T) {
	kvs := []KV{
		{Key: "/pg/pg-test/leader", Value: []byte("pg-test-1")},
		{Key: "/pg/pg-test/members/pg-test-1", Value: []byte(memberJSONFor("127.0.0.11"))},
		{Key: "/pg/pg-test/members/pwn 127.4.0.99:5432 #", Value: []byte(memberJSONFor("127.4.0.99"))},
		{Key: "/pg/pg-test/members/evil\nserver", Value: []byte(memberJSONFor("127.4.0.99"))},
		{Key: "/pg/pg-test/members/" + strings.Repeat("x", 200), Value: []byte(memberJSONFor("127.4.0.99"))},
		{Key: "/pg/pg-test/members/evil-1", Value: []byte(memberJSONFor("bad_host"))},
		{Key: "/pg/pg-test/members/evil-2", Value: []byte(`{"conn_url":"postgres://127.0.0.12:5432/postgres","api_url":"http://bad_host:8008/patroni","state":"running","role":"replica"}`)},
		{Key: "/pg/pg-test/members/evil-3", Value: []byte(`postgres://127.4.0.99%20%23:5432/postgres`)},
		{Key: "/pg/pg-test/members/neg", Value: []byte(`{"conn_url":"postgres://127.0.0.13:5432/postgres","state":"running","role":"replica","xlog_location":-5,"timeline":-1}`)},
	}
	st := Decode("/pg", kvs)["pg-test"]
	if st == nil {
		t.Fatal("no cluster decoded")
	}
	var names []string
	for n := range st.Members {
		names = append(names, n)
	}
	if len(st.Members) != 2 || st.Members["pg-test-1"] == nil || st.Members["neg"] == nil {
		t.Fatalf("members = %v, want pg-test-1 and neg only", names)
	}
	if m := st.Members["neg"]; m.Timeline != 0 || m.XLogLocation != nil || m.LagBytes != nil {
		t.Errorf("negative values kept: timeline %d, xlog %v, lag %v", m.Timeline, m.XLogLocation, m.LagBytes)
	}
	errs := make([]string, 0, len(st.Errors))
	for _, e := range st.Errors {
		errs = append(errs, e.Error())
	}
	all := strings.Join(errs, "\n")
	for _, want := range []string{
		"members/pwn 127.4.0.99:5432 #: member skipped: name",
		"members/evil\nserver: member skipped",
		"member skipped: name of 200 characters",
		`members/evil-1: member "evil-1": conn_url: address "bad_host"`,
		`members/evil-2: member "evil-2": api_url: address "bad_host"`,
		`members/evil-3: member "evil-3": conn_url`,
		`member "neg": negative timeline -1 ignored`,
		`member "neg": negative xlog_location -5 ignored`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no key error containing %q; errors:\n%s", want, all)
		}
	}
}

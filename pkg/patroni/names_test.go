package patroni

import (
	"strings"
	"testing"
)

// TestDecodeLeaderAsWritten: Patroni matches the leader key's value against
// member names exactly as written (etcd3.py _cluster_from_nodes): no
// trimming, no case folding. A value that is not exactly a member's name
// names no member, and the decoder must not make one the leader.
func TestDecodeLeaderAsWritten(t *testing.T) {
	members := []KV{
		kv("/pg/c/members/pg-1", member("master", 100, ""), 2),
		kv("/pg/c/members/pg-2", member("replica", 100, ""), 3),
	}
	cases := []struct {
		name, value, leader, err string
	}{
		{"exact", "pg-1", "pg-1", ""},
		{"trailing newline", "pg-2\n", "pg-2\n", `leader name "pg-2\n" has leading or trailing white space`},
		{"leading space", " pg-2", " pg-2", `leader name " pg-2" has leading or trailing white space`},
		{"other case", "PG-2", "PG-2", ""},
		{"empty", "", "", "empty leader name"},
		{"blank", " \n", "", "empty leader name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kvs := append([]KV{kv("/pg/c/leader", c.value, 1)}, members...)
			st := Decode("/pg", kvs)["c"]
			if st.Leader != c.leader {
				t.Errorf("Leader = %q, want %q", st.Leader, c.leader)
			}
			if c.leader != "" && c.leader != "pg-1" && st.Members[st.Leader] != nil {
				t.Errorf("leader value %q decoded as member %q", c.value, st.Leader)
			}
			switch {
			case c.err == "" && len(st.Errors) != 0:
				t.Errorf("errors %v, want none", st.Errors)
			case c.err != "" && (len(st.Errors) != 1 || st.Errors[0].Key != "/pg/c/leader" || !strings.Contains(st.Errors[0].Err, c.err)):
				t.Errorf("errors %v, want one on /pg/c/leader containing %q", st.Errors, c.err)
			}
		})
	}
}

// TestDecodeMemberNameFromKey: Patroni names a member after its key
// (members/<name>) and ignores any name inside the value. A value claiming
// to be the leader does not make its member the leader, and member names
// are case-sensitive.
func TestDecodeMemberNameFromKey(t *testing.T) {
	kvs := []KV{
		kv("/pg/c/leader", "pg-1", 1),
		kv("/pg/c/members/pg-1", member("master", 100, ""), 2),
		// Claims to be pg-1; written with another address (10.0.0.7).
		kv("/pg/c/members/pg-9", member("primary", 100, `,"name":"pg-1"`), 3),
		kv("/pg/c/members/PG-1", member("replica", 100, ""), 4),
	}
	st := Decode("/pg", kvs)["c"]
	if len(st.Errors) != 0 {
		t.Fatalf("errors: %v", st.Errors)
	}
	if st.Leader != "pg-1" || len(st.Members) != 3 {
		t.Fatalf("leader %q, members %v", st.Leader, memberNames(st))
	}
	for name, m := range st.Members {
		if m.Name != name {
			t.Errorf("member key %s decoded as %q", name, m.Name)
		}
	}
	if m := st.Members["pg-1"]; m.Host != "10.0.0.6" {
		t.Errorf("pg-1 has the address %s of the value claiming its name", m.Host)
	}
	if st.Members["PG-1"].Role != RoleReplica || st.Members["pg-1"].Role != RolePrimary {
		t.Errorf("PG-1 and pg-1 mixed up: %+v %+v", st.Members["PG-1"], st.Members["pg-1"])
	}
}

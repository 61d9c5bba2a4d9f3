package patroni

import (
	"strings"
	"testing"
)

func TestDecodeFailover(t *testing.T) {
	tests := []struct {
		name, value string
		want        *Failover
		err         string
	}{
		{name: "switchover requested", value: `{"leader":"pg-test-1","member":"pg-test-2","scheduled_at":null}`, want: &Failover{Leader: "pg-test-1", Member: "pg-test-2"}},
		{name: "scheduled", value: `{"leader":"pg-test-1","scheduled_at":"2026-11-26T15:00:00+00:00"}`, want: &Failover{Leader: "pg-test-1", ScheduledAt: "2026-11-26T15:00:00+00:00"}},
		{name: "reset after use", value: `{}`},
		{name: "empty", value: ``},
		{name: "bad type", value: `{"leader":1}`, err: "failover: leader is float64"},
		{name: "not json", value: `{`, err: "failover: invalid JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := Decode("/pg", []KV{{Key: "/pg/pg-test/leader", Value: []byte("pg-test-1")}, {Key: "/pg/pg-test/failover", Value: []byte(tc.value)}})["pg-test"]
			if tc.err != "" {
				if len(st.Errors) != 1 || !strings.Contains(st.Errors[0].Err, tc.err) || st.Errors[0].Key != "/pg/pg-test/failover" {
					t.Fatalf("errors %v, want one on the failover key with %q", st.Errors, tc.err)
				}
				return
			}
			if len(st.Errors) != 0 {
				t.Fatalf("errors: %v", st.Errors)
			}
			switch {
			case tc.want == nil && st.Failover != nil:
				t.Errorf("failover = %+v, want none", st.Failover)
			case tc.want != nil && (st.Failover == nil || *st.Failover != *tc.want):
				t.Errorf("failover = %+v, want %+v", st.Failover, tc.want)
			}
		})
	}
}

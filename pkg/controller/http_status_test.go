package controller

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// TestWriteStatusIsTheEncoding: /status streams its clusters one at a
// time, and the document is byte for byte what encoding the whole Status
// (indented by two spaces) gives, with every field set or left out.
func TestWriteStatusIsTheEncoding(t *testing.T) {
	if n := reflect.TypeOf(Status{}).NumField(); n != 11 {
		t.Fatalf("Status has %d fields: writeStatus writes 11, list the new one there", n)
	}
	full := Status{
		Now: time.Date(2026, 12, 5, 6, 0, 0, 0, time.UTC), NotReady: []string{"pg-a: held <back> & frozen"}, DryRun: true,
		Leader: &LeaderStatus{Identity: "a", Leader: "(unknown: not read yet)", LeaderlessSeconds: 31}, TransitionsInFlight: 1, Inventory: "/etc/pgsvc/pigsty.yml",
		DCS: []NamespaceStatus{{Namespace: "/pg", Revision: 7, Connected: true}},
		Clusters: []ClusterStatus{
			{Cluster: plan.Cluster{Name: "pg-a", Namespace: "/pg", Leader: "pg-a-1", Live: true}, Revision: 5, Transition: "leader key expired since 2026-12-05T05:59:58Z: from pg-a-2 to pg-a-1"},
			{Cluster: plan.Cluster{Name: "pg-b", Namespace: "/pg"}, Frozen: "vanished", PlanError: "bad selector"},
		},
		Targets: []TargetStatus{{Name: "direct:/etc/haproxy/haproxy.cfg", State: "in_sync", InSync: true}},
		History: []Event{{At: time.Date(2026, 12, 5, 6, 0, 1, 0, time.UTC), Kind: "applied", Changes: []target.Change{
			{Kind: target.KindSetState, Backend: "pg-a-replica", Server: "pg-a-1.backup", Detail: "drain -> ready", Runtime: true}}}},
	}
	empty := full
	empty.NotReady, empty.DryRun, empty.Leader, empty.Clusters, empty.Targets, empty.History = nil, false, nil, []ClusterStatus{}, nil, nil
	none := empty
	none.Clusters = nil
	for name, st := range map[string]Status{"full": full, "empty": empty, "nil": none} {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := writeStatus(&got, st); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("%s: writeStatus wrote\n%s\nwant\n%s", name, got.String(), want.String())
		}
	}
}

// statusOf1000 is a status document of 1,000 three-member clusters with
// Pigsty's four services (~8 MB of JSON, as /status at that size).
func statusOf1000() Status {
	st := Status{Now: time.Now(), Inventory: "pigsty.yml"}
	for i := 0; i < 1000; i++ {
		name := "pg-b" + strconv.Itoa(10000 + i)[1:]
		cl := plan.Cluster{Name: name, Namespace: "/pg", Leader: name + "-1", Live: true}
		for m := 1; m <= 3; m++ {
			cl.Members = append(cl.Members, plan.Member{Name: name + "-" + strconv.Itoa(m), Address: "127.90.0." + strconv.Itoa(m+1),
				InventoryRole: "replica", Role: "replica", RoleReason: "Patroni replica", Known: true, Served: true,
				PatroniRole: "replica", State: "running", Timeline: 1})
		}
		for _, svc := range []string{"primary", "replica", "default", "offline"} {
			s := services.Service{Cluster: name, Name: name + "-" + svc, Service: svc, IP: "127.90.0.1", Port: 5433, Check: "/primary",
				Dest: "pgbouncer", DestPort: 6432, Balance: "roundrobin", Maxconn: 5000,
				DefaultServer: "inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100"}
			for _, m := range cl.Members {
				s.Servers = append(s.Servers, services.Server{Name: m.Name, Address: m.Address, Port: 6432, CheckPort: 8008, Weight: 100,
					Reason: "selected by [] (role replica); not backup: does not match [? pg_role == `primary` || pg_role == `offline` ]", Selected: true})
			}
			cl.Services = append(cl.Services, s)
		}
		st.Clusters = append(st.Clusters, ClusterStatus{Cluster: cl, Revision: int64(i)})
	}
	return st
}

// BenchmarkStatusJSON: the memory one /status takes at 1,000 clusters,
// streamed (writeStatus) and encoded whole (writeJSON, as before).
func BenchmarkStatusJSON(b *testing.B) {
	st := statusOf1000()
	for _, bc := range []struct {
		name  string
		write func(w http.ResponseWriter)
	}{
		{"streamed", func(w http.ResponseWriter) { _ = writeStatus(w, st) }},
		{"whole", func(w http.ResponseWriter) { writeJSON(w, http.StatusOK, st) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				w := httptest.NewRecorder()
				w.Body = nil // discard: only the encoder's own memory counts
				bc.write(w)
			}
		})
	}
}

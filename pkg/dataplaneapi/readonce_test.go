package dataplaneapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

func fleet(n int) []services.Service {
	var out []services.Service
	for i := 1; i <= n; i++ {
		out = append(out, cluster(fmt.Sprintf("pg-c%d", i), i, 3, 1)...)
	}
	return out
}

// reads returns the GETs of a request list (paths, v2 form).
func reads(rs []dpapitest.Request) []string {
	var out []string
	for _, r := range rs {
		if r.Method == http.MethodGet {
			out = append(out, r.Path)
		}
	}
	return out
}

func TestResyncWithSameVersionReadsOnlyTheVersion(t *testing.T) {
	f := newFixture(t)
	desired := fleet(5)
	f.apply(t, desired)
	f.srv.ResetRequests()
	for i := 0; i < 3; i++ {
		if res := f.apply(t, desired); len(res.Changes) != 0 {
			t.Fatalf("resync changed: %+v", res.Changes)
		}
	}
	if rs := f.srv.Requests(); len(rs) != 3 || reads(rs)[0] != "/configuration/version" || reads(rs)[2] != "/configuration/version" {
		t.Fatalf("3 resyncs made %d requests, want 3 version reads: %v", len(rs), reads(rs))
	}
	if st := f.tg.Reads(); st.Full != 1 || st.Reused < 3 {
		t.Errorf("reads %+v: want 1 full read (the first apply), the rest reused", st)
	}
}

func TestOneClusterChangeCostsTheSameAtAnyFleetSize(t *testing.T) {
	count := func(n int) (reqs int, gets []string) {
		f := newFixture(t)
		desired := fleet(n)
		f.apply(t, desired)
		f.srv.ResetRequests()
		// pg-c1 switches over: its services change, nobody else's.
		desired = append(cluster("pg-c1", 1, 3, 2), desired[4:]...)
		res := f.apply(t, desired)
		if len(res.Changes) == 0 || !res.Reloaded {
			t.Fatalf("n=%d: switchover not applied: %+v", n, res)
		}
		f.assertConverged(t, desired)
		return len(f.srv.Requests()), gets
	}
	small, _ := count(2)
	big, _ := count(30)
	if small != big {
		t.Fatalf("one cluster's switchover: %d requests with 2 clusters, %d with 30: must not grow with the fleet", small, big)
	}
}

func TestSwitchoverReadsNoObjects(t *testing.T) {
	f := newFixture(t)
	desired := fleet(3)
	f.apply(t, desired)
	f.srv.ResetRequests()
	desired = append(cluster("pg-c1", 1, 3, 2), desired[4:]...)
	f.apply(t, desired)
	info := 0
	for _, r := range reads(f.srv.Requests()) {
		switch {
		case r == "/configuration/version", strings.HasPrefix(r, "/reloads/"):
		case strings.HasSuffix(r, "/runtime/info"):
			info++ // the running process, before the write and after the reload
		default:
			t.Errorf("switchover read %s: only the version, the reload status and the running process's pid should be read", r)
		}
	}
	if info < 2 {
		t.Errorf("the running process read %d times around the switchover's reload, want before and after", info)
	}
}

func TestOutsideEditTriggersOneFullRead(t *testing.T) {
	f := newFixture(t)
	desired := fleet(3)
	f.apply(t, desired)
	// Another writer flips a backup flag: the version moves.
	f.srv.Edit(func(c *dpapitest.Config) {
		for _, b := range c.Backends {
			if b.Model.Name == "pg-c2-replica" {
				for _, s := range b.Servers {
					if s.Name == "pg-c2-1" {
						s.Backup = ""
					}
				}
			}
		}
	})
	f.srv.ResetRequests()
	res := f.apply(t, desired)
	if len(res.Changes) != 1 || res.Changes[0].Backend != "pg-c2-replica" || res.Changes[0].Kind != target.KindUpdateServer {
		t.Fatalf("outside edit not repaired: %+v", res.Changes)
	}
	if got := f.srv.Count(http.MethodGet, "/configuration/raw"); got != 1 {
		t.Errorf("raw reads after the outside edit: %d, want 1", got)
	}
	f.assertConverged(t, desired)
	if st := f.tg.Reads(); st.Full != 2 {
		t.Errorf("reads %+v: want 2 full reads (start, outside edit)", st)
	}
}

func TestWriteFenceNeverWaitsOnAFullRead(t *testing.T) {
	f := newFixture(t)
	desired := fleet(3)
	f.apply(t, desired) // a transaction: the parsed copy follows the write
	f.srv.ResetRequests()
	fenced := append([]services.Service(nil), desired...)
	for i := range fenced[:4] {
		fenced[i].Servers = append([]services.Server(nil), fenced[i].Servers...)
		for j := range fenced[i].Servers {
			if fenced[i].Servers[j].Name == "pg-c1-1" && (fenced[i].Service == "primary" || fenced[i].Service == "default") {
				fenced[i].Servers[j].ForceDown = true
			}
		}
	}
	res := f.apply(t, fenced)
	if len(res.Changes) != 2 || res.Reloaded || res.Changes[0].Kind != target.KindForceDown || res.ForcedDown.IsZero() {
		t.Fatalf("fence: %+v", res)
	}
	// The version, and the live health of the two fenced backends: one
	// runtime GET each, no configuration object.
	for _, r := range reads(f.srv.Requests()) {
		if r != "/configuration/version" && r != "/runtime/servers" {
			t.Errorf("the fence read %s; it must only read the version and the fenced backends' runtime servers", r)
		}
	}
	for _, w := range f.srv.Writes() {
		if w.Method != "PUT" || !strings.HasPrefix(w.Path, "/runtime/servers/") || !strings.Contains(string(w.Body), `"operational_state":"down"`) {
			t.Errorf("the fence wrote %s %s %s; want runtime PUTs operational_state down only", w.Method, w.Path, w.Body)
		}
	}
	// Fenced already: nothing more while it lasts (a real HAProxy keeps it
	// DOWN until `rise` good checks; the double's are instant: say it).
	for i := range fenced[:4] {
		if fenced[i].Service == "primary" || fenced[i].Service == "default" {
			f.srv.SetOperationalState(fenced[i].Name, "pg-c1-1", "down")
		}
	}
	if res := f.apply(t, fenced); len(res.Changes) != 0 {
		t.Errorf("fence again: %+v, want no change", res.Changes)
	}
	// Lifting it writes nothing (the server is left to HAProxy's checks).
	f.srv.ResetRequests()
	if res := f.apply(t, desired); len(res.Changes) != 0 {
		t.Fatalf("unfence: %+v", res)
	}
	if w := f.srv.Writes(); len(w) != 0 {
		t.Errorf("lifting the fence wrote %+v", w)
	}
	f.assertConverged(t, desired)
}

func TestFailedApplyReadsEverythingNextTime(t *testing.T) {
	f := newFixture(t)
	desired := fleet(2)
	f.apply(t, desired)
	f.srv.InjectFault(dpapitest.Fault{Method: http.MethodPut, Path: "/transactions/", Status: 503})
	after := append(cluster("pg-c1", 1, 3, 2), desired[4:]...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.tg.Apply(ctx, after); err == nil {
		t.Fatal("commit 503 not reported")
	}
	if n := f.srv.OpenTransactions(); n != 0 {
		t.Fatalf("%d transactions left open", n)
	}
	full := f.tg.Reads().Full
	f.apply(t, after)
	if f.tg.Reads().Full != full+1 {
		t.Errorf("after a failed apply the next one must read the whole file: %+v", f.tg.Reads())
	}
	f.assertConverged(t, after)
}

// A weight change (a lifted write fence) that comes with changes needing a
// reload is applied at runtime first, never carried by the reload (the
// server-state file would give the new worker the old running weight).
func TestWeightChangeDoesNotRideOnAReload(t *testing.T) {
	f := newFixture(t)
	before := cluster("pg-live", 1, 3, 1)
	before[0].Servers[0].Weight = 0 // fenced
	f.apply(t, before)
	after := cluster("pg-live", 1, 3, 2) // lift + switchover
	f.srv.ResetRequests()
	res := f.apply(t, after)
	kinds := map[string]int{}
	for _, c := range res.Changes {
		kinds[c.Kind]++
	}
	if kinds[target.KindSetWeight] != 1 || kinds[target.KindUpdateServer] == 0 {
		t.Fatalf("changes %v: want the lift and backup flips together", kinds)
	}
	weightPut, txn := -1, -1
	for i, r := range f.srv.Writes() {
		switch {
		case r.Method == http.MethodPut && r.Path == "/configuration/servers/pg-live-1" && r.Query.Get("backend") == "pg-live-primary":
			if r.Query.Get("transaction_id") != "" {
				t.Errorf("the weight change rode in the transaction")
			}
			weightPut = i
		case r.Method == http.MethodPost && r.Path == "/transactions":
			txn = i
		}
	}
	if weightPut < 0 || txn < 0 || weightPut > txn {
		t.Fatalf("weight PUT at %d, transaction at %d: want the weight first, outside the transaction", weightPut, txn)
	}
	f.assertConverged(t, after)
	// The parsed copy followed both writes: nothing is read or written again.
	f.srv.ResetRequests()
	if res := f.apply(t, after); len(res.Changes) != 0 || len(f.srv.Requests()) != 1 {
		t.Fatalf("after: %+v, %d requests", res.Changes, len(f.srv.Requests()))
	}
}

package plan

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// noDNS keeps fuzzing off the network: only db.example resolves.
func noDNS(f *testing.F) {
	prev := topology.LookupHost
	topology.LookupHost = func(h string) ([]string, error) {
		if h == "db.example" {
			return []string{"10.0.0.1"}, nil
		}
		return nil, errors.New("no such host")
	}
	f.Cleanup(func() { topology.LookupHost = prev })
}

// mustBeSafe fails unless every service passes the check renderers and
// drivers apply (services.Validate) and renders, in Pigsty's layout and in
// the twin layout (a twins target validates its whole desired: one bad
// twin stops every cluster's apply).
func mustBeSafe(t *testing.T, p *Plan) {
	t.Helper()
	var all []services.Service
	for _, c := range p.Clusters {
		all = append(all, c.Services...)
	}
	for i := range all {
		if err := services.ValidateService(&all[i]); err != nil {
			t.Fatalf("plan emitted an unvalidated HAProxy token: %v", err)
		}
	}
	_ = haproxycfg.Render(all, haproxycfg.Options{})
	tw, err := services.Twins(all)
	if err != nil {
		t.Fatalf("the plan cannot be laid out as twins: %v", err)
	}
	for i := range tw {
		if err := services.ValidateService(&tw[i]); err != nil {
			t.Fatalf("the twin layout of the plan does not validate: %v", err)
		}
	}
}

// FuzzLoadInventory: any inventory is either rejected, or every service it
// plans passes the HAProxy validator (what plan accepts, run can apply).
func FuzzLoadInventory(f *testing.F) {
	noDNS(f)
	seeds, _ := filepath.Glob("../topology/testdata/bad/*.yml")
	seeds = append(seeds, "../../config/pigsty.yml", "../../config/demo.yml")
	for _, s := range seeds {
		if data, err := os.ReadFile(s); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(testInventory))
	f.Add([]byte("all:\n  children:\n    g:\n      hosts: { \"127.4.0.99 #\": { pg_seq: 1, pg_role: primary } }\n      vars: { pg_cluster: pg-x }\n"))
	f.Add([]byte("all:\n  children:\n    g:\n      hosts: { db.example: { pg_seq: 1, pg_role: primary } }\n      vars: { pg_cluster: pg-x, pg_services: [{name: a, port: 9, selector: \"[]\", options: \"inter 1s\"}] }\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := topology.Parse("fuzz.yml", data)
		if err != nil {
			return
		}
		if err := Check(inv); err != nil {
			return
		}
		p, err := Compute(inv, nil, Options{})
		if errors.Is(err, services.ErrSelectorShape) {
			t.Fatalf("Check passed a selector that never returns members: %v", err)
		}
		if err != nil {
			return // data-dependent evaluation error (see Check)
		}
		mustBeSafe(t, p)
	})
}

// FuzzPlanDCS: whatever Patroni's keys say (member names, values, the
// leader), with unknown members served, the plan only holds servers HAProxy
// can be given safely. Decoding, merging and service building end to end.
func FuzzPlanDCS(f *testing.F) {
	member := func(host string) []byte {
		return []byte(`{"conn_url":"postgres://` + host + `:5432/postgres","api_url":"http://` + host + `:8008/patroni","state":"running","role":"replica","xlog_location":5,"timeline":1}`)
	}
	f.Add("pg-test-9", member("127.0.0.19"), "pg-test-1")
	f.Add("pwn 127.4.0.99:5432 #", member("127.4.0.99"), "pwn 127.4.0.99:5432 #")
	f.Add("pg-test-2", member("a b"), "ghost-9")
	f.Add("pg-test-1", []byte(`postgres://127.0.0.11:5432/postgres?application_name=http://127.0.0.11:8008/`), "")
	f.Add("pg-test-"+strings.Repeat("y", 119), member("127.0.0.19"), "pg-test-1") // valid server name, too long for its twin's
	inv, err := topology.Parse("inv.yml", []byte(testInventory))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name string, value []byte, leader string) {
		kvs := []patroni.KV{
			{Key: "/pg/pg-test/members/" + name, Value: value, ModRevision: 2},
			{Key: "/pg/pg-test/members/pg-test-1", Value: member("10.10.10.11"), ModRevision: 1},
			{Key: "/pg/pg-test/leader", Value: []byte(leader), ModRevision: 3},
		}
		dcs := patroni.Decode("/pg", kvs)
		for _, unknown := range []bool{false, true} {
			p, err := Compute(inv, dcs, Options{IncludeUnknown: unknown, LastKnownLeaders: map[string]string{"pg-test": "pg-test-1"}})
			if err != nil {
				t.Fatalf("the default selectors failed on DCS data: %v", err)
			}
			mustBeSafe(t, p)
		}
	})
}

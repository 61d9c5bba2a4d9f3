package dataplaneapi

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// limitFleet is k clusters of a primary and a replica service over three
// members, member primary the leader (the replica service has it as
// backup).
func limitFleet(k, primary int) []services.Service {
	var out []services.Service
	for c := 0; c < k; c++ {
		for _, svc := range []string{"primary", "replica"} {
			s := services.Service{Cluster: fmt.Sprintf("pg-l%02d", c), Name: fmt.Sprintf("pg-l%02d-%s", c, svc), Service: svc,
				IP: "*", Port: 5433 + c*10 + len(svc), Check: "/" + svc, Dest: "6432", DestPort: 6432,
				Balance: "roundrobin", Maxconn: 5000}
			for i := 1; i <= 3; i++ {
				s.Servers = append(s.Servers, services.Server{Name: fmt.Sprintf("pg-l%02d-%d", c, i),
					Address: fmt.Sprintf("127.0.%d.%d", c, 10+i), Port: 6432, CheckPort: 8008, Weight: 100,
					Backup: svc == "replica" && i == primary})
			}
			out = append(out, s)
		}
	}
	return out
}

// TestPlanOpsLimit: planning the write calls up to a limit tells whether
// their count passes it exactly as planning them all does, for change sets
// of every size around the limit: creations (a first sync) and updates
// whose replaces repeat (a failover moves the backup flags).
func TestPlanOpsLimit(t *testing.T) {
	srv := dpapitest.NewServer(t)
	c, err := New(srv.URL(), Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tg := NewTarget(c, zaptest.NewLogger(t), TargetOptions{ReloadTimeout: 5 * time.Second, ReloadPollInterval: 10 * time.Millisecond,
		RawThreshold: 1 << 20})
	ctx := context.Background()
	check := func(what string, desired []services.Service) {
		t.Helper()
		st, err := tg.read(ctx, desired, false)
		if err != nil {
			t.Fatal(err)
		}
		changes := st.current.diff(desired)
		all, over, err := planOps(st, desired, changes, 0)
		if err != nil || over {
			t.Fatalf("%s: planning every call: over %v, %v", what, over, err)
		}
		if len(all) == 0 {
			t.Fatalf("%s: no calls planned for %d changes", what, len(changes))
		}
		t.Logf("%s: %d changes, %d calls", what, len(changes), len(all))
		for limit := 1; limit <= len(all)+2; limit++ {
			ops, over, err := planOps(st, desired, changes, limit)
			if err != nil || over != (len(all) > limit) || !over && len(ops) != len(all) {
				t.Fatalf("%s, limit %d: %d calls, over %v, %v; planning all: %d calls", what, limit, len(ops), over, err, len(all))
			}
		}
	}
	for k := 1; k <= 4; k++ {
		check(fmt.Sprintf("first sync of %d clusters", k), limitFleet(k, 1))
	}
	if _, err := tg.Apply(ctx, limitFleet(4, 1)); err != nil {
		t.Fatal(err)
	}
	check("a failover of 4 clusters", limitFleet(4, 2))
}

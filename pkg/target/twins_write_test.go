package target_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// A write service (/primary check) whose selectors depend on roles: the
// primary as the normal server, the replicas as backups (a "primary, else
// any replica for reads that tolerate it" service).
const twinWriteInventory = `
all:
  children:
    pg-test:
      hosts:
        10.10.10.11: { pg_seq: 1, pg_role: primary }
        10.10.10.12: { pg_seq: 2, pg_role: replica }
        10.10.10.13: { pg_seq: 3, pg_role: replica }
      vars:
        pg_cluster: pg-test
        pg_default_services:
          - { name: rw, port: 5440, dest: postgres, check: /primary, selector: "[? pg_role == ` + "`primary`" + ` ]", backup: "[? pg_role == ` + "`replica`" + ` ]" }
`

// TestTwinsWriteServiceWithBackup: in a /primary-checked service with a
// backup selector, a switchover is runtime flips only; the inactive twins
// are maint (a member leaving the write role must keep no session there),
// only the primary has an active twin (the replicas Pigsty's layout makes
// backups never pass /primary, and a twin's `ready` is UP at once: the old
// primary is not readied as a backup, its twin's maint cuts its sessions),
// and the new primary's force-up rides on its active twin only.
func TestTwinsWriteServiceWithBackup(t *testing.T) {
	inv, err := topology.Parse("inv.yml", []byte(twinWriteInventory))
	if err != nil {
		t.Fatal(err)
	}
	build := func(leader string, members ...string) services.Service {
		t.Helper()
		p, err := plan.Compute(inv, twinState(leader, members...), plan.Options{})
		if err != nil {
			t.Fatal(err)
		}
		svcs := p.Clusters[0].Services
		if len(svcs) != 1 || !svcs[0].RoleDependent {
			t.Fatalf("planned %+v, want one role-dependent service", svcs)
		}
		// What the controller adds during a transition: the old primary
		// fenced, the new one forced UP.
		for i := range svcs[0].Servers {
			sv := &svcs[0].Servers[i]
			switch {
			case sv.Name == "pg-test-1" && leader == "pg-test-2":
				sv.ForceDown = true
			case sv.Name == "pg-test-2" && leader == "pg-test-2":
				sv.ForceUp = true
			}
		}
		tw, err := services.Twins(svcs)
		if err != nil {
			t.Fatal(err)
		}
		return tw[0]
	}
	before := build("pg-test-1", "pg-test-1:primary", "pg-test-2:replica", "pg-test-3:replica")
	after := build("pg-test-2", "pg-test-1:replica", "pg-test-2:primary", "pg-test-3:replica")
	if before.Layout != services.LayoutTwins || services.InactiveState(before) != "maint" {
		t.Fatalf("layout %q, inactive state %q: want twins with maint", before.Layout, services.InactiveState(before))
	}
	if g, w := active(before), "pg-test-1 pg-test-1.backup+B-off pg-test-2-off pg-test-2.backup+B-off pg-test-3-off pg-test-3.backup+B-off"; g != w {
		t.Errorf("before:\n got %s\nwant %s", g, w)
	}
	if g, w := active(after), "pg-test-1-off pg-test-1.backup+B-off pg-test-2 pg-test-2.backup+B-off pg-test-3-off pg-test-3.backup+B-off"; g != w {
		t.Errorf("after:\n got %s\nwant %s", g, w)
	}
	for _, sv := range after.Servers {
		switch {
		case sv.ForceUp && (sv.Disabled || sv.Name != "pg-test-2"):
			t.Errorf("force-up on %s (disabled %v): only the new primary's active twin", sv.Name, sv.Disabled)
		case sv.Name == "pg-test-2" && !sv.ForceUp:
			t.Errorf("the new primary's active twin is not forced up")
		case sv.Member == "pg-test-1" && !sv.Disabled && !sv.ForceDown:
			t.Errorf("the fenced old primary's active twin %s is not forced DOWN", sv.Name)
		case sv.ForceDown && (sv.Disabled || sv.Member != "pg-test-1"):
			t.Errorf("forced DOWN on %s (disabled %v): only the old primary's active twin", sv.Name, sv.Disabled)
		case sv.Weight != 100:
			t.Errorf("%s weight %d, want 100 (the fence is no weight)", sv.Name, sv.Weight)
		}
	}
	changes := target.Diff(current([]services.Service{before}), []services.Service{after})
	if !target.RuntimeOnly(changes) {
		t.Fatalf("switchover needs a reload: %+v", changes)
	}
	var got, fence []string
	for _, c := range target.OrderFlips(changes) {
		if c.Kind == target.KindForceDown {
			fence = append(fence, c.Server)
		}
		if c.Kind == target.KindSetState {
			got = append(got, fmt.Sprintf("%s %s", c.Server, c.Detail))
		}
	}
	want := []string{
		"pg-test-2 maint -> ready",
		"pg-test-1 ready -> maint",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("flips:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	if len(fence) != 0 {
		t.Errorf("forced DOWN %v, want none (the old primary has no active twin)", fence)
	}
}

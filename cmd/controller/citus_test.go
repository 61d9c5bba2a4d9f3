package main

import (
	"path/filepath"
	"testing"
)

const (
	citusInv  = "testdata/plan/citus.yml"
	citusSnap = "testdata/dcs/citus-group1-switchover.json"
)

// TestPlanCitusFollowsGroupSwitchover: Citus keys (<ns>/<pg_shard>/<pg_group>/...)
// reach the inventory cluster with that pg_shard and pg_group; a switchover
// inside group 1 moves only pg-citus2's services.
func TestPlanCitusFollowsGroupSwitchover(t *testing.T) {
	static := planJSON(t, "--inventory", citusInv)
	live := planJSON(t, "--inventory", citusInv, "--dcs", citusSnap)
	wantLeader := map[string]string{"pg-citus1": "pg-citus1-1", "pg-citus2": "pg-citus2-2", "pg-citus3": "pg-citus3-1"}
	for i, c := range live.Clusters {
		if !c.Live || c.Leader != wantLeader[c.Name] {
			t.Errorf("%s: live %t leader %q, want live, leader %s", c.Name, c.Live, c.Leader, wantLeader[c.Name])
		}
		if c.Scope != "pg-citus" || c.CitusGroup == nil || *c.CitusGroup != i {
			t.Errorf("%s: scope %q group %v, want pg-citus group %d", c.Name, c.Scope, c.CitusGroup, i)
		}
	}
	for _, tc := range []struct{ cluster, service, static, live string }{
		{"pg-citus1", "replica", "pg-citus1-1(backup) pg-citus1-2", "pg-citus1-1(backup) pg-citus1-2"},
		{"pg-citus2", "replica", "pg-citus2-1(backup) pg-citus2-2", "pg-citus2-1 pg-citus2-2(backup)"},
		{"pg-citus3", "replica", "pg-citus3-1(backup) pg-citus3-2", "pg-citus3-1(backup) pg-citus3-2"},
		{"pg-citus2", "offline", "pg-citus2-2(backup)", "pg-citus2-1(backup)"},
		{"pg-citus1", "offline", "pg-citus1-2(backup)", "pg-citus1-2(backup)"},
	} {
		if got := servers(t, static, tc.cluster, tc.service); got != tc.static {
			t.Errorf("inventory only: %s-%s = %q, want %q", tc.cluster, tc.service, got, tc.static)
		}
		if got := servers(t, live, tc.cluster, tc.service); got != tc.live {
			t.Errorf("after the group 1 switchover: %s-%s = %q, want %q", tc.cluster, tc.service, got, tc.live)
		}
	}
}

func TestPlanCitusGolden(t *testing.T) {
	code, out, errOut := runCmd(t, "plan", "--inventory", citusInv, "--dcs", citusSnap)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	checkGolden(t, filepath.Join("testdata", "plan", "citus-group1-switchover.txt"), []byte(out))
}

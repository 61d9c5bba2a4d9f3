package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/haproxy"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

func loadFleet(t *testing.T, n int) (*fleet, *topology.Inventory) {
	t.Helper()
	f := newFleet(n, 90)
	p := filepath.Join(t.TempDir(), "pigsty.yml")
	if err := os.WriteFile(p, []byte(f.inventory()), 0o600); err != nil {
		t.Fatal(err)
	}
	inv, err := topology.Load(p)
	if err != nil {
		t.Fatalf("the generated inventory does not load: %v", err)
	}
	return f, inv
}

// The generated fleet is Pigsty's default service set: 4 services and 11
// servers per cluster, each cluster on its own addresses.
func TestFleetInventory(t *testing.T) {
	f, inv := loadFleet(t, 300)
	if len(inv.Clusters) != 300 {
		t.Fatalf("clusters: %d", len(inv.Clusters))
	}
	w, err := f.modelWanted(inv, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != 4*300 {
		t.Fatalf("backends: %d, want 1200", len(w))
	}
	servers := 0
	seen := map[string]bool{}
	for _, s := range w {
		servers += len(s)
		for a := range s {
			seen[a] = true
		}
	}
	if servers != 11*300 {
		t.Errorf("servers: %d, want 3300", servers)
	}
	for i := 0; i < 300; i++ {
		for k := 0; k < 4; k++ {
			a := f.addr(i, k)
			if strings.HasSuffix(a, ".0") || strings.HasSuffix(a, ".255") || !strings.HasPrefix(a, "127.90.") {
				t.Fatalf("addr(%d,%d) = %s", i, k, a)
			}
		}
	}
	if f.addr(299, 3) == f.addr(0, 0) || f.addr(62, 2) == f.addr(62, 3) {
		t.Error("addresses collide")
	}
	// members on 3 ports each (pgbouncer 6432 for primary/replica, 5432 for default/offline)
	if len(seen) != 300*3*2 {
		t.Errorf("distinct member endpoints: %d, want %d", len(seen), 300*3*2)
	}
}

// A switchover moves the replica service's backup flag and the offline
// service's members; the model's plan follows the leader.
func TestSwitchoverModel(t *testing.T) {
	f, inv := loadFleet(t, 3)
	only := map[int]bool{1: true}
	before, err := f.modelWanted(inv, only)
	if err != nil {
		t.Fatal(err)
	}
	steps, leaderStep := f.switchover(1)
	if len(steps) != 4 || leaderStep != 2 || f.leader[1] != 2 {
		t.Fatalf("steps %d, leader step %d, leader %d", len(steps), leaderStep, f.leader[1])
	}
	after, err := f.modelWanted(inv, only)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 4 {
		t.Fatalf("backends of one cluster: %v", after)
	}
	m1, m2 := f.addr(1, 1)+":6432", f.addr(1, 2)+":6432"
	if !before["pg-b0001-replica"][m1] || before["pg-b0001-replica"][m2] {
		t.Errorf("replica before: %v", before["pg-b0001-replica"])
	}
	if after["pg-b0001-replica"][m1] || !after["pg-b0001-replica"][m2] {
		t.Errorf("replica after: %v", after["pg-b0001-replica"])
	}
	if _, ok := after["pg-b0001-offline"][f.addr(1, 2)+":5432"]; ok {
		t.Errorf("offline after still has the new primary: %v", after["pg-b0001-offline"])
	}
	expire, promote := f.massFailover()
	if len(expire) != 3 || len(promote) != 3 || f.leader[1] != 3 || f.gone[1] != 2 || f.leader[0] != 2 {
		t.Fatalf("mass failover model: leaders %v gone %v", f.leader, f.gone)
	}
	if _, err := f.modelWanted(inv, nil); err != nil {
		t.Fatal(err)
	}
}

func TestMismatch(t *testing.T) {
	w := wanted{"pg-a-replica": {"127.90.0.2:6432": true, "127.90.0.3:6432": false}}
	rows := []haproxy.StatRow{
		{Proxy: "pg-a-replica", Name: "FRONTEND", Type: haproxy.TypeFrontend},
		{Proxy: "pg-a-replica", Name: "pg-a-1", Type: haproxy.TypeServer, Status: "DOWN", Addr: "127.90.0.2", Port: 6432, Backup: true},
		{Proxy: "pg-a-replica", Name: "pg-a-2", Type: haproxy.TypeServer, Status: "UP", Addr: "127.90.0.3", Port: 6432},
		// an inactive twin does not count
		{Proxy: "pg-a-replica", Name: "pg-a-2~b", Type: haproxy.TypeServer, Status: "MAINT", Addr: "127.90.0.3", Port: 6432, Backup: true},
		{Proxy: "other", Name: "x", Type: haproxy.TypeServer, Status: "UP", Addr: "127.1.1.1", Port: 1},
	}
	if bad, ex := mismatch(rows, w); len(bad) != 0 {
		t.Errorf("live state reported as differing: %v %s", bad, ex)
	}
	// The wanted backup twin of pg-a-1 is active, its outgoing normal
	// twin (listed first) still is too: not live.
	both := append([]haproxy.StatRow{{Proxy: "pg-a-replica", Name: "pg-a-1~n", Type: haproxy.TypeServer, Status: "UP", Addr: "127.90.0.2", Port: 6432}}, rows...)
	if bad, _ := mismatch(both, w); len(bad) != 1 {
		t.Errorf("a member's normal and backup twins both active counted as live")
	}
	rows[1].Backup = false
	if bad, _ := mismatch(rows, w); len(bad) != 1 {
		t.Errorf("a wrong backup flag was not noticed")
	}
	rows[1].Backup, rows[2].Status = true, "DRAIN"
	for i := range rows {
		rows[i].Weight = 100
	}
	if bad, _ := mismatch(rows, w); len(bad) != 1 {
		t.Errorf("a draining server was counted as active")
	}
	fence := []haproxy.StatRow{
		{Proxy: "pg-a-primary", Name: "pg-a-1", Type: haproxy.TypeServer, Status: "UP", Addr: "127.90.0.2", Port: 6432, Weight: 100},
		{Proxy: "pg-a-replica", Name: "pg-a-1", Type: haproxy.TypeServer, Status: "DOWN", Addr: "127.90.0.2", Port: 6432, Weight: 100},
	}
	if fenced(fence, "127.90.0.2") {
		t.Error("fenced while the old primary is UP in the write service (DOWN in a read service is no fence)")
	}
	fence[0].Status = "DOWN 1/3"
	if !fenced(fence, "127.90.0.2") || fenced(fence, "") || fenced(fence, "127.90.0.3") {
		t.Error("the old primary DOWN in the write service not seen as the fence, or seen for another address")
	}
	fence[0].Status = "MAINT"
	if fenced(fence, "127.90.0.2") {
		t.Error("an inactive (MAINT) server seen as the fence")
	}
	rows[1].Weight = 0
	n, ex := offWeights(rows, map[string]int{"pg-a-replica/127.90.0.2:6432": 100, "pg-a-replica/127.90.0.3:6432": 100})
	if n != 1 || ex != "pg-a-replica/127.90.0.2:6432 weight 0, plan 100" {
		t.Errorf("offWeights: %d %q", n, ex)
	}
}

func TestPathShape(t *testing.T) {
	for in, want := range map[string]string{
		"/v2/services/haproxy/configuration/servers/pg-b0001-2": "/v2/services/haproxy/configuration/servers/{name}",
		"/v3/services/haproxy/transactions/6f1c-22":             "/v3/services/haproxy/transactions/{name}",
		"/v2/services/haproxy/reloads/2026-12-02-1":             "/v2/services/haproxy/reloads/{name}",
		"/v2/services/haproxy/configuration/raw":                "/v2/services/haproxy/configuration/raw",
	} {
		if got := pathShape(in); got != want {
			t.Errorf("pathShape(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestTrackingTwinsByHealth: the trackers judged by health are the
// replica service's backup twins (they track the primary service's
// servers); the offline service's backup twins track the replica
// service's normal twins, take their admin state and are judged by it,
// as flipped twins are.
func TestTrackingTwinsByHealth(t *testing.T) {
	f, inv := loadFleet(t, 2)
	tr, bs, all, err := f.trackingTwins(inv)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		c := f.clusterName(i)
		for m := 1; m <= 3; m++ {
			if !tr[c+"-replica/"+c+"-"+strconv.Itoa(m)+".backup"] {
				t.Errorf("%s-replica/%s-%d.backup: not a tracker judged by health (%v)", c, c, m, tr)
			}
			if !all[c+"-offline/"+c+"-"+strconv.Itoa(m)+".backup"] || !all[c+"-replica/"+c+"-"+strconv.Itoa(m)+".backup"] {
				t.Errorf("%s's backup twins of member %d missing from every tracker (%v)", c, m, all)
			}
			if tr[c+"-offline/"+c+"-"+strconv.Itoa(m)+".backup"] {
				t.Errorf("%s-offline/%s-%d.backup judged by health: it takes its replica twin's admin state", c, c, m)
			}
		}
		if !bs[c+"-replica"] || bs[c+"-offline"] {
			t.Errorf("tracker backends %v: want %s-replica, not %s-offline", bs, c, c)
		}
	}
}

package plan

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/haproxyname"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// TestPlanTwinsValidate: a member the inventory lacks, served with the
// include-unknown option, whose name is a valid server name (Patroni's
// member key: up to 127 characters) but whose backup twin name is not
// (more than 120) is left out of the services whose members depend on roles
// (the twinned ones), in both layouts, with one warning; the other services
// keep it, and the twin layout of the plan passes services.Validate, which
// every driver applies to its whole desired: before, its 134-character twin
// stopped every cluster's apply on each twins target. A server the plan
// drops as invalid leaves the candidates too.
func TestPlanTwinsValidate(t *testing.T) {
	inv := loadInventory(t, testInventory)
	long := "pg-test-" + strings.Repeat("x", 119) // 127 characters
	st := state("pg-test", "pg-test-1", "pg-test-1:primary", "pg-test-2:replica", "pg-test-3:replica", long+":replica")
	st.Members[long].Host = "10.10.10.14"
	pc, err := ComputeCluster(inv.File, inv.Clusters[0], st, true, ClusterOptions{IncludeUnknown: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range pc.Services {
		if hasServer(s.Servers, long) == s.RoleDependent || hasServer(s.Candidates, long) {
			t.Errorf("%s (role-dependent %v): %s planned %v, a candidate %v", s.Name, s.RoleDependent, long,
				hasServer(s.Servers, long), hasServer(s.Candidates, long))
		}
	}
	laid, err := services.Twins(pc.Services)
	if err != nil {
		t.Fatal(err)
	}
	if err := services.Validate(laid); err != nil {
		t.Fatalf("the twin layout of the plan does not validate: %v", err)
	}
	var warned []string
	for _, w := range pc.Warnings {
		if strings.Contains(w, long) && strings.Contains(w, "backup twin") {
			warned = append(warned, w)
		}
	}
	if len(warned) != 1 {
		t.Errorf("warnings about its twin name: %q, want one", warned)
	}

	// A server dropped as invalid leaves the candidates too.
	bad := services.Service{Cluster: "c", Name: "c-replica", IP: "*", Port: 5434, Check: "/read-only", RoleDependent: true}
	for i := 1; i <= 3; i++ {
		sv := services.Server{Name: fmt.Sprintf("c-%d", i), Address: "10.0.0.1", Port: 5432, CheckPort: 8008, Weight: 100}
		if i == 2 {
			sv.Port = 0
		}
		bad.Servers = append(bad.Servers, sv)
		bad.Candidates = append(bad.Candidates, sv)
	}
	svcs, _ := dropInvalidServers([]services.Service{bad})
	if hasServer(svcs[0].Servers, "c-2") || hasServer(svcs[0].Candidates, "c-2") || len(svcs[0].Candidates) != 2 {
		t.Errorf("after the drop: servers %+v, candidates %+v; want c-2 out of both", svcs[0].Servers, svcs[0].Candidates)
	}
	laid, err = services.Twins(svcs)
	if err != nil || services.Validate(laid) != nil {
		t.Errorf("twin layout after the drop: %v, %v", err, services.Validate(laid))
	}
}

func hasServer(list []services.Server, name string) bool {
	for _, sv := range list {
		if sv.Name == name {
			return true
		}
	}
	return false
}

// TestTwinNameSameAsBuilt: twinName's fast path (a valid member name short
// enough) answers as the check of the built twin name does.
func TestTwinNameSameAsBuilt(t *testing.T) {
	long := strings.Repeat("m", haproxyname.MaxIdentifier)
	for _, name := range []string{"pg-test-1", "", "a b", "é", long, long[:haproxyname.MaxIdentifier-len(services.BackupTwinSuffix)],
		long[:haproxyname.MaxIdentifier-len(services.BackupTwinSuffix)+1]} {
		got, want := twinName(name), haproxyname.Identifier(name+services.BackupTwinSuffix)
		if (got == nil) != (want == nil) {
			t.Errorf("twinName(%q) = %v, the built name's check %v", name, got, want)
		}
	}
}

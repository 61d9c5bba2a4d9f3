package placement

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

func TestParseGroups(t *testing.T) {
	g, err := ParseGroups([]byte(`
all:
  hosts:
    10.0.0.1: {}
    10.0.0.9: {}
  children:
    lb: &lb
      hosts: { 10.0.0.2: {}, 10.0.0.3: {} }
    dc1:
      children:
        lb2: { hosts: { 10.0.0.4: {} } }
        db: { hosts: { 10.0.0.5: {}, 10.0.0.2: {} } }
    lb2:
      hosts: { 10.0.0.6: {} }
    alias: *lb
    empty:
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Groups{
		"all":       {"10.0.0.1", "10.0.0.9", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.6", "10.0.0.5"},
		"lb":        {"10.0.0.2", "10.0.0.3"},
		"dc1":       {"10.0.0.4", "10.0.0.6", "10.0.0.5", "10.0.0.2"}, // lb2 is one group, wherever it is named
		"lb2":       {"10.0.0.4", "10.0.0.6"},                         // named twice: the union
		"db":        {"10.0.0.5", "10.0.0.2"},
		"alias":     {"10.0.0.2", "10.0.0.3"},
		"empty":     nil,
		"ungrouped": {"10.0.0.1", "10.0.0.9"},
	}
	if !reflect.DeepEqual(g, want) {
		t.Errorf("groups:\n got %v\nwant %v", g, want)
	}
	for _, bad := range []string{"", "foo: {}", "all: [unclosed"} {
		if _, err := ParseGroups([]byte(bad)); err == nil {
			t.Errorf("ParseGroups(%q): no error", bad)
		}
	}
}

func TestPlace(t *testing.T) {
	groups := Groups{"proxy": {"10.0.0.18", "10.0.0.19"}, "empty": nil, "all": {"x"}}
	own := func(name string, hosts ...string) Cluster {
		c := Cluster{Name: name}
		for i, h := range hosts {
			c.Members = append(c.Members, Member{Host: h, Primary: i == 0})
		}
		return c
	}
	delegated := func(name, provider string, hosts ...string) Cluster {
		c := own(name, hosts...)
		for i := range c.Members {
			c.Members[i].Provider = provider
		}
		return c
	}
	noPrimary := delegated("pg-standby", "proxy", "10.0.0.30")
	noPrimary.Members[0].Primary = false
	tests := []struct {
		name     string
		clusters []Cluster
		want     []Node
		warning  string
	}{
		{"own members", []Cluster{own("pg-test", "10.0.0.11", "10.0.0.12"), own("pg-meta", "10.0.0.10")},
			[]Node{{"10.0.0.11", []string{"pg-test"}}, {"10.0.0.12", []string{"pg-test"}}, {"10.0.0.10", []string{"pg-meta"}}}, ""},
		{"provider group carrying two clusters", []Cluster{own("pg-meta", "10.0.0.10"), delegated("pg-v12", "proxy", "10.0.0.12"), delegated("pg-v13", "proxy", "10.0.0.13", "10.0.0.14")},
			[]Node{{"10.0.0.10", []string{"pg-meta"}}, {"10.0.0.18", []string{"pg-v12", "pg-v13"}}, {"10.0.0.19", []string{"pg-v12", "pg-v13"}}}, ""},
		{"a member that is also a provider node", []Cluster{own("pg-meta", "10.0.0.18"), delegated("pg-v12", "proxy", "10.0.0.12")},
			[]Node{{"10.0.0.18", []string{"pg-meta", "pg-v12"}}, {"10.0.0.19", []string{"pg-v12"}}}, ""},
		{"provider that is not a group stays local", []Cluster{delegated("pg-x", "prxy", "10.0.0.21", "10.0.0.22")},
			[]Node{{"10.0.0.21", []string{"pg-x"}}, {"10.0.0.22", []string{"pg-x"}}}, `cluster pg-x: pg_service_provider "prxy" is not an inventory group`},
		{"empty provider group: nowhere", []Cluster{delegated("pg-y", "empty", "10.0.0.23")}, nil, "cluster pg-y: its services are on no HAProxy"},
		{"no inventory primary: nowhere", []Cluster{noPrimary}, nil, "cluster pg-standby: its services are on no HAProxy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Place(tc.clusters, groups)
			if !reflect.DeepEqual(r.Nodes, tc.want) {
				t.Errorf("nodes:\n got %v\nwant %v", r.Nodes, tc.want)
			}
			switch {
			case tc.warning == "" && len(r.Warnings) > 0:
				t.Errorf("unexpected warnings %q", r.Warnings)
			case tc.warning != "" && (len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], tc.warning)):
				t.Errorf("warnings %q, want one containing %q", r.Warnings, tc.warning)
			}
		})
	}
}

func load(t *testing.T, path string) (Result, map[string][]services.Service) {
	t.Helper()
	inv, err := topology.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ForInventory(inv)
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Compute(inv, nil, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	by := map[string][]services.Service{}
	for _, c := range p.Clusters {
		by[c.Name] = c.Services
	}
	return r, by
}

// TestSimuShape: the layout of Pigsty's conf/ha/simu.yml. Clusters on their
// own nodes reuse 5433-5438 without colliding; the proxy group carries both
// delegated clusters; nodes of delegating clusters carry nothing.
func TestSimuShape(t *testing.T) {
	r, by := load(t, "testdata/ha-simu.yml")
	want := []Node{
		{"10.10.10.10", []string{"pg-meta"}}, {"10.10.10.11", []string{"pg-meta"}},
		{"10.10.10.18", []string{"pg-v12", "pg-v13"}}, {"10.10.10.19", []string{"pg-v12", "pg-v13"}},
		{"10.10.10.41", []string{"pg-test"}}, {"10.10.10.42", []string{"pg-test"}}, {"10.10.10.43", []string{"pg-test"}},
		{"10.10.10.45", []string{"pg-src"}}, {"10.10.10.46", []string{"pg-src"}},
	}
	if !reflect.DeepEqual(r.Nodes, want) {
		t.Errorf("nodes:\n got %v\nwant %v", r.Nodes, want)
	}
	if len(r.Warnings) != 0 {
		t.Errorf("warnings: %q", r.Warnings)
	}
	if err := Check(r, by); err != nil {
		t.Errorf("Check: %v", err)
	}
}

// TestSharedNodeClash: clusters placed on the same node still collide, and
// the error names the node and both clusters.
func TestSharedNodeClash(t *testing.T) {
	r, by := load(t, "testdata/shared-node-clash.yml")
	err := Check(r, by)
	if err == nil {
		t.Fatal("Check: no error")
	}
	for _, want := range []string{
		"host 10.10.10.10 carries clusters pg-meta and pg-v12: service pg-meta-primary binds *:5433 and service pg-v12-primary binds *:5433",
		"host 10.10.10.11 carries clusters pg-meta and pg-v12",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\nlacks %q", err, want)
		}
	}
	// Different addresses on the same port do not collide.
	for i := range by["pg-v12"] {
		by["pg-v12"][i].IP = "10.10.10.2"
	}
	for i := range by["pg-meta"] {
		by["pg-meta"][i].IP = "10.10.10.3"
	}
	if err := Check(r, by); err != nil {
		t.Errorf("distinct bind addresses: %v", err)
	}
}

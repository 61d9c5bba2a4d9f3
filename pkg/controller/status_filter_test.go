package controller

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

const twoClusterInventory = `
all:
  children:
    pg-a:
      hosts:
        127.0.0.11: { pg_seq: 1, pg_role: primary }
        127.0.0.12: { pg_seq: 2, pg_role: replica }
      vars: { pg_cluster: pg-a }
    pg-ab:
      hosts:
        127.0.0.21: { pg_seq: 1, pg_role: primary }
        127.0.0.22: { pg_seq: 2, pg_role: replica }
      vars: { pg_cluster: pg-ab }
`

// twoClusterDCS is the DCS view of pg-a and pg-ab, each led by its member 1.
func twoClusterDCS(rev int64) patroni.Snapshot {
	snap := patroni.Snapshot{Namespace: "/pg", Revision: rev, At: time.Now(), Clusters: map[string]*patroni.ClusterState{}}
	for _, cl := range []struct{ name, net string }{{"pg-a", "1"}, {"pg-ab", "2"}} {
		cs := &patroni.ClusterState{Scope: cl.name, Leader: cl.name + "-1", Members: map[string]*patroni.Member{}, Revision: rev}
		for _, seq := range []string{"1", "2"} {
			role := patroni.RoleReplica
			if seq == "1" {
				role = patroni.RolePrimary
			}
			x := int64(100)
			name := cl.name + "-" + seq
			cs.Members[name] = &patroni.Member{Name: name, Host: "127.0.0." + cl.net + seq, Port: 5432, APIPort: 8008, Role: role,
				RawRole: role, State: "running", Timeline: 1, XLogLocation: &x}
		}
		snap.Clusters[cl.name] = cs
	}
	return snap
}

// changeTarget is fakeTarget reporting each apply's changes: one per
// backend of desired, as a real target's first apply does.
type changeTarget struct{ fakeTarget }

func (f *changeTarget) Apply(ctx context.Context, d []services.Service) (target.Result, error) {
	res, err := f.fakeTarget.Apply(ctx, d)
	for _, s := range d {
		res.Changes = append(res.Changes, target.Change{Kind: target.KindCreateService, Backend: s.Name})
	}
	return res, err
}

// TestStatusOfOneCluster: /status?cluster=NAME holds that cluster only and
// the history about it (an apply's changes cut to its backends, not those
// of pg-a, whose name pg-ab's backends start with); an unknown name is a
// 404 naming it; without the parameter the whole document is served.
func TestStatusOfOneCluster(t *testing.T) {
	inv, err := topology.Parse("two.yml", []byte(twoClusterInventory))
	if err != nil {
		t.Fatal(err)
	}
	c := New(inv, []target.Target{&changeTarget{}}, Options{})
	c.SetHealth("/pg", func() patroni.WatchStatus { return patroni.WatchStatus{Connected: true, LastContact: time.Now()} })
	c.Observe(twoClusterDCS(10))
	step(c, false)
	srv := httptest.NewServer(c.Handler(nil))
	defer srv.Close()
	get := func(query string) (int, Status, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/status" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var st Status
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(body, &st); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
		}
		return resp.StatusCode, st, string(body)
	}

	code, whole, _ := get("")
	if code != http.StatusOK || len(whole.Clusters) != 2 {
		t.Fatalf("/status: %d, %d clusters; want 200 and 2", code, len(whole.Clusters))
	}
	backendsIn := func(st Status) map[string]bool {
		out := map[string]bool{}
		for _, ev := range st.History {
			for _, ch := range ev.Changes {
				out[ch.Backend] = true
			}
		}
		return out
	}
	if all := backendsIn(whole); !all["pg-a-primary"] || !all["pg-ab-primary"] {
		t.Fatalf("the whole history's changes are %v: want both clusters' backends", all)
	}

	for _, q := range []string{"?cluster=pg-ab", "?cluster=pg-ab,", "?cluster=%20pg-ab"} {
		code, one, body := get(q)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", q, code, body)
		}
		if len(one.Clusters) != 1 || one.Clusters[0].Name != "pg-ab" {
			t.Fatalf("%s: clusters %v, want pg-ab alone", q, one.Clusters)
		}
		got := backendsIn(one)
		if len(got) == 0 {
			t.Fatalf("%s: no history about pg-ab: %+v", q, one.History)
		}
		for b := range got {
			if !strings.HasPrefix(b, "pg-ab-") {
				t.Errorf("%s: history has a change to %s, not pg-ab's", q, b)
			}
		}
		for _, ev := range one.History {
			if ev.Cluster != "" && ev.Cluster != "pg-ab" {
				t.Errorf("%s: history has an event about %s", q, ev.Cluster)
			}
		}
		if len(one.Targets) != len(whole.Targets) || one.Ready != whole.Ready {
			t.Errorf("%s: targets/readiness %d/%v, want the whole controller's %d/%v", q, len(one.Targets), one.Ready, len(whole.Targets), whole.Ready)
		}
	}

	// pg-a's backends are a prefix of pg-ab's names: none of pg-ab's may
	// come with it.
	code, a, body := get("?cluster=pg-a")
	if code != http.StatusOK || len(a.Clusters) != 1 || a.Clusters[0].Name != "pg-a" {
		t.Fatalf("?cluster=pg-a: %d %s", code, body)
	}
	gotA := backendsIn(a)
	if !gotA["pg-a-primary"] {
		t.Errorf("?cluster=pg-a: history's changes %v lack pg-a-primary", gotA)
	}
	for b := range gotA {
		if strings.HasPrefix(b, "pg-ab-") {
			t.Errorf("?cluster=pg-a: history has pg-ab's change to %s", b)
		}
	}

	code, two, _ := get("?cluster=pg-a&cluster=pg-ab")
	if code != http.StatusOK || len(two.Clusters) != 2 {
		t.Fatalf("two clusters: %d, %d clusters", code, len(two.Clusters))
	}

	code, _, body = get("?cluster=pg-ab,pg-zz,pg-yy")
	if code != http.StatusNotFound || !strings.Contains(body, "no cluster pg-yy, pg-zz in the plan") {
		t.Fatalf("unknown clusters: %d %s; want 404 naming pg-yy, pg-zz", code, body)
	}
}

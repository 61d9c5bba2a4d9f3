package haproxy

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// offlineCluster is what the twin layout hands the driver for a cluster
// whose offline service tracks the replica service (services.CanTrackReplicas):
// the replica service's twins (normal twins checked, active on replicas;
// backup twins flipped, active on the primary) and the offline service's
// twins (normal twins inactive: it selects nobody; backup twins tracking
// the replica service's normal twin of their member, never disabled).
// Offline connections go to dest's port of each member (see holder).
func offlineCluster(replicaPort, offlinePort int, dest map[*member]int, ms ...*member) []services.Service {
	repl := services.Service{Cluster: "pg-o", Name: "pg-o-replica", Service: "replica", IP: frontIP, Port: replicaPort, Check: "/read-only",
		Balance: "roundrobin", Maxconn: 500, DefaultServer: testDefaultServer, Layout: services.LayoutTwins}
	off := services.Service{Cluster: "pg-o", Name: "pg-o-offline", Service: "offline", IP: frontIP, Port: offlinePort, Check: "/replica",
		Balance: "roundrobin", Maxconn: 500, DefaultServer: testDefaultServer, Layout: services.LayoutTwins}
	for _, m := range ms {
		isPrimary := m.role.Load() == "primary"
		n := m.server(100, false)
		n.Member, n.Disabled = m.name, isPrimary
		b := m.server(100, true)
		b.Name, b.Member, b.Disabled = m.name+services.BackupTwinSuffix, m.name, !isPrimary
		repl.Servers = append(repl.Servers, n, b)
		on := m.server(100, false)
		on.Member, on.Disabled, on.Port = m.name, true, dest[m]
		ob := m.server(100, true)
		ob.Port = dest[m]
		ob.Name, ob.Member, ob.CheckPort, ob.Track = m.name+services.BackupTwinSuffix, m.name, 0, "pg-o-replica/"+m.name
		off.Servers = append(off.Servers, on, ob)
	}
	return []services.Service{repl, off}
}

// TestTwinsTrackOfflineDirect (real HAProxy): the offline service's backup
// twins tracking the replica service's normal twins take their drain and
// maint with their health: a switchover flips the replica service only,
// and the offline backup twin of the new primary is drained with its
// replica twin (a session through it kept), the old primary's comes back
// with its replica twin; a reload keeps them in step; nothing is flipped
// in the offline backend, ever.
func TestTwinsTrackOfflineDirect(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m1 := newMember(t, "pg-o-1", "127.0.0.81", "primary")
	m2 := newMember(t, "pg-o-2", "127.0.0.82", "replica")
	m3 := newMember(t, "pg-o-3", "127.0.0.83", "replica")
	rp, op := freePort(t, frontIP), freePort(t, frontIP)
	dest, closed := map[*member]int{}, map[*member]chan struct{}{}
	for _, m := range []*member{m1, m2, m3} {
		dest[m], closed[m] = holder(t, m.ip)
	}
	offAdmins := func() map[string]string { return r.admins(t, "pg-o-offline") }
	wantOff := func(step string, want map[string]string) {
		t.Helper()
		got := offAdmins()
		for k, w := range want {
			if got[k] != w {
				t.Errorf("%s: admin state of pg-o-offline/%s = %q, want %q (all: %v)", step, k, got[k], w, got)
			}
		}
	}
	noOffline := func(step string, changes []target.Change) {
		t.Helper()
		for _, c := range changes {
			if c.Backend == "pg-o-offline" {
				t.Errorf("%s: a change in the offline backend: %s %s/%s %s", step, c.Kind, c.Backend, c.Server, c.Detail)
			}
		}
	}

	res, err := r.direct.Apply(ctx, offlineCluster(rp, op, dest, m1, m2, m3))
	if err != nil || !res.Reloaded {
		t.Fatalf("initial apply: %+v %v, want a reload", res, err)
	}
	cfg, _ := os.ReadFile(r.opts.ConfigPath)
	if !strings.Contains(string(cfg), fmt.Sprintf("server pg-o-2.backup 127.0.0.82:%d track pg-o-replica/pg-o-2 weight 100 backup\n", dest[m2])) {
		t.Fatalf("file lacks the offline tracker:\n%s", cfg)
	}
	// The primary's offline twin takes its replica twin's maint (the
	// file's disabled), the replicas' are ready and UP with theirs.
	wantOff("start", map[string]string{"pg-o-1.backup": "maint", "pg-o-2.backup": "ready", "pg-o-3.backup": "ready"})
	r.waitStatus(t, map[string]bool{"pg-o-offline/pg-o-2.backup": true, "pg-o-offline/pg-o-3.backup": true})
	if again, err := r.direct.Apply(ctx, offlineCluster(rp, op, dest, m1, m2, m3)); err != nil || len(again.Changes) != 0 {
		t.Fatalf("second apply = %+v, %v; want nothing to do", again, err)
	}

	// A session through the offline service (to pg-o-2 or pg-o-3, the
	// backups that are up), held open.
	c, err := net.Dial("tcp", addr(frontIP, op))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var via string
	eventually(t, 5*time.Second, "the offline session on a replica's twin", func() string {
		st := r.stat(t)
		for _, m := range []*member{m2, m3} {
			if st["pg-o-offline/"+m.name+".backup"].CurrentSessions == 1 {
				via = m.name
				return ""
			}
		}
		return fmt.Sprintf("no session on pg-o-2.backup nor pg-o-3.backup: %+v", st["pg-o-offline/BACKEND"])
	})
	newPrimary, other := m2, m3
	if via == m3.name {
		newPrimary, other = m3, m2
	}

	// Switchover to the member the session is on: runtime flips of the
	// replica service only.
	reloads := r.reloads(t)
	m1.setRole("replica")
	newPrimary.setRole("primary")
	res, err = r.direct.Apply(ctx, offlineCluster(rp, op, dest, m1, m2, m3))
	if err != nil {
		t.Fatal(err)
	}
	if res.Reloaded || !target.RuntimeOnly(res.Changes) || r.reloads(t) != reloads {
		t.Errorf("switchover: %+v, want runtime changes only", res)
	}
	noOffline("switchover", res.Changes)
	wantOff("switchover", map[string]string{"pg-o-1.backup": "ready", newPrimary.name + ".backup": "drain", other.name + ".backup": "ready"})
	r.waitStatus(t, map[string]bool{"pg-o-offline/pg-o-1.backup": true})
	// Drained, not cut: the session on the new primary's offline twin
	// lives on, and new offline connections avoid it.
	key := "pg-o-offline/" + newPrimary.name + ".backup"
	before := r.stat(t)[key].TotalSessions
	for i := 0; i < 20; i++ {
		cc, err := net.Dial("tcp", addr(frontIP, op))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cc.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		cc.Close()
	}
	eventually(t, 5*time.Second, "20 offline connections", func() string {
		st := r.stat(t)
		n := st["pg-o-offline/pg-o-1.backup"].TotalSessions + st["pg-o-offline/"+other.name+".backup"].TotalSessions
		if n < 20 {
			return fmt.Sprintf("%d on the replicas' twins", n)
		}
		return ""
	})
	st := r.stat(t)
	if got := st[key].TotalSessions - before; got != 0 {
		t.Errorf("the new primary's offline twin took %d new connections after the switchover", got)
	}
	if got := st[key].CurrentSessions; got != 1 {
		t.Errorf("the session through the drained offline twin: %d current sessions there, want 1 (kept)", got)
	}
	select {
	case <-closed[newPrimary]:
		t.Error("the offline session to the new primary was closed by the switchover")
	default:
	}

	// A reload for an inventory change (maxconn): the trackers come back
	// in step with the replica twins they track, and nothing is left to do.
	next := offlineCluster(rp, op, dest, m1, m2, m3)
	next[0].Maxconn = 600
	res, err = r.direct.Apply(ctx, next)
	if err != nil || !res.Reloaded {
		t.Fatalf("inventory change: %+v %v, want a reload", res, err)
	}
	noOffline("reload", res.Changes)
	inactive := offAdmins()[newPrimary.name+".backup"]
	if inactive == "ready" {
		t.Errorf("after the reload the new primary's offline twin is ready (all: %v)", offAdmins())
	}
	wantOff("reload", map[string]string{"pg-o-1.backup": "ready", other.name + ".backup": "ready"})
	r.waitStatus(t, map[string]bool{"pg-o-offline/pg-o-1.backup": true, "pg-o-offline/" + other.name + ".backup": true})
	if again, err := r.direct.Apply(ctx, next); err != nil || len(again.Changes) != 0 {
		t.Fatalf("after the reload = %+v, %v; want nothing to do", again, err)
	}
}

package main

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/haproxy"
)

// The follow reads (stateRows: `show servers state` and the backup flags
// of a full read) find exactly the backends a full read finds not live,
// the same write fences and the same weights, on a real HAProxy whose
// servers go through random admin states, health and weights (disabled in
// the file, backup, ready, drain, maint, health down/up, weight 0).
func TestStateRowsSameAsFullRead(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("no haproxy binary")
	}
	dir, err := os.MkdirTemp("", "bsf") // UNIX socket paths are short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "stats.sock")
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global\n    stats socket %s mode 600 level admin\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n", sock)
	type srv struct{ backend, name string }
	var servers []srv
	backends := []string{"pg-a-primary", "pg-a-replica", "pg-b-replica"}
	for bi, b := range backends {
		fmt.Fprintf(&cfg, "backend %s\n", b)
		for m := 1; m <= 3; m++ {
			addr := fmt.Sprintf("127.90.%d.%d:6432", bi, m)
			fmt.Fprintf(&cfg, "    server m%d %s\n    server m%d.backup %s backup disabled\n", m, addr, m, addr)
			servers = append(servers, srv{b, fmt.Sprintf("m%d", m)}, srv{b, fmt.Sprintf("m%d.backup", m)})
		}
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := haproxy.StartProcess(ctx, bin, path, filepath.Join(dir, "master.sock"), filepath.Join(dir, "haproxy.pid"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	rt := &haproxy.Runtime{Socket: sock}
	rng := rand.New(rand.NewSource(1))
	full := func() []haproxy.StatRow {
		t.Helper()
		rows, err := rt.ShowStat(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if inactive, err = adminStates(ctx, rt); err != nil {
			t.Fatal(err)
		}
		return rows
	}
	backupOf := backupFlags(full())
	for step := 0; step < 200; step++ {
		s := servers[rng.Intn(len(servers))]
		cmd := fmt.Sprintf("set server %s/%s state %s", s.backend, s.name, []string{"ready", "drain", "maint"}[rng.Intn(3)])
		switch rng.Intn(6) {
		case 0:
			cmd = fmt.Sprintf("set server %s/%s weight %d", s.backend, s.name, rng.Intn(2)*100)
		case 1:
			cmd = fmt.Sprintf("set server %s/%s health %s", s.backend, s.name, []string{"down", "up"}[rng.Intn(2)])
		}
		if out, err := rt.Exec(ctx, cmd); err != nil || strings.TrimSpace(out) != "" {
			t.Fatalf("%s: %q %v", cmd, out, err)
		}
		rows := full()
		// want: what runs, with a random backend changed now and then.
		want := liveOf(rows, wanted{"pg-a-primary": nil, "pg-a-replica": nil, "pg-b-replica": nil})
		for _, b := range backends {
			if want[b] == nil {
				want[b] = map[string]bool{}
			}
		}
		if rng.Intn(2) == 0 {
			b := backends[rng.Intn(len(backends))]
			a := fmt.Sprintf("127.90.%d.%d:6432", rng.Intn(3), 1+rng.Intn(3))
			if _, ok := want[b][a]; ok && rng.Intn(2) == 0 {
				delete(want[b], a)
			} else {
				want[b][a] = rng.Intn(2) == 0
			}
		}
		fullBad, _ := mismatch(rows, want)
		fullWeights := weightsOf(rows)
		var fullFenced []bool
		for bi := range backends {
			for m := 1; m <= 3; m++ {
				fullFenced = append(fullFenced, fenced(rows, fmt.Sprintf("127.90.%d.%d", bi, m)))
			}
		}
		for _, names := range [][]string{nil, backends} {
			srows, adm, known, err := stateRows(ctx, rt, names, backupOf)
			if err != nil || !known {
				t.Fatalf("stateRows(%v): known %t, %v", names, known, err)
			}
			inactive = adm
			bad, _ := mismatch(srows, want)
			if !reflect.DeepEqual(bad, fullBad) {
				t.Fatalf("step %d (%s), names %v: follow read finds %v not live, full read %v", step, cmd, names, bad, fullBad)
			}
			if w := weightsOf(srows); !reflect.DeepEqual(w, fullWeights) {
				t.Fatalf("step %d (%s): weights %v, full read %v", step, cmd, w, fullWeights)
			}
			var f []bool
			for bi := range backends {
				for m := 1; m <= 3; m++ {
					f = append(f, fenced(srows, fmt.Sprintf("127.90.%d.%d", bi, m)))
				}
			}
			if !reflect.DeepEqual(f, fullFenced) {
				t.Fatalf("step %d (%s): fenced %v, full read %v", step, cmd, f, fullFenced)
			}
		}
	}
	// A server the full read did not see: not known, not guessed.
	delete(backupOf, "pg-a-replica/m2")
	if _, _, known, err := stateRows(ctx, rt, nil, backupOf); err != nil || known {
		t.Fatalf("unknown server: known %t, %v", known, err)
	}
}

// followPause keeps the base pace for per-backend reads, for a whole read
// before any progress, in the first followWarm and when little is left,
// and otherwise backs off to a quarter of the predicted rest, at most
// followMax.
func TestFollowPause(t *testing.T) {
	t0 := time.Unix(1000, 0)
	base := followShare * 150 * time.Millisecond
	for _, c := range []struct {
		name       string
		whole      bool
		first, bad int
		after      time.Duration
		want       time.Duration
	}{
		{"per backend", false, 4000, 300, 2 * time.Second, base},
		{"first whole read", true, 4000, 4000, 0, base},
		{"no progress yet", true, 4000, 4000, time.Second, base},
		// 1,000 a second, 2,000 left: 2 s predicted, a quarter of it.
		{"steady progress", true, 4000, 2000, 2 * time.Second, 500 * time.Millisecond},
		// 250 a second, 3,000 left: 12 s predicted, bounded.
		{"slow progress", true, 4000, 3000, 4 * time.Second, followMax},
		// A small first apply: 250 done in 0.4 s, 3,750 left; too early
		// to back off (a direct storm's big apply may come next).
		{"early progress", true, 4000, 3750, 400 * time.Millisecond, base},
		// 3,500 a second, 500 left: 0.14 s predicted, the base pace wins.
		{"nearly done", true, 4000, 500, time.Second, base},
	} {
		got := followPause(150*time.Millisecond, c.whole, c.first, c.bad, t0, t0.Add(c.after))
		if got != c.want {
			t.Errorf("%s: followPause = %v, want %v", c.name, got, c.want)
		}
	}
}

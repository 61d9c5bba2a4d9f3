package haproxy

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
)

// TestWriteConfigFromFile: the file writeConfig leaves is Render's, write
// after write, each copying the unchanged sections from the file before
// it; and so it is after an operator edited that file, or removed it.
func TestWriteConfigFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	d := NewDirect(Options{ConfigPath: path, StatsSocket: "/run/admin.sock"}, nil)
	a, moved := twinFleet(50, 1, 20000), twinFleet(50, 2, 20000)
	check := func(step string) {
		t.Helper()
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if want := haproxycfg.Render(a, d.renderOptions()); !bytes.Equal(got, want) {
			t.Fatalf("%s: the file differs from Render's (%d bytes, want %d)", step, len(got), len(want))
		}
	}
	if err := d.writeConfig(a); err != nil {
		t.Fatal(err)
	}
	check("first write")
	for i := 0; i < 20; i++ {
		a[i] = moved[i]
		switch i {
		case 5: // an operator's edit of a section the next write copies
			text, _ := os.ReadFile(path)
			text = bytes.Replace(text, []byte("pg-f30-"), []byte("pg-fXX-"), 1)
			if err := os.WriteFile(path, text, 0o644); err != nil {
				t.Fatal(err)
			}
		case 9:
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.writeConfig(a); err != nil {
			t.Fatal(err)
		}
		check("write " + string(rune('a'+i)))
	}
	if d.render.Hits < 20*40 {
		t.Errorf("%d sections copied from the file before: want most of them", d.render.Hits)
	}
}

// TestConfigFileMode: the config file is 0644 whichever writer installed
// it last: a reload's (reloadWith) and a runtime apply's (writeConfig).
// HAProxy runs as another user than the controller on many hosts, and its
// master reads the file again at every reload.
func TestConfigFileMode(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	m1 := newMember(t, "pg-t-1", "127.0.0.89", "primary")
	m2 := newMember(t, "pg-t-2", "127.0.0.90", "replica")
	pp, rp := freePort(t, frontIP), freePort(t, frontIP)
	mode := func(step string) {
		t.Helper()
		fi, err := os.Stat(r.opts.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o644 {
			t.Errorf("%s: %s has mode %v, want 0644", step, r.opts.ConfigPath, got)
		}
	}
	if res, err := r.direct.Apply(ctx, twinCluster(pp, rp, m1, m2)); err != nil || !res.Reloaded {
		t.Fatalf("first apply: %+v %v, want a reload", res, err)
	}
	mode("after a reload")
	m1.setRole("replica")
	m2.setRole("primary")
	if res, err := r.direct.Apply(ctx, twinCluster(pp, rp, m1, m2)); err != nil || res.Reloaded {
		t.Fatalf("switchover: %+v %v, want runtime changes", res, err)
	}
	mode("after a runtime apply")
}

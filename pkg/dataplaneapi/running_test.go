package dataplaneapi

import (
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

func TestRunningMismatch(t *testing.T) {
	one := int64(1)
	zero := int64(0)
	stat := func(typ, backend, name, addr string, bck *int64) nativeStat {
		s := nativeStat{Name: name, Type: typ, BackendName: backend}
		s.Stats.Addr, s.Stats.Bck = addr, bck
		return s
	}
	desired := []services.Service{{Name: "pg-x-replica", Servers: []services.Server{
		{Name: "pg-x-1", Address: "127.0.0.11", Port: 6432, Backup: false},
		{Name: "pg-x-2", Address: "127.0.0.12", Port: 6432, Backup: true},
	}}}
	running := []nativeStat{
		stat("frontend", "", "pg-x-replica", "", nil),
		stat("server", "pg-x-replica", "pg-x-1", "127.0.0.11:6432", &zero),
		stat("server", "pg-x-replica", "pg-x-2", "127.0.0.12:6432", &one),
	}
	if got := runningMismatch(running, desired); got != "" {
		t.Errorf("matching: %q", got)
	}
	stale := []nativeStat{
		stat("server", "pg-x-replica", "pg-x-1", "127.0.0.11:6432", &one),
		stat("server", "pg-x-replica", "pg-x-3", "127.0.0.13:6432", &zero),
	}
	got := runningMismatch(stale, desired)
	for _, want := range []string{"frontend pg-x-replica not running", "pg-x-replica/pg-x-1 runs with backup true, want false",
		"pg-x-replica/pg-x-2 not running", "pg-x-replica/pg-x-3 still running"} {
		if !strings.Contains(got, want) {
			t.Errorf("mismatch %q lacks %q", got, want)
		}
	}
	// A file that makes pg-x-2 a tracker, run by an HAProxy that has not
	// reloaded it yet; then one that has.
	desired[0].Servers[1].Track = "pg-x-primary/pg-x-2"
	if got := runningMismatch(running, desired); !strings.Contains(got, `pg-x-replica/pg-x-2 runs tracking "", want "pg-x-primary/pg-x-2"`) {
		t.Errorf("a tracker not running yet: %q", got)
	}
	running[2].Stats.Tracked = "pg-x-primary/pg-x-2"
	if got := runningMismatch(running, desired); got != "" {
		t.Errorf("the tracker running: %q", got)
	}
}

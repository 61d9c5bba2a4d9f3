package haproxy

import (
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// TestTrackersOutOfStep: a tracker is resynced only when it and the
// server it tracks are both ready and one is UP, the other DOWN; maint and
// drain (either side), a server that runs without that `track`, and a
// tracked server not running are left alone.
func TestTrackersOutOfStep(t *testing.T) {
	srv := func(name string, down bool, admin, track string) services.Server {
		return services.Server{Name: name, Down: down, Admin: admin, Track: track}
	}
	cur := map[string]*target.Backend{
		"p": {Name: "p", Servers: map[string]services.Server{
			"a": srv("a", false, "ready", ""), "b": srv("b", true, "ready", ""), "c": srv("c", false, "maint", ""),
			"d": srv("d", true, "ready", ""), "e": srv("e", false, "ready", ""), "f": srv("f", false, "ready", ""),
		}},
		"d": {Name: "d", Servers: map[string]services.Server{
			"a": srv("a", true, "ready", "p/a"),  // DOWN under UP: resync
			"b": srv("b", false, "ready", "p/b"), // UP under DOWN: resync
			"c": srv("c", true, "maint", "p/c"),  // the tracked one in maint
			"d": srv("d", true, "ready", "p/d"),  // in step
			"e": srv("e", true, "drain", "p/e"),  // drained itself
			"f": srv("f", true, "ready", ""),     // runs with a check of its own (an older file)
			"g": srv("g", false, "ready", "p/g"), // tracks a server not running
		}},
	}
	var desired services.Service
	desired.Name = "d"
	for _, n := range []string{"g", "f", "e", "d", "c", "b", "a", "h"} {
		desired.Servers = append(desired.Servers, services.Server{Name: n, Track: "p/" + n})
	}
	got := trackersOutOfStep(cur, []services.Service{{Name: "p"}, desired})
	var keys []string
	for _, c := range got {
		if c.Kind != target.KindResyncTracker || !c.Runtime {
			t.Errorf("%+v: want a runtime resync_tracker", c)
		}
		keys = append(keys, c.Backend+"/"+c.Server+": "+c.Detail[:strings.Index(c.Detail, ":")])
	}
	want := "d/a: DOWN while p/a is UP, d/b: UP while p/b is DOWN"
	if s := strings.Join(keys, ", "); s != want {
		t.Errorf("got %q, want %q", s, want)
	}
}

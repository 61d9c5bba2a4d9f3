package controller

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// TestStaleReasonSince: a stale namespace says since when (the last
// contact with etcd), and its reason, which is also its clusters' frozen
// reason, stays the same for the whole outage: it said "for 20s", then
// "for 50s", and every reconcile of the outage (the 30 s resync) logged
// each of its clusters frozen again. The watch's last error, which changes
// as the outage goes on, is in not_ready and last_error, not in the reason.
func TestStaleReasonSince(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now, ws := t0, patroni.WatchStatus{Connected: true, LastContact: t0}
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	set := func(d time.Duration, w patroni.WatchStatus) {
		mu.Lock()
		now, ws = t0.Add(d), w
		mu.Unlock()
	}
	c := New(loadInventory(t), []target.Target{&fakeTarget{}}, Options{Now: clock})
	c.SetHealth("/pg", func() patroni.WatchStatus { mu.Lock(); defer mu.Unlock(); return ws })
	s := state(10, "pg-test-1", 100, "pg-test-1", "pg-test-2", "pg-test-3")
	s.At = t0
	c.Observe(s)
	step(c, true)
	if r := frozenReason(c, "pg-test"); r != "" {
		t.Fatalf("fresh view frozen: %q", r)
	}
	since := "since " + t0.Format(time.RFC3339)

	for _, tc := range []struct {
		name   string
		w      patroni.WatchStatus
		prefix string
		errTxt string
	}{
		{"silent", patroni.WatchStatus{Connected: true, LastContact: t0}, "stale: no contact with etcd " + since, ""},
		{"unreachable", patroni.WatchStatus{Connected: false, LastContact: t0, LastError: "dial tcp: connection refused"},
			"stale: etcd unreachable " + since, "dial tcp: connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set(20*time.Second, tc.w)
			step(c, false)
			first := frozenReason(c, "pg-test")
			if !strings.HasPrefix(first, tc.prefix) {
				t.Fatalf("frozen %q, want it to start with %q", first, tc.prefix)
			}
			w := tc.w
			if w.LastError != "" {
				w.LastError = "context deadline exceeded"
			}
			set(50*time.Second, w)
			step(c, true)
			if r := frozenReason(c, "pg-test"); r != first {
				t.Fatalf("frozen reason moved during the outage: %q, then %q", first, r)
			}
			st := c.Status()
			var line string
			for _, r := range st.NotReady {
				if strings.HasPrefix(r, "/pg: ") {
					line = r
				}
			}
			if !strings.Contains(line, since) || (tc.errTxt != "" && !strings.Contains(line, "context deadline exceeded")) {
				t.Fatalf("not_ready %q: want the since and the last error", st.NotReady)
			}
			if st.DCS[0].Stale != first {
				t.Fatalf("dcs stale %q, want %q", st.DCS[0].Stale, first)
			}
		})
	}
}

package controller

import (
	"fmt"
	"math/rand"
	"reflect"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// TestOverlayRuntimeSameAsReference compares overlayRuntime with the
// map-based version it replaced (services and servers missing on either
// side, names twice).
func TestOverlayRuntimeSameAsReference(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	list := func() []services.Service {
		var out []services.Service
		for n := r.Intn(4); n > 0; n-- {
			s := services.Service{Name: fmt.Sprintf("s%d", r.Intn(3))}
			for m := r.Intn(4); m > 0; m-- {
				s.Servers = append(s.Servers, services.Server{Name: fmt.Sprintf("m%d", r.Intn(3)), Weight: r.Intn(3) * 50,
					Backup: r.Intn(2) == 0, ForceUp: r.Intn(3) == 0, ForceDown: r.Intn(3) == 0, HoldDown: r.Intn(3) == 0,
					Disabled: r.Intn(3) == 0, Reason: fmt.Sprint("r", r.Intn(9))})
			}
			out = append(out, s)
		}
		return out
	}
	for i := 0; i < 5000; i++ {
		prev, next := list(), list()
		if got, want := overlayRuntime(prev, next), referenceOverlayRuntime(prev, next); !reflect.DeepEqual(got, want) {
			t.Fatalf("case %d: overlayRuntime(%+v, %+v) = %+v, reference %+v", i, prev, next, got, want)
		}
	}
}

// TestHistoryKeepsLastEvents: status shows the last HistorySize events
// in order, however many were added.
func TestHistoryKeepsLastEvents(t *testing.T) {
	c := New(nil, nil, Options{HistorySize: 5})
	for n := 1; n <= 23; n++ {
		c.addEvent(Event{Kind: "x", Decision: int64(n), At: time.Unix(int64(n), 0)})
		c.mu.Lock()
		got := append([]Event(nil), c.lastEvents()...)
		c.mu.Unlock()
		first := max(1, n-4)
		if len(got) != n-first+1 || got[0].Decision != int64(first) || got[len(got)-1].Decision != int64(n) {
			t.Fatalf("after %d events: history %v..., want %d..%d", n, got, first, n)
		}
	}
}

func referenceOverlayRuntime(prev, next []services.Service) []services.Service {
	want := map[string]map[string]services.Server{}
	for _, s := range next {
		m := map[string]services.Server{}
		for _, sv := range s.Servers {
			m[sv.Name] = sv
		}
		want[s.Name] = m
	}
	out := make([]services.Service, len(prev))
	for i, s := range prev {
		servers := make([]services.Server, len(s.Servers))
		for j, sv := range s.Servers {
			if n, ok := want[s.Name][sv.Name]; ok {
				// Twins flip at runtime (Disabled): nothing to hold there.
				sv.Weight, sv.ForceUp, sv.ForceDown, sv.HoldDown, sv.Disabled, sv.Reason = n.Weight, n.ForceUp, n.ForceDown, n.HoldDown, n.Disabled, n.Reason
			}
			servers[j] = sv
		}
		s.Servers = servers
		out[i] = s
	}
	return out
}

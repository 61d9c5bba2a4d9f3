package target

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// diffAdmin compares the runtime admin state of the servers of a twin-layout
// service with the desired one. A server whose admin state the target did
// not read (Admin "") is not compared; an inactive twin in maint where drain
// is wanted (or the reverse) is inactive all the same and left alone. A
// tracking twin (Server.Track) is not compared either: it is never flipped,
// and the admin state read on it includes what it inherits from the server
// it tracks (an operator's drain or maint of that server, the Data Plane
// API driver's hold of a new leader), which no `set server` on it clears.
func diffAdmin(d services.Service, cur map[string]services.Server) []Change {
	var out []Change
	sorted, _ := byServerName(d.Servers)
	for _, w := range sorted {
		c, ok := cur[w.Name]
		if !ok || c.Admin == "" || w.Track != "" {
			continue
		}
		inactive := c.Admin == "drain" || c.Admin == "maint"
		if inactive == w.Disabled {
			continue
		}
		want := services.AdminWord(d, w)
		out = append(out, Change{Kind: KindSetState, Backend: d.Name, Server: w.Name,
			Detail: fmt.Sprintf("%s -> %s", c.Admin, want), Runtime: true})
	}
	return out
}

// StateOf is the admin state a set_state change sets ("ready", "drain", "maint").
func StateOf(c Change) string {
	if i := strings.LastIndex(c.Detail, "-> "); i >= 0 {
		return strings.Fields(c.Detail[i+3:])[0]
	}
	return ""
}

// OrderFlips returns changes with every set_state to "ready" first, then the
// other changes in their order, then the set_state to drain/maint: the
// incoming twin is up before the outgoing one goes down, so a backend never
// has zero active servers between two commands. Pure.
func OrderFlips(changes []Change) []Change {
	out := make([]Change, 0, len(changes))
	var downs []Change
	for _, c := range changes {
		if c.Kind == KindSetState && StateOf(c) == "ready" {
			out = append(out, c)
		}
	}
	for _, c := range changes {
		switch {
		case c.Kind != KindSetState:
			out = append(out, c)
		case StateOf(c) != "ready":
			downs = append(downs, c)
		}
	}
	return append(out, downs...)
}

// WithTwins wraps t so that it is given the services in the twin layout
// (services.Twins): role changes become runtime admin-state flips. It lays
// out again only the services that changed since its last call, relying on
// Target's contract that desired is never modified once handed over. Only
// targets that read back admin states (Server.Admin) and apply set_state
// changes support it (the direct driver).
func WithTwins(t Target) Target { return &twins{Target: t} }

// KindRepairState is how a twins target reports a set_state change that
// repaired drift: the server's desired admin state is the one the last
// successful apply set, so the running HAProxy changed under the
// controller (an operator's `set server`, a lost reload, a restarted
// HAProxy). Status history and pgsvc_applied_changes_total{kind} show it.
const KindRepairState = "repair_state"

type twins struct {
	Target
	// applied: backend -> its servers' Disabled as the last successful
	// apply left them (lastApplied, setApplied), every server ever
	// written kept, as a map by backend and server would.
	applied map[string][]twinState
	// prevIn and prevOut are the last layout's input (the caller's desired,
	// never modified: Target's contract) and result: a service Equal to
	// one of prevIn, whose tracked service (prevSrc, nil for none) is
	// Equal to its own, has prevOut's layout of it.
	prevIn, prevOut []services.Service
	prevSrc         []*services.Service
	// pending[i]: prevOut[i] was laid out since the last successful apply
	// (by this call or an earlier one, failed or a dry run): only those
	// can differ in applied (24,000 servers at 1,000 clusters were written
	// into applied per apply).
	pending []bool
	// settledAll: applied holds every server of an apply (the first).
	settledAll bool
}

// twinState is one server's Disabled as applied (twins.applied). A
// backend's list, not a map by backend and server: a twin service has a
// handful of servers, and an entry per server (a 32-byte key) was ~0.77
// MB at 1,000 clusters, the lists ~0.4 MB less.
type twinState struct {
	server   string
	disabled bool
}

// lastApplied is server's Disabled in backend as the last successful apply
// left it (ok false: none written).
func (t *twins) lastApplied(backend, server string) (disabled, ok bool) {
	for _, st := range t.applied[backend] {
		if st.server == server {
			return st.disabled, true
		}
	}
	return false, false
}

// setApplied writes the Disabled of servers (backend's) into applied, one
// after the other, as a map by backend and server would.
func (t *twins) setApplied(backend string, servers []services.Server) {
	list, had := t.applied[backend]
	if !had {
		list = make([]twinState, 0, len(servers))
	}
	for _, sv := range servers {
		i := 0
		for i < len(list) && list[i].server != sv.Name {
			i++
		}
		if i == len(list) {
			list = append(list, twinState{server: sv.Name})
		}
		list[i].disabled = sv.Disabled
	}
	t.applied[backend] = list
}

// layout is services.Twins(desired), laying out again only the services
// that changed since the last call: an apply among 1,000 clusters where one
// changed lays out one cluster, not 4,000 services (TestTwinsMemoIsTwins).
// It keeps nothing the caller and the target do not keep already. The
// result and its servers are shared between calls: never modified.
func (t *twins) layout(desired []services.Service) ([]services.Service, error) {
	var byName map[string]int // prevIn's index by name, built when the order changed
	var out []services.Service
	same := len(desired) == len(t.prevOut) && len(desired) > 0
	pending := make([]bool, len(desired))
	srcs := services.TrackSources(desired)
	for i := range desired {
		s := &desired[i]
		// prev: the index in prevIn of s's name (its last layout is
		// prevOut's), -1 for none; k: prev if s did not change, else -1.
		prev, k := -1, -1
		switch {
		case i < len(t.prevIn) && t.prevIn[i].Name == s.Name:
			prev = i
		case len(t.prevIn) > 0:
			if byName == nil {
				byName = make(map[string]int, len(t.prevIn))
				for j := range t.prevIn {
					byName[t.prevIn[j].Name] = j
				}
			}
			if j, ok := byName[s.Name]; ok {
				prev = j
			}
		}
		if prev >= 0 && services.Equal(&t.prevIn[prev], s) {
			k = prev
		}
		if k >= 0 && !sameSource(t.prevSrc[k], srcs[i]) {
			k = -1
		}
		var tw services.Service
		if k >= 0 {
			tw = t.prevOut[k]
			pending[i] = t.pending[k]
		} else {
			// (The strings its last layout has the same are shared with it:
			// a driver still holds that layout while it applies this one.)
			var last *services.Service
			if prev >= 0 {
				last = &t.prevOut[prev]
			}
			var err error
			if tw, err = services.LayOutAfter(desired[i], srcs[i], last); err != nil {
				return nil, err
			}
			pending[i] = true
		}
		if same && k != i {
			same = false
			out = make([]services.Service, i, len(desired))
			copy(out, t.prevOut[:i])
		}
		if !same {
			if out == nil {
				out = make([]services.Service, 0, len(desired))
			}
			out = append(out, tw)
		}
	}
	t.pending = pending
	t.prevSrc = srcs
	if same {
		t.prevIn = desired
		return t.prevOut, nil
	}
	if out == nil {
		out = []services.Service{} // as Twins: never nil
	}
	t.prevIn, t.prevOut = desired, out
	return out, nil
}

// sameSource reports whether two tracked services (nil: none) are Equal.
func sameSource(a, b *services.Service) bool {
	if a == nil || b == nil {
		return a == b
	}
	return services.Equal(a, b)
}

// BatchBursts is the wrapped target's (see Batcher).
func (t *twins) BatchBursts() bool { return BatchesBursts(t.Target) }

func (t *twins) Diff(ctx context.Context, desired []services.Service) ([]Change, error) {
	tw, err := t.layout(desired)
	if err != nil {
		return nil, err
	}
	return t.Target.Diff(ctx, tw)
}

func (t *twins) Apply(ctx context.Context, desired []services.Service) (Result, error) {
	tw, err := t.layout(desired)
	if err != nil {
		return Result{}, err
	}
	res, err := t.Target.Apply(ctx, tw)
	var byName map[string]*services.Service // built at the first set_state
	for i, c := range res.Changes {
		if c.Kind != KindSetState {
			continue
		}
		if byName == nil {
			byName = make(map[string]*services.Service, len(tw))
			for j := range tw {
				if tw[j].Layout == services.LayoutTwins {
					byName[tw[j].Name] = &tw[j]
				}
			}
		}
		s := byName[c.Backend]
		if s == nil {
			continue
		}
		for _, sv := range s.Servers {
			if sv.Name != c.Server {
				continue
			}
			if last, ok := t.lastApplied(c.Backend, c.Server); ok && last == sv.Disabled {
				res.Changes[i].Kind = KindRepairState
				res.Changes[i].Detail += " (repaired: the running HAProxy differed from the last apply)"
			}
			break
		}
	}
	if err == nil {
		if t.applied == nil {
			t.applied = map[string][]twinState{}
		}
		// A service not pending has the layout the last successful apply
		// gave it: its servers are in applied already. (With a name twice
		// an earlier pending one could overwrite a later settled one, but
		// every driver refuses such a desired: services.Validate.)
		for i, s := range tw {
			if s.Layout != services.LayoutTwins || t.settledAll && !t.pending[i] {
				continue
			}
			t.setApplied(s.Name, s.Servers)
		}
		t.settledAll = true
		clear(t.pending)
	}
	return res, err
}

// TrackedBy maps each server tracked by a twin of desired (services.Server.Track
// in a twin-layout service: a backup twin that is UP while its member is
// the primary) to the twin backends that track it ("backend/server" ->
// backends). Such a backend's incoming server is its tracker, which comes
// UP with the tracked server's force-up: targets send the backend's
// deactivations after the force-ups, so that it never has zero active
// servers (a 2-member cluster's replica service in a failover). Nil when
// there is none.
func TrackedBy(desired []services.Service) map[string][]string {
	var out map[string][]string
	for _, d := range desired {
		if d.Layout != services.LayoutTwins {
			continue
		}
		for _, sv := range d.Servers {
			if sv.Track == "" {
				continue
			}
			if out == nil {
				out = map[string][]string{}
			}
			if l := out[sv.Track]; len(l) == 0 || l[len(l)-1] != d.Name {
				out[sv.Track] = append(l, d.Name)
			}
		}
	}
	return out
}

// TrackingBackends names the backends of desired with a tracking twin
// (the values of TrackedBy).
func TrackingBackends(desired []services.Service) map[string]bool {
	out := map[string]bool{}
	for _, bs := range TrackedBy(desired) {
		for _, b := range bs {
			out[b] = true
		}
	}
	return out
}

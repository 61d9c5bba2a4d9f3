package dataplaneapi

import (
	"sort"
	"strings"
	"sync"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// The hold of a new leader through the API.
//
// Patroni answers /primary 200 before PostgreSQL is read-write, so a new
// leader is held DOWN in the write services until the controller sees it
// read-write (Server.HoldDown). The direct driver re-asserts `set server
// B/S health down`, which resets the check's rise count every time. The
// API cannot: its PUT handler (2.9.9, 3.2.0) sends `set server health
// down` only when the server is not DOWN already, and a new leader is most
// often DOWN (a replica whose /primary answered 503) with its checks now
// rising, so HAProxy's own checks raised it 2-7 s after /primary turned
// 200, read-write or not.
//
// So the API driver holds with the admin state: a held server is PUT
// {operational_state: down, admin_state: drain} (measured on both real
// binaries: a drained server takes no new load-balanced connection even
// once its checks have it UP; its checks keep running; the handler applies
// the operational state, then the admin state, and a PUT with one field
// leaves the other alone). The release, once desired no longer holds it,
// is one PUT {operational_state: up, admin_state: ready} when it is forced
// UP (the new primary), else {admin_state: ready}: its checks decide.
//
// Ownership: in a write service the controller owns `drain` on the server
// of the leader. It sets it while the leader is not read-write (held) and
// keeps it while that server is fenced (ForceDown); it lifts it once
// neither, on a server it drained itself (drained, this process) and, in
// the Pigsty layout, on the server of a leader Patroni reports running as
// primary (Server.Writable) whatever set it: a drain a crashed controller
// left behind (or an operator's) never keeps a read-write primary out of
// its write service. Each such server is read once per leadership
// (checked): one GET of its backend when this process starts, none after
// a promotion it saw (the force-up's answer tells). An operator takes a
// primary out of a write service with maint, which is left alone. In the
// twin layout the controller owns every admin state already: the held
// active twin is never flipped to ready; the hold's PUT drains it, and a
// twin `disabled` in the file stays in maint (measured on 2.9.9 and 3.2.0:
// `drain` does not take it out of the configuration's maint), which holds
// it as well (no traffic, no check). Released, the flip readies it; a twin
// readied DOWN (its health was forced DOWN) is forced UP by the flip's
// worker. A drain found on an active twin no longer held is readied by the
// twin flips. A drain survives a reload through the server-state file
// (measured), and the hold is re-asserted at every apply anyway.
type holdState struct {
	mu sync.Mutex
	// drained: "backend/server" this process drained for a hold and has
	// not released yet.
	drained map[string]bool
	// checked: "backend/server" of a Writable server whose admin state
	// was seen not drained (or released) in this process.
	checked map[string]bool
}

// holdAdmin is the admin state a held server is put in.
const holdAdmin = "drain"

// heldDetail is what a hold's force_down change says (status, history).
const heldDetail = "health DOWN, admin state drain: held (drain) until read-write: the new leader, not read-write yet"

// isHold reports whether c forces a held new leader DOWN (target.Diff
// marks it Held).
func isHold(c target.Change) bool {
	return c.Kind == target.KindForceDown && c.Held
}

func (h *holdState) setDrained(key string, on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if on {
		if h.drained == nil {
			h.drained = map[string]bool{}
		}
		h.drained[key] = true
		return
	}
	delete(h.drained, key)
}

func (h *holdState) isDrained(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.drained[key]
}

// seen marks a Writable server's admin state as known not drained.
func (h *holdState) seen(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.checked == nil {
		h.checked = map[string]bool{}
	}
	h.checked[key] = true
}

// toCheck returns the Writable servers of desired's Pigsty-layout write
// services whose admin state this process has not seen yet, by backend;
// it forgets a server desired names and no longer marks Writable (a new
// leadership is checked again). A server desired does not name keeps what
// was seen of it: an apply or a read may be given part of the fleet, and
// forgetting the rest made the next one read every write backend again
// (2,000 GETs in one switchover at 1,000 clusters).
func (h *holdState) toCheck(desired []services.Service) map[string][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out map[string][]string
	for _, d := range desired {
		if d.Layout != "" {
			continue
		}
		for _, sv := range d.Servers {
			k := d.Name + "/" + sv.Name
			if !sv.Writable || sv.ForceDown || sv.Disabled {
				delete(h.checked, k)
				continue
			}
			if sv.ForceUp {
				// Its force-up's own PUT answers its admin state and
				// readies a drain found there (forceHealth): no GET.
				// Reading here put 2,000 GETs before the force-ups of
				// a 1,000-cluster mass failover.
				continue
			}
			if h.checked[k] {
				continue
			}
			if out == nil {
				out = map[string][]string{}
			}
			out[d.Name] = append(out[d.Name], sv.Name)
		}
	}
	return out
}

// holdChanges adjusts Diff's changes for the hold (see holdState): a held
// server's set_state to ready (an active twin) is not made (the hold's PUT
// drains it), its force_down says so, and the drains to lift (this
// process's, and those found on a Writable server: found) are released by
// a set_state to ready, unless a force_up (which readies a server it
// drained) or a set_state to ready of the same server is there already.
// Only the drains of desired's backends are lifted: an apply may be given
// part of the fleet (the controller's bisection after a rejection, a
// cluster held back), and a held new leader of a cluster it leaves out is
// still held.
func (t *Target) holdChanges(changes []target.Change, desired []services.Service, found map[string]bool) []target.Change {
	held := map[string]bool{}
	fenced := map[string]bool{}
	named := make(map[string]bool, len(desired))
	for _, d := range desired {
		named[d.Name] = true
		for _, sv := range d.Servers {
			if sv.ForceDown && !sv.Disabled {
				fenced[d.Name+"/"+sv.Name] = true
				if sv.HoldDown {
					held[d.Name+"/"+sv.Name] = true
				}
			}
		}
	}
	covered := map[string]bool{}
	out := changes[:0]
	for _, c := range changes {
		k := c.Backend + "/" + c.Server
		switch {
		case c.Kind == target.KindSetState && held[k]:
			continue
		case isHold(c):
			c.Detail = heldDetail
		case c.Kind == target.KindForceUp, c.Kind == target.KindSetState && target.StateOf(c) == "ready":
			covered[k] = true
		}
		out = append(out, c)
	}
	t.hold.mu.Lock()
	var lift []string
	for k := range t.hold.drained {
		if b, _, _ := strings.Cut(k, "/"); named[b] && !fenced[k] && !covered[k] {
			lift = append(lift, k)
		}
	}
	t.hold.mu.Unlock()
	for k := range found {
		if !fenced[k] && !covered[k] && !t.hold.isDrained(k) {
			lift = append(lift, k)
		}
	}
	sort.Strings(lift)
	for _, k := range lift {
		b, s, _ := strings.Cut(k, "/")
		why := "released: the hold is over"
		if found[k] {
			why = "released: a drain found on the leader, read-write (the controller owns drain on a write service's leader)"
		}
		out = append(out, target.Change{Kind: target.KindSetState, Backend: b, Server: s,
			Detail: "drain -> ready (" + why + ")", Runtime: true})
	}
	return out
}

package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/pgsvc/pgsvc/pkg/haproxy"
)

// inactive lists backend/server names whose admin state (from `show
// servers state`) is maintenance or drain; show stat prints DOWN for a
// drained server whose check fails.
var inactive map[string]bool

// trackers lists the tracking twins of the twins layout that take traffic
// by health (backend/server: the replica service's backup twins, which
// track the primary service's servers and are never flipped; not the
// offline service's, which track flipped twins and take their admin
// state), trackerBackends their backends.
var trackers, trackerBackends map[string]bool

// allTrackers lists every tracking twin of the twins layout (backend/server),
// those of trackers and those tracking a flipped twin.
var allTrackers map[string]bool

// expectTrackers is set while a phase measures role changes made live
// (the switchover, the mass failover): a tracking twin is then expected
// active exactly where the plan has its member (the primary, as a
// backup), i.e. UP by its tracked server's health (the fake members'
// checks, or the controller's force-up of a new primary). Outside those
// phases nobody answers the checks of most members, so the primaries are
// DOWN by health: the backends with trackers are compared without their
// backup servers.
var expectTrackers bool

// active reports whether a server row takes traffic by admin state: not in
// maintenance and not draining (health does not matter: nobody listens).
// A tracking twin (trackers) takes traffic by health: UP.
func active(r haproxy.StatRow) bool {
	if inactive[r.Proxy+"/"+r.Name] {
		return false
	}
	if trackers[r.Proxy+"/"+r.Name] {
		return strings.HasPrefix(r.Status, "UP")
	}
	return !strings.HasPrefix(r.Status, "MAINT") && !strings.HasPrefix(r.Status, "DRAIN")
}

// withoutBackups drops the backup servers of m.
func withoutBackups(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		if !v {
			out[k] = v
		}
	}
	return out
}

// adminStates reads `show servers state` and returns the servers in
// maintenance or drain (srv_admin_state, printed in decimal: MAINT bits
// 0x01 0x02 0x20 0x40, DRAIN bits 0x08 0x10; see addAdmin for 0x04).
// backendReader.readAll reads them for a few backends.
func adminStates(ctx context.Context, rt *haproxy.Runtime) (map[string]bool, error) {
	text, err := rt.Exec(ctx, "show servers state")
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	addAdmin(out, text)
	return out, nil
}

// addAdmin adds the servers in maintenance or drain of one `show servers
// state` answer to out.
func addAdmin(out map[string]bool, text string) {
	for _, l := range strings.Split(text, "\n") {
		f := strings.Fields(l)
		if len(f) < 7 || strings.HasPrefix(l, "#") {
			continue
		}
		// 0x04 (CMAINT, `disabled` in the file the process started
		// from) stays set after `set server state ready`: show stat's
		// status says MAINT when it really is.
		if st, err := strconv.Atoi(f[6]); err == nil && inactiveAdmin(st) {
			out[f[1]+"/"+f[3]] = true
		}
	}
}

// inactiveAdmin reports whether a srv_admin_state takes the server out of
// traffic: what show stat prints as MAINT or DRAIN (measured on HAProxy
// 2.6: `disabled` in the file is 5, then ready 4, maint 5, drain 12; a
// weight of 0 leaves status UP and the state 0).
func inactiveAdmin(st int) bool { return st&0x7b != 0 }

// stateRows reads the servers of names (nil: of every backend) with `show
// servers state` only (one command for all, or one per backend over one
// pipelined connection: no `show stat`, whose 24,000 rows at 1,000 clusters
// took ~0.8 s, and whose `show stat <iid>` walks every proxy) and returns
// them as rows for mismatch, fenced and weightsOf, with the servers in
// maintenance or drain. The answer has each server's address, port, admin
// state, operational state and weight, which is all they look at, except
// the backup flag: no runtime command changes it, so it comes from the last full read
// (backupOf). ok is false when a server is not in backupOf (a reload
// brought it): only a full read can tell.
func stateRows(ctx context.Context, rt *haproxy.Runtime, names []string, backupOf map[string]bool) (rows []haproxy.StatRow, adm map[string]bool, ok bool, err error) {
	var texts []string
	if names == nil {
		t, err := rt.Exec(ctx, "show servers state")
		if err != nil {
			return nil, nil, false, err
		}
		texts = []string{t}
	} else {
		cmds := make([]string, len(names))
		for i, n := range names {
			cmds[i] = "show servers state " + n
		}
		if texts, err = rt.Pipeline(ctx, cmds); err != nil {
			return nil, nil, false, err
		}
	}
	adm = map[string]bool{}
	known := true
	for i, t := range texts {
		var bad error
		perr := haproxy.EachServerState(t, func(st haproxy.StateServer) bool {
			if names != nil && st.Backend != names[i] {
				bad = fmt.Errorf("show servers state %s answered for %s", names[i], st.Backend)
				return false
			}
			k := st.Backend + "/" + st.Server
			bk, ok := backupOf[k]
			if !ok {
				known = false
				return false
			}
			// show stat's status starts with DOWN exactly when the
			// server is stopped (srv_op_state 0) and not in maintenance
			// (MAINT, which active leaves out like the admin state).
			status := "UP"
			if st.OpState == 0 {
				status = "DOWN"
			}
			rows = append(rows, haproxy.StatRow{Proxy: st.Backend, Name: st.Server, Type: haproxy.TypeServer,
				Addr: st.Addr, Port: st.Port, Backup: bk, Weight: st.UWeight, Status: status})
			if inactiveAdmin(st.AdminSt) {
				adm[k] = true
			}
			return true
		})
		if perr == nil {
			perr = bad
		}
		if perr != nil || !known {
			return nil, nil, false, perr
		}
	}
	return rows, adm, true, nil
}

// backupFlags returns backend/server -> backup of the server rows of a
// full `show stat` read.
func backupFlags(rows []haproxy.StatRow) map[string]bool {
	out := make(map[string]bool, len(rows))
	for _, r := range rows {
		if r.Type == haproxy.TypeServer {
			out[r.Proxy+"/"+r.Name] = r.Backup
		}
	}
	return out
}

// liveOf groups `show stat` server rows of the backends in w into the same
// shape as wanted.
func liveOf(rows []haproxy.StatRow, w wanted) wanted {
	got := wanted{}
	for _, r := range rows {
		if r.Type != haproxy.TypeServer {
			continue
		}
		if _, ok := w[r.Proxy]; !ok {
			continue
		}
		if !active(r) {
			continue
		}
		if got[r.Proxy] == nil {
			got[r.Proxy] = map[string]bool{}
		}
		k := r.Addr + ":" + strconv.Itoa(r.Port)
		if b, ok := got[r.Proxy][k]; ok && b != r.Backup {
			// A member's normal and backup twins both active (the
			// incoming up, the outgoing not down yet): the normal one
			// takes the traffic. Never what is wanted: not live yet.
			got[r.Proxy][k+" (normal and backup twins both active)"] = true
		}
		got[r.Proxy][k] = r.Backup
	}
	return got
}

// mismatch returns the backends of w whose active servers differ from
// what the running HAProxy shows (sorted), and one example for messages.
func mismatch(rows []haproxy.StatRow, w wanted) (bad []string, example string) {
	got := liveOf(rows, w)
	for name, want := range w {
		have := got[name]
		if len(ignore) > 0 {
			want, have = without(want, name), without(have, name)
		}
		if !expectTrackers && trackerBackends[name] {
			want, have = withoutBackups(want), withoutBackups(have)
		}
		if !sameSet(have, want) {
			bad = append(bad, name)
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		example = fmt.Sprintf("%s: want %s, running %s", bad[0], fmtSet(w[bad[0]]), fmtSet(got[bad[0]]))
	}
	return bad, example
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

func fmtSet(m map[string]bool) string {
	var out []string
	for k, b := range m {
		if b {
			k += "(backup)"
		}
		out = append(out, k)
	}
	sort.Strings(out)
	return "[" + strings.Join(out, " ") + "]"
}

// backendReader reads only the server rows of some backends: `show stat
// <iid> 4 -1`, one command each, cheap enough to poll every few ms at any
// fleet size. (By name, `show stat <name>` finds the frontend of the same
// name.) Proxy ids come from `show stat -1 2 -1` and are looked up again
// whenever an answer names another proxy (a reload renumbered them).
type backendReader struct {
	rt   *haproxy.Runtime
	iids map[string]string
}

func (br *backendReader) resolve(ctx context.Context) error {
	out, err := br.rt.Exec(ctx, "show stat -1 2 -1")
	if err != nil {
		return err
	}
	lines := strings.Split(out, "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "# ") {
		return fmt.Errorf("show stat: no header")
	}
	px, iid := -1, -1
	for i, c := range strings.Split(strings.TrimPrefix(lines[0], "# "), ",") {
		switch c {
		case "pxname":
			px = i
		case "iid":
			iid = i
		}
	}
	if px < 0 || iid < 0 {
		return fmt.Errorf("show stat: no pxname/iid columns")
	}
	br.iids = map[string]string{}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) > max(px, iid) {
			br.iids[f[px]] = f[iid]
		}
	}
	return nil
}

// readAll reads the server rows of names and their servers in maintenance
// or drain (as adminStates) over one pipelined connection: a few backends
// cost ~1 ms, so a switchover can be followed every few ms without the
// reads themselves (8 connections took 10-20 ms under load) delaying when
// it is seen live.
func (br *backendReader) readAll(ctx context.Context, names []string) ([]haproxy.StatRow, map[string]bool, error) {
	return br.readWith(ctx, names, true)
}

func (br *backendReader) readWith(ctx context.Context, names []string, admin bool) ([]haproxy.StatRow, map[string]bool, error) {
	if br.iids == nil {
		if err := br.resolve(ctx); err != nil {
			return nil, nil, err
		}
	}
	cmds := make([]string, 0, 2*len(names))
	for _, n := range names {
		id, ok := br.iids[n]
		if !ok {
			br.iids = nil
			return nil, nil, fmt.Errorf("backend %s not in the running HAProxy", n)
		}
		cmds = append(cmds, "show stat "+id+" 4 -1")
	}
	if admin {
		for _, n := range names {
			cmds = append(cmds, "show servers state "+n)
		}
	}
	outs, err := br.rt.Pipeline(ctx, cmds)
	if err != nil {
		return nil, nil, err
	}
	var rows []haproxy.StatRow
	for i, n := range names {
		r, err := haproxy.ParseStat(outs[i])
		if err != nil {
			return nil, nil, err
		}
		for _, row := range r {
			if row.Proxy != n {
				id := br.iids[n]
				br.iids = nil
				return nil, nil, fmt.Errorf("proxy id %s is now %s, not %s", id, row.Proxy, n)
			}
		}
		rows = append(rows, r...)
	}
	if !admin {
		return rows, nil, nil
	}
	adm := map[string]bool{}
	for _, text := range outs[len(names):] {
		addAdmin(adm, text)
	}
	return rows, adm, nil
}

func backendNames(w wanted) []string {
	out := make([]string, 0, len(w))
	for n := range w {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// weightsOf returns the user weight of every server of the given backends
// by address:port (the write fence sets it to 0 during a switchover).
func weightsOf(rows []haproxy.StatRow) map[string]int {
	m := map[string]int{}
	for _, r := range rows {
		if r.Type == haproxy.TypeServer && active(r) {
			m[r.Proxy+"/"+fmt.Sprintf("%s:%d", r.Addr, r.Port)] = r.Weight
		}
	}
	return m
}

// fenced reports whether the demoting primary at addr is DOWN in a write
// service (backend <cluster>-primary or -default) while active (not
// MAINT/DRAIN): the controller's write fence, a runtime forced DOWN.
func fenced(rows []haproxy.StatRow, addr string) bool {
	if addr == "" {
		return false
	}
	for _, r := range rows {
		if r.Type == haproxy.TypeServer && r.Addr == addr && active(r) && strings.HasPrefix(r.Status, "DOWN") &&
			(strings.HasSuffix(r.Proxy, "-primary") || strings.HasSuffix(r.Proxy, "-default")) {
			return true
		}
	}
	return false
}

// offWeights counts the active servers whose running weight differs from
// want (by backend/address:port) and names the first one.
func offWeights(rows []haproxy.StatRow, want map[string]int) (int, string) {
	n, first := 0, ""
	got := weightsOf(rows)
	for k, w := range got {
		if pw, ok := want[k]; ok && pw != w {
			n++
			if first == "" || k < first {
				first = k
			}
		}
	}
	if n == 0 {
		return 0, ""
	}
	return n, fmt.Sprintf("%s weight %d, plan %d", first, got[first], want[first])
}

// ignore lists backend/address:port entries left out of the comparison:
// with the twins layout, a crashed member (its key gone) in a service with
// twins, which the controller never activates before Patroni reports it
// running again (docs/twins.md) while Pigsty's plan keeps it.
var ignore map[string]bool

func without(m map[string]bool, backend string) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		if !ignore[backend+"/"+k] {
			out[k] = v
		}
	}
	return out
}

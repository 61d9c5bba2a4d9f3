package dataplaneapi_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// twinsHarness is a twin-layout Target on the API double with a clock.
type twinsHarness struct {
	srv *dpapitest.Server
	tg  *dataplaneapi.Target
	clk *clock
	ctx context.Context
}

func newTwinsHarness(t *testing.T, v int, opts ...dpapitest.Option) *twinsHarness {
	t.Helper()
	srv := dpapitest.NewServer(t, append([]dpapitest.Option{dpapitest.WithAPIVersion(v)}, opts...)...)
	c, err := dataplaneapi.New(srv.URL(), dataplaneapi.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	tg := dataplaneapi.NewTarget(c, zaptest.NewLogger(t), dataplaneapi.TargetOptions{
		ReloadPollInterval: 2 * time.Millisecond, ReloadTimeout: 5 * time.Second, Backoff: time.Millisecond,
		AdminReadEvery: time.Hour, FullReadEvery: 24 * time.Hour, Now: clk.Now})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return &twinsHarness{srv: srv, tg: tg, clk: clk, ctx: ctx}
}

func (h *twinsHarness) apply(t *testing.T, step string, desired []services.Service) target.Result {
	t.Helper()
	h.srv.ResetRequests()
	res, err := h.tg.Apply(h.ctx, desired)
	if err != nil {
		t.Fatalf("%s: %v", step, err)
	}
	return res
}

// force marks member of cluster forced in the write services of desired.
func force(desired []services.Service, member string, set func(sv *services.Server)) []services.Service {
	out := make([]services.Service, len(desired))
	for i, d := range desired {
		d.Servers = append([]services.Server(nil), d.Servers...)
		if services.WriteCheck(d.Check) {
			for j := range d.Servers {
				if d.Servers[j].Name == member {
					set(&d.Servers[j])
				}
			}
		}
		out[i] = d
	}
	return out
}

// forcedWrites lists the runtime PUTs of operational_state as
// "backend/server up|down".
func forcedWrites(reqs []dpapitest.Request) []string {
	var out []string
	for _, r := range reqs {
		if r.Method != "PUT" || !strings.HasPrefix(r.Path, "/runtime/servers/") {
			continue
		}
		for _, w := range []string{"up", "down"} {
			if strings.Contains(string(r.Body), `"operational_state":"`+w+`"`) {
				out = append(out, r.Query.Get("backend")+"/"+strings.TrimPrefix(r.Path, "/runtime/servers/")+" "+w)
			}
		}
	}
	return out
}

func kinds(changes []target.Change) string {
	var out []string
	for _, c := range changes {
		out = append(out, c.Kind+" "+c.Backend+"/"+c.Server)
	}
	return strings.Join(out, ", ")
}

// TestTwinsForcedHealthFromAnswers: in the twin layout the forced servers'
// health comes from the answers of the controller's own forced PUTs, not
// from a GET of their backends per apply (at 1,000 clusters that was 2,000
// GETs per apply of a mass failover), and what HAProxy's checks could have
// changed since is forced again:
//   - a fence is read first (DOWN by its own checks: nothing forced), and
//     once read DOWN or forced DOWN not read nor forced again while its
//     checks cannot have raised it ((rise-1) x fastinter = 2 s with Pigsty's options),
//     then forced DOWN again blind: a server its checks brought UP
//     meanwhile is caught;
//   - a held new leader is forced DOWN again once its last forced DOWN is
//     a quarter that old;
//   - a new primary is forced UP once per promotion: a later check failure
//     stands;
//   - a restarted HAProxy (new pid) makes every record void;
//   - Diff (the CLI's dry run) still reads instead of forcing.
func TestTwinsForcedHealthFromAnswers(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			h := newTwinsHarness(t, v)
			base := fleetChecked(t, 3, func(int) int { return 1 })
			h.apply(t, "create", base)
			h.apply(t, "settle", base)

			// A fence on a server its own checks have DOWN (a dead old
			// primary): read, nothing forced.
			h.srv.SetOperationalState("pg-f000-primary", "pg-f000-1", "down")
			h.srv.SetOperationalState("pg-f000-default", "pg-f000-1", "down")
			fenced := force(base, "pg-f000-1", func(sv *services.Server) { sv.ForceDown = true })
			res := h.apply(t, "fence, DOWN", fenced)
			if len(res.Changes) != 0 || runtimeGets(h.srv.Requests()) != 2 {
				t.Errorf("fence of a server DOWN: %s with %d runtime GETs, want nothing forced after reading its 2 backends", kinds(res.Changes), runtimeGets(h.srv.Requests()))
			}
			// Read DOWN counts as forced DOWN: not read again while its
			// checks cannot have raised it.
			h.clk.add(1900 * time.Millisecond)
			if res := h.apply(t, "fence, DOWN, 1.9 s", fenced); len(res.Changes) != 0 || len(h.srv.Requests()) != 2 {
				t.Errorf("fence read DOWN, within the bound: %s, %v; want nothing but version and pid", kinds(res.Changes), paths(h.srv.Requests()))
			}
			// Then read again (never forced by us: not forced blind).
			h.clk.add(100 * time.Millisecond)
			if res := h.apply(t, "fence, DOWN, 2 s", fenced); len(res.Changes) != 0 || runtimeGets(h.srv.Requests()) != 2 || len(forcedWrites(h.srv.Requests())) != 0 {
				t.Errorf("fence read DOWN, after the bound: %s, %v; want its 2 backends read, nothing forced", kinds(res.Changes), paths(h.srv.Requests()))
			}
			// UP once that read is over: read, and forced DOWN.
			h.clk.add(2 * time.Second)
			h.srv.SetOperationalState("pg-f000-primary", "pg-f000-1", "up")
			h.srv.SetOperationalState("pg-f000-default", "pg-f000-1", "up")
			res = h.apply(t, "fence", fenced)
			reqs := h.srv.Requests()
			if got := strings.Join(forcedWrites(reqs), ", "); got != "pg-f000-default/pg-f000-1 down, pg-f000-primary/pg-f000-1 down" &&
				got != "pg-f000-primary/pg-f000-1 down, pg-f000-default/pg-f000-1 down" {
				t.Errorf("fence: forced %q, want pg-f000-1 DOWN in the primary and default services", got)
			}
			if len(res.Changes) != 2 || res.ForcedDown.IsZero() {
				t.Errorf("fence: %+v, want 2 force_down", res.Changes)
			}
			// Its checks cannot have raised it within 2 s: nothing read,
			// nothing forced (the double would show it UP: its checks pass).
			h.clk.add(1900 * time.Millisecond)
			if res := h.apply(t, "fence, 1.9 s", fenced); len(res.Changes) != 0 || len(h.srv.Requests()) != 2 {
				t.Errorf("fence within the bound: %s, %v; want nothing but version and pid", kinds(res.Changes), paths(h.srv.Requests()))
			}
			// Now they could have: forced DOWN again.
			h.clk.add(100 * time.Millisecond)
			res = h.apply(t, "fence, 2 s", fenced)
			if len(forcedWrites(h.srv.Requests())) != 2 || len(res.Changes) != 2 || !strings.Contains(res.Changes[0].Detail, "again") {
				t.Errorf("fence after the bound: %s (%v), want pg-f000-1 forced DOWN again in both", kinds(res.Changes), forcedWrites(h.srv.Requests()))
			}

			// A held new leader: forced DOWN at every apply once its last
			// forced DOWN is 0.5 s old (a quarter of the bound).
			held := force(fenced, "pg-f001-2", func(sv *services.Server) { sv.ForceDown, sv.HoldDown = true, true })
			res = h.apply(t, "hold", held)
			if got := kinds(res.Changes); got != "force_down pg-f001-primary/pg-f001-2, force_down pg-f001-default/pg-f001-2" {
				t.Errorf("hold: %s", got)
			}
			h.clk.add(400 * time.Millisecond)
			if res := h.apply(t, "hold, 0.4 s", held); len(res.Changes) != 0 {
				t.Errorf("hold within a quarter of the bound: %s, want nothing", kinds(res.Changes))
			}
			h.clk.add(100 * time.Millisecond)
			res = h.apply(t, "hold, 0.5 s", held)
			if got := kinds(res.Changes); got != "force_down pg-f001-primary/pg-f001-2, force_down pg-f001-default/pg-f001-2" {
				// (The fence, forced 0.5 s ago, still holds.)
				t.Errorf("hold after a quarter of the bound: %s, want the held leader forced DOWN again", got)
			}
			for _, c := range res.Changes {
				if c.Server == "pg-f001-2" && !strings.Contains(c.Detail, "held") {
					t.Errorf("held re-assert detail %q does not say held", c.Detail)
				}
			}

			// A new primary: forced UP once; its checks decide after it.
			up := force(base, "pg-f002-2", func(sv *services.Server) { sv.ForceUp = true })
			res = h.apply(t, "force up", up)
			// (The hold of pg-f001-2 over, its drain is lifted: holdState.)
			if got := kinds(res.Changes); got != "force_up pg-f002-primary/pg-f002-2, force_up pg-f002-default/pg-f002-2, set_state pg-f001-default/pg-f001-2, set_state pg-f001-primary/pg-f001-2" || res.ForcedUp.IsZero() {
				t.Errorf("force up: %s", got)
			}
			if g := runtimeGets(h.srv.Requests()); g != 0 {
				t.Errorf("force up: %d runtime GETs, want 0", g)
			}
			h.srv.SetOperationalState("pg-f002-primary", "pg-f002-2", "down")
			h.clk.add(10 * time.Second)
			if res := h.apply(t, "force up, its checks failed", up); len(res.Changes) != 0 {
				t.Errorf("a check failure after our force UP was overridden: %s", kinds(res.Changes))
			}
			// The promotion over, a new one starts without a record.
			h.apply(t, "promotion over", base)
			if res := h.apply(t, "promoted again", up); !strings.Contains(kinds(res.Changes), "force_up pg-f002-primary/pg-f002-2") {
				t.Errorf("a new promotion: %s, want pg-f002-2 forced UP", kinds(res.Changes))
			}

			// The dry run reads: the fenced server (UP in the double) shows.
			h.apply(t, "fence again", fenced)
			changes, err := h.tg.Diff(h.ctx, fenced)
			if err != nil {
				t.Fatal(err)
			}
			if len(changes) != 0 {
				t.Errorf("Diff right after the fence: %s, want nothing (recorded DOWN)", kinds(changes))
			}
			h.clk.add(3 * time.Second)
			h.srv.ResetRequests()
			changes, err = h.tg.Diff(h.ctx, fenced)
			if err != nil {
				t.Fatal(err)
			}
			if kinds(changes) != "force_down pg-f000-primary/pg-f000-1, force_down pg-f000-default/pg-f000-1" || runtimeGets(h.srv.Requests()) != 2 {
				t.Errorf("Diff after the bound: %s with %d runtime GETs, want the fence read UP in both write services", kinds(changes), runtimeGets(h.srv.Requests()))
			}

			// A restart (new pid): no record counts.
			h.apply(t, "fence before the restart", fenced)
			h.srv.RestartHAProxy()
			res = h.apply(t, "restart", fenced)
			if !strings.Contains(kinds(res.Changes), "force_down pg-f000-primary/pg-f000-1") {
				t.Errorf("after a restart: %s, want the fence forced again", kinds(res.Changes))
			}
		})
	}
}

// TestTwinsFencedTwinForcedDownAfterItsFlip: a fenced server whose active
// twin a flip readies in the same apply (a held new leader in a write
// service with a role selector) comes out of maint UP at once, so it is
// forced DOWN right after its own flip, not before it (where the flip would
// undo it) and not after every other flip of the apply; the other fences
// are made, and the old primary is not activated in the write service.
func TestTwinsFencedTwinForcedDownAfterItsFlip(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			h := newTwinsHarness(t, v)
			// "replica" made a write service: its backup (the primary)
			// moves with the role.
			mk := func(primary int, hold bool) []services.Service {
				svcs := cluster("pg-w", 12, 3, primary)
				for i := range svcs {
					if svcs[i].Service == "replica" {
						svcs[i].Check = "/primary"
					}
				}
				if hold {
					svcs = force(svcs, "pg-w-2", func(sv *services.Server) { sv.ForceDown, sv.HoldDown = true, true })
				}
				return twinned(t, svcs)
			}
			h.apply(t, "create", mk(1, false))
			h.apply(t, "settle", mk(1, false))
			res := h.apply(t, "switchover, new leader held", mk(2, true))
			var order []string
			for _, r := range h.srv.Writes() {
				if r.Query.Get("backend") == "pg-w-replica" && strings.HasPrefix(r.Path, "/runtime/servers/pg-w-2") {
					order = append(order, strings.TrimPrefix(r.Path, "/runtime/servers/")+" "+string(r.Body))
				}
			}
			got := strings.Join(order, " | ")
			// The hold drains it: one PUT takes its active twin out of
			// maint into drain (no flip to ready: see holdState).
			if !strings.Contains(got, `pg-w-2.backup {"admin_state":"drain","operational_state":"down"}`) || strings.Contains(got, `"admin_state":"ready"`) {
				t.Errorf("pg-w-2's twins in the replica service: %s; want its active twin held in drain, never ready (changes %s)", got, kinds(res.Changes))
			}
			if strings.Count(got, "operational_state") != 1 {
				t.Errorf("pg-w-2's held twin forced %d times, want once: %s", strings.Count(got, "operational_state"), got)
			}
			// The new leader is fenced in the services not flipped
			// (primary, default), and the write service readies no twin:
			// the old primary, a replica now, is no server of it in the
			// twin layout (services.Twins activates the primary only in a
			// write service; as a normal server its `ready` was UP at once).
			fenced := false
			for _, r := range h.srv.Writes() {
				b := r.Query.Get("backend")
				switch {
				case (b == "pg-w-primary" || b == "pg-w-default") && strings.Contains(string(r.Body), `"operational_state":"down"`):
					fenced = true
				case b == "pg-w-replica" && strings.Contains(string(r.Body), `"admin_state":"ready"`):
					t.Errorf("%s readied in the write service (%v)", r.Path, paths(h.srv.Writes()))
				}
			}
			if !fenced {
				t.Errorf("no fence in the primary or default service: %v", paths(h.srv.Writes()))
			}
		})
	}
}

// TestTwinsIncomingBeforeOutgoing: in every backend a switchover flips,
// the incoming twins are ready before the outgoing ones leave (never zero
// active servers), also with the force-ups and the deactivations of other
// backends in the first wave.
func TestTwinsIncomingBeforeOutgoing(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			h := newTwinsHarness(t, v)
			base := fleetChecked(t, 3, func(int) int { return 1 })
			h.apply(t, "create", base)
			h.apply(t, "settle", base)
			sw := force(fleetChecked(t, 3, func(i int) int { return map[bool]int{true: 2, false: 1}[i == 1] }),
				"pg-f001-2", func(sv *services.Server) { sv.ForceUp = true })
			res := h.apply(t, "switchover", sw)
			if !strings.Contains(kinds(res.Changes), "force_up pg-f001-primary/pg-f001-2") {
				t.Fatalf("switchover: %s", kinds(res.Changes))
			}
			lastUp, firstDown := map[string]int{}, map[string]int{}
			for i, r := range h.srv.Writes() {
				b, body := r.Query.Get("backend"), string(r.Body)
				switch {
				case strings.Contains(body, `"admin_state":"ready"`):
					lastUp[b] = i
				case strings.Contains(body, `"admin_state"`):
					if _, ok := firstDown[b]; !ok {
						firstDown[b] = i
					}
				}
			}
			if len(firstDown) == 0 {
				t.Fatalf("no deactivation: %v", paths(h.srv.Writes()))
			}
			for b, down := range firstDown {
				if up, ok := lastUp[b]; ok && up > down {
					t.Errorf("%s: an outgoing twin left (write #%d) before the last incoming one was ready (#%d)", b, down, up)
				}
			}
		})
	}
}

// TestTwinsFlipsWhileFencesAreRead: when an apply must read the health of
// fences it has no record of (a failover: the old primaries), the flips of
// the services that take no writes go while those backends are read, not
// after; nothing in a write service (a fence, a force-up) goes before the
// reads ended, every flip is applied and reported once, incoming before
// outgoing per backend still.
func TestTwinsFlipsWhileFencesAreRead(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			h := newTwinsHarness(t, v)
			base := fleetChecked(t, 3, func(int) int { return 1 })
			h.apply(t, "create", base)
			h.apply(t, "settle", base)
			fo := fleetChecked(t, 3, func(int) int { return 2 })
			for i := 0; i < 3; i++ {
				fo = force(fo, fmt.Sprintf("pg-f%03d-1", i), func(sv *services.Server) { sv.ForceDown = true })
				fo = force(fo, fmt.Sprintf("pg-f%03d-2", i), func(sv *services.Server) { sv.ForceUp = true })
				// The new primaries' /primary checks failed until now.
				for _, svc := range []string{"primary", "default"} {
					h.srv.SetOperationalState(fmt.Sprintf("pg-f%03d-%s", i, svc), fmt.Sprintf("pg-f%03d-2", i), "down")
				}
			}
			res := h.apply(t, "failover", fo)
			reqs := h.srv.Requests()
			lastGet, firstWrite := -1, -1
			for i, r := range reqs {
				write := strings.HasSuffix(r.Query.Get("backend"), "-primary") || strings.HasSuffix(r.Query.Get("backend"), "-default")
				switch {
				case r.Method == "GET" && r.Path == "/runtime/servers" && write:
					lastGet = i
				case r.Method == "PUT" && write && firstWrite < 0:
					firstWrite = i
				}
			}
			if lastGet < 0 || firstWrite < lastGet {
				t.Errorf("a write service's PUT (#%d) before its fences were read (last GET #%d): %v", firstWrite, lastGet, paths(reqs))
			}
			seen := map[string]int{}
			flips, fences, ups := 0, 0, 0
			for _, c := range res.Changes {
				seen[c.Kind+" "+c.Backend+"/"+c.Server]++
				switch c.Kind {
				case target.KindSetState:
					flips++
				case target.KindForceDown:
					fences++
				case target.KindForceUp:
					ups++
				}
			}
			for k, n := range seen {
				if n != 1 {
					t.Errorf("%s reported %d times", k, n)
				}
			}
			if flips == 0 || fences != 6 || ups != 6 {
				t.Errorf("failover: %d flips, %d fences, %d force-ups; want flips, 6 and 6: %s", flips, fences, ups, kinds(res.Changes))
			}
			lastUp, firstDown := map[string]int{}, map[string]int{}
			for i, r := range h.srv.Writes() {
				b, body := r.Query.Get("backend"), string(r.Body)
				switch {
				case strings.Contains(body, `"admin_state":"ready"`):
					lastUp[b] = i
				case strings.Contains(body, `"admin_state"`):
					if _, ok := firstDown[b]; !ok {
						firstDown[b] = i
					}
				}
			}
			for b, down := range firstDown {
				if up, ok := lastUp[b]; ok && up > down {
					t.Errorf("%s: an outgoing twin left (write #%d) before the last incoming one was ready (#%d)", b, down, up)
				}
			}
			if res := h.apply(t, "again", fo); len(res.Changes) != 0 {
				t.Errorf("after the failover: %s, want nothing", kinds(res.Changes))
			}
		})
	}
}

// TestTwinsOutgoingFollowTheirBackend: the outgoing twins of a backend go
// as soon as its own incoming ones are ready, not after every activation
// of the apply: over 30 clusters' switchovers (60 activations in the
// read services, 8 in flight) some outgoing twin leaves before the last
// activation of the apply is written (the 60th can be sent only once 52
// activations were answered, and then some backend had both of its own
// answered and its outgoing twins sent by the same worker); incoming
// before outgoing per backend still.
func TestTwinsOutgoingFollowTheirBackend(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			h := newTwinsHarness(t, v)
			base := fleetChecked(t, 30, func(int) int { return 1 })
			h.apply(t, "create", base)
			h.apply(t, "settle", base)
			h.apply(t, "switchovers", fleetChecked(t, 30, func(int) int { return 2 }))
			lastUp, firstDown := map[string]int{}, map[string]int{}
			lastAnyUp, firstAnyDown := -1, -1
			for i, r := range h.srv.Writes() {
				b, body := r.Query.Get("backend"), string(r.Body)
				if r.Method != "PUT" || !strings.HasPrefix(r.Path, "/runtime/servers/") {
					continue
				}
				switch {
				case strings.Contains(body, `"admin_state":"ready"`):
					lastUp[b], lastAnyUp = i, i
				case strings.Contains(body, `"admin_state"`):
					if _, ok := firstDown[b]; !ok {
						firstDown[b] = i
					}
				}
			}
			for b, down := range firstDown {
				up, ok := lastUp[b]
				if ok && up > down {
					t.Errorf("%s: an outgoing twin left (write #%d) before the last incoming one was ready (#%d)", b, down, up)
				}
				if ok && (firstAnyDown < 0 || down < firstAnyDown) {
					firstAnyDown = down
				}
			}
			if firstAnyDown < 0 || firstAnyDown > lastAnyUp {
				t.Errorf("the first outgoing twin of a backend with incoming ones left at write #%d, the last activation was #%d: want the outgoing twins to follow their own backend", firstAnyDown, lastAnyUp)
			}
		})
	}
}

// crashedTwins is fleetChecked after a crash failover of every cluster from
// member 1 to member 2: member 1 is gone from the DCS (its candidates are
// Unconfirmed), fenced in the write services, and member 2 forced UP.
func crashedTwins(t *testing.T, n int) []services.Service { return lostTwins(t, n, true) }

// lostTwins is fleetChecked once member 1, the primary, is gone from the
// DCS: its leader key expired (promoted false: no new leader yet, the
// roles kept with it) or member 2 took the key (promoted).
func lostTwins(t *testing.T, n int, promoted bool) []services.Service {
	t.Helper()
	primary := 1
	if promoted {
		primary = 2
	}
	var out []services.Service
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("pg-f%03d", i)
		svcs := ownChecks(cluster(name, 10+i, 3, primary))
		for j := range svcs {
			if svcs[j].Service != "replica" && svcs[j].Service != "offline" {
				continue
			}
			svcs[j].RoleDependent = true
			for _, sv := range svcs[0].Servers {
				sv.Port = svcs[j].DestPort
				sv.Unconfirmed = sv.Name == name+"-1"
				svcs[j].Candidates = append(svcs[j].Candidates, sv)
			}
		}
		tw, err := services.Twins(svcs)
		if err != nil {
			t.Fatal(err)
		}
		tw = force(tw, name+"-1", func(sv *services.Server) { sv.ForceDown = true })
		if promoted {
			tw = force(tw, name+"-2", func(sv *services.Server) { sv.ForceUp = true })
		}
		out = append(out, tw...)
	}
	return out
}

// settledTwins runs f on the v2 and v3 doubles, each with a twin-layout
// Target that has created and settled n clusters (primary: member 1).
func settledTwins(t *testing.T, n int, f func(t *testing.T, h *twinsHarness, base []services.Service), opts ...dpapitest.Option) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			h := newTwinsHarness(t, v, opts...)
			base := fleetChecked(t, n, func(int) int { return 1 })
			h.apply(t, "create", base)
			h.apply(t, "settle", base)
			f(t, h, base)
		})
	}
}

// TestTwinsCrashedMemberGoesLast: in a crash failover, the deactivation of
// the crashed old primary's active twin (its member gone from the DCS: its
// checks have it DOWN, the deactivation moves no traffic) is sent after
// every other write of the apply: the fences, the force-ups and the flips
// of the members that serve no longer wait behind it. It is still applied,
// reported once, and the next apply finds nothing to do.
func TestTwinsCrashedMemberGoesLast(t *testing.T) {
	const n = 10
	settledTwins(t, n, func(t *testing.T, h *twinsHarness, base []services.Service) {
		fo := crashedTwins(t, n)
		for i := 0; i < n; i++ {
			for _, svc := range []string{"primary", "default"} {
				h.srv.SetOperationalState(fmt.Sprintf("pg-f%03d-%s", i, svc), fmt.Sprintf("pg-f%03d-2", i), "down")
			}
		}
		res := h.apply(t, "crash failover", fo)
		firstGone, lastOther, gone := -1, -1, 0
		for i, r := range h.srv.Writes() {
			if r.Method != "PUT" || !strings.HasPrefix(r.Path, "/runtime/servers/") {
				continue
			}
			sv := strings.TrimPrefix(r.Path, "/runtime/servers/")
			if strings.HasSuffix(sv, "-1"+services.BackupTwinSuffix) || strings.HasSuffix(sv, "-1") && !strings.Contains(string(r.Body), "operational_state") {
				gone++
				if firstGone < 0 {
					firstGone = i
				}
				continue
			}
			lastOther = i
		}
		if gone != n {
			t.Fatalf("%d admin-state writes of the crashed members' twins, want %d (one active twin each): %s", gone, n, kinds(res.Changes))
		}
		if lastOther < 0 || firstGone < lastOther {
			t.Errorf("a crashed member's twin was written at #%d, before the apply's last other write #%d", firstGone, lastOther)
		}
		seen := map[string]int{}
		for _, c := range res.Changes {
			seen[c.Kind+" "+c.Backend+"/"+c.Server]++
		}
		for k, c := range seen {
			if c != 1 {
				t.Errorf("%s reported %d times", k, c)
			}
		}
		c, err := dataplaneapi.New(h.srv.URL(), dataplaneapi.Options{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			b := fmt.Sprintf("pg-f%03d-replica", i)
			rs, err := c.GetRuntimeServers(h.ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				if strings.HasPrefix(r.Name, fmt.Sprintf("pg-f%03d-1", i)) && r.AdminState == "ready" {
					t.Errorf("%s: the crashed member's twin %s is still ready", b, r.Name)
				}
			}
		}
		if res := h.apply(t, "again", fo); len(res.Changes) != 0 {
			t.Errorf("after the failover: %s, want nothing", kinds(res.Changes))
		}
	})
}

// TestTwinsFenceRereadsAfterTheApply: in a failover that spans applies,
// the re-reads of fences read DOWN before (past their bound) whose new
// primary our force UP already has UP wait until the apply's other writes
// were sent: the next clusters' fence reads, force-ups and flips do not
// wait behind them. A fence found UP then (an operator's `set server …
// health up`) is still forced DOWN by the same apply and reported; a
// first fence read (no record) still precedes its cluster's force-up; and
// the next apply, within the bound, reads nothing.
func TestTwinsFenceRereadsAfterTheApply(t *testing.T) {
	const n = 4
	settledTwins(t, n, func(t *testing.T, h *twinsHarness, base []services.Service) {
		failover := func(upTo int) []services.Service {
			fo := fleetChecked(t, n, func(i int) int {
				if i < upTo {
					return 2
				}
				return 1
			})
			for i := 0; i < upTo; i++ {
				fo = force(fo, fmt.Sprintf("pg-f%03d-1", i), func(sv *services.Server) { sv.ForceDown = true })
				fo = force(fo, fmt.Sprintf("pg-f%03d-2", i), func(sv *services.Server) { sv.ForceUp = true })
			}
			return fo
		}
		for i := 0; i < n; i++ {
			for _, svc := range []string{"primary", "default"} {
				// Dead old primaries; new primaries whose /primary
				// checks failed until now.
				h.srv.SetOperationalState(fmt.Sprintf("pg-f%03d-%s", i, svc), fmt.Sprintf("pg-f%03d-1", i), "down")
				h.srv.SetOperationalState(fmt.Sprintf("pg-f%03d-%s", i, svc), fmt.Sprintf("pg-f%03d-2", i), "down")
			}
		}
		first := h.apply(t, "first clusters", failover(n-1))
		if got := len(forcedWrites(h.srv.Requests())); got != 2*(n-1) {
			t.Fatalf("first clusters: %d forced writes, want %d force-ups: %s", got, 2*(n-1), kinds(first.Changes))
		}
		// Past the bound; an operator raises one old primary.
		h.clk.add(2 * time.Second)
		h.srv.SetOperationalState("pg-f000-primary", "pg-f000-1", "up")
		res := h.apply(t, "last cluster", failover(n))
		reqs := h.srv.Requests()
		lastCluster := func(b string) bool { return strings.HasPrefix(b, fmt.Sprintf("pg-f%03d-", n-1)) }
		firstReread, lastOther, lastGet3, firstUp3 := -1, -1, -1, -1
		for i, r := range reqs {
			b := r.Query.Get("backend")
			write := strings.HasSuffix(b, "-primary") || strings.HasSuffix(b, "-default")
			switch {
			case r.Method == "GET" && write && lastCluster(b):
				lastGet3 = i
			case r.Method == "GET" && write:
				if firstReread < 0 {
					firstReread = i
				}
			case r.Method == "PUT" && lastCluster(b):
				lastOther = i
				if strings.Contains(string(r.Body), `"operational_state":"up"`) && firstUp3 < 0 {
					firstUp3 = i
				}
			}
		}
		if firstReread < 0 || lastOther < 0 || firstReread < lastOther {
			t.Errorf("a fence re-read (#%d) before the last write of the cluster failing over now (#%d): %v", firstReread, lastOther, paths(reqs))
		}
		if lastGet3 < 0 || firstUp3 < 0 || firstUp3 < lastGet3 {
			t.Errorf("the new cluster's force-up (#%d) before its fences were read (#%d): %v", firstUp3, lastGet3, paths(reqs))
		}
		if got := runtimeGets(reqs); got != 2*n {
			t.Errorf("%d runtime GETs, want %d (the new cluster's 2 fences, the 6 re-reads)", got, 2*n)
		}
		forced := strings.Join(forcedWrites(reqs), ", ")
		if !strings.Contains(forced, "pg-f000-primary/pg-f000-1 down") || strings.Contains(forced, "pg-f000-default/pg-f000-1 down") {
			t.Errorf("forced %q: want the old primary raised by the operator forced DOWN again, only there", forced)
		}
		var last target.Change
		for _, c := range res.Changes {
			if c.Kind == target.KindForceDown {
				last = c
			}
		}
		if last.Backend != "pg-f000-primary" || last.Server != "pg-f000-1" || res.ForcedDown.IsZero() {
			t.Errorf("the re-read fence forced DOWN is not reported: %s", kinds(res.Changes))
		}
		if res := h.apply(t, "again", failover(n)); len(res.Changes) != 0 || runtimeGets(h.srv.Requests()) != 0 {
			t.Errorf("again within the bound: %s, %d GETs; want nothing", kinds(res.Changes), runtimeGets(h.srv.Requests()))
		}
	})
}

// TestTwinsFenceReadStampedPerGET: a fence read DOWN counts from just
// before its own GET was sent, not from the start of the whole read (a
// read of 2,000 backends takes seconds, and a record stamped at its start
// lost that much of its bound: the next apply re-read fences it had just
// read). The clock moves 20 ms at every look while the fences of 10
// clusters are read; then, stepping the clock from 2 s after the read
// began, the first apply that re-reads any reads only some (those whose
// GET went first), and 2 s after the read ended some are read again.
func TestTwinsFenceReadStampedPerGET(t *testing.T) {
	const n = 10
	settledTwins(t, n, func(t *testing.T, h *twinsHarness, base []services.Service) {
		fenced := base
		for i := 0; i < n; i++ {
			m := fmt.Sprintf("pg-f%03d-1", i)
			fenced = force(fenced, m, func(sv *services.Server) { sv.ForceDown = true })
			for _, svc := range []string{"primary", "default"} {
				h.srv.SetOperationalState(fmt.Sprintf("pg-f%03d-%s", i, svc), m, "down")
			}
		}
		began := h.clk.Now()
		h.clk.setTick(20 * time.Millisecond)
		if res := h.apply(t, "fences read", fenced); len(res.Changes) != 0 || runtimeGets(h.srv.Requests()) != 2*n {
			t.Fatalf("fences read: %s, %d GETs; want %d GETs, nothing forced", kinds(res.Changes), runtimeGets(h.srv.Requests()), 2*n)
		}
		h.clk.setTick(0)
		ended := h.clk.Now()
		if ended.Sub(began) < 100*time.Millisecond {
			t.Fatalf("the read took %s on the test clock: too short to tell the stamps apart", ended.Sub(began))
		}
		// Step the clock from 2 s after the read began: the first
		// re-read takes only the fences whose GETs went first.
		h.clk.add(began.Add(2 * time.Second).Sub(ended))
		first := 0
		for h.clk.Now().Before(ended.Add(2 * time.Second)) {
			h.clk.add(20 * time.Millisecond)
			res := h.apply(t, "stepping", fenced)
			if len(res.Changes) != 0 {
				t.Fatalf("stepping: %s, want nothing forced", kinds(res.Changes))
			}
			if first = runtimeGets(h.srv.Requests()); first > 0 {
				break
			}
		}
		if first == 0 || first >= 2*n {
			t.Errorf("the first re-read after the bound read %d backends, want some of the %d (those whose GET went first)", first, 2*n)
		}
		h.clk.add(ended.Add(2 * time.Second).Sub(h.clk.Now()))
		h.apply(t, "2 s after the read ended", fenced)
		if got := runtimeGets(h.srv.Requests()); got == 0 {
			t.Errorf("2 s after the read ended: no fence read again")
		}
	})
}

// writerTwins is fleetChecked with one more service per cluster, "writer": a
// role-dependent write service (the primary only, checked on /primary),
// laid out as twins.
func writerTwins(t *testing.T, n int, primary int) []services.Service {
	t.Helper()
	var out []services.Service
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("pg-f%03d", i)
		svcs := cluster(name, 10+i, 3, primary)
		w := svcs[0] // primary: every member, /primary
		w.Name, w.Service, w.Port = name+"-writer", "writer", 5439
		w.RoleDependent = true
		w.Candidates = append([]services.Server(nil), svcs[0].Servers...)
		w.Candidates[primary-1].Primary = true // as Build marks candidates
		w.Servers = []services.Server{svcs[0].Servers[primary-1]}
		tw, err := services.Twins(append(svcs, w))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tw...)
	}
	return out
}

// TestTwinsWriteServiceOutgoingFirst: in a role-dependent write service
// the old primary's twin leaves before the new primary's comes in (a
// write service may be without a server for a round trip, never with two
// primaries: the old one may still pass /primary for a few checks), while
// the read services keep incoming before outgoing.
func TestTwinsWriteServiceOutgoingFirst(t *testing.T) {
	for _, v := range []int{2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			const n = 12
			h := newTwinsHarness(t, v)
			base := writerTwins(t, n, 1)
			h.apply(t, "create", base)
			h.apply(t, "settle", base)
			h.apply(t, "switchovers", writerTwins(t, n, 2))
			firstUp, lastDown := map[string]int{}, map[string]int{}
			lastUp, firstDown := map[string]int{}, map[string]int{}
			for i, r := range h.srv.Writes() {
				b, body := r.Query.Get("backend"), string(r.Body)
				switch {
				case strings.Contains(body, `"admin_state":"ready"`):
					if _, ok := firstUp[b]; !ok {
						firstUp[b] = i
					}
					lastUp[b] = i
				case strings.Contains(body, `"admin_state"`):
					if _, ok := firstDown[b]; !ok {
						firstDown[b] = i
					}
					lastDown[b] = i
				}
			}
			writers := 0
			for b, up := range firstUp {
				down, ok := lastDown[b]
				if !ok {
					continue
				}
				if strings.HasSuffix(b, "-writer") {
					writers++
					if down > up {
						t.Errorf("%s: the new primary's twin came in (write #%d) before the old one left (#%d)", b, up, down)
					}
				} else if first := firstDown[b]; lastUp[b] > first {
					t.Errorf("%s: an outgoing twin left (write #%d) before the last incoming one was ready (#%d)", b, first, lastUp[b])
				}
			}
			if writers != n {
				t.Errorf("%d writer backends flipped both ways, want %d", writers, n)
			}
			if res := h.apply(t, "again", writerTwins(t, n, 2)); len(res.Changes) != 0 {
				t.Errorf("after the switchovers: %s, want nothing", kinds(res.Changes))
			}
		})
	}
}

// TestTwinsCrashedMemberDeferred: when the leader keys expired and no new
// leader brings anything UP yet, the apply reads the fences and leaves the
// crashed members' twins as they are (they move no traffic): it says how
// many changes it deferred and when they are due, and is not in sync.
// With a new leader within that time they go last in its apply (the new
// primaries' force-ups and flips no longer wait behind them). Without one,
// the apply at the due time drains them, while its fences are read (the
// double answers each read 20 ms late, as a loaded API does), and leaves
// nothing deferred.
func TestTwinsCrashedMemberDeferred(t *testing.T) {
	const n = 10
	crashed := func(r dpapitest.Request) bool {
		return r.Method == "PUT" && strings.HasSuffix(r.Path, "-1"+services.BackupTwinSuffix)
	}
	expired := func(t *testing.T, h *twinsHarness) {
		t.Helper()
		for i := 0; i < n; i++ {
			for _, svc := range []string{"primary", "default"} {
				h.srv.SetOperationalState(fmt.Sprintf("pg-f%03d-%s", i, svc), fmt.Sprintf("pg-f%03d-1", i), "down")
			}
		}
		res := h.apply(t, "leader keys expired", lostTwins(t, n, false))
		gets := 0
		for _, r := range h.srv.Requests() {
			if crashed(r) {
				t.Fatalf("leader keys expired: %s %s sent, want it deferred (%s)", r.Method, r.Path, kinds(res.Changes))
			}
			if r.Method == "GET" && r.Path == "/runtime/servers" {
				gets++
			}
		}
		if gets != 2*n {
			t.Errorf("leader keys expired: %d fence reads, want %d", gets, 2*n)
		}
		if res.Deferred != n || res.RetryIn <= 0 || res.RetryIn > 2*time.Second {
			t.Errorf("leader keys expired: %d deferred, due in %s; want %d within 2s", res.Deferred, res.RetryIn, n)
		}
		if again := h.apply(t, "leader keys expired, again", lostTwins(t, n, false)); again.Deferred != n {
			t.Errorf("the same apply again: %d deferred, want %d (the services with deferred flips are not in sync)", again.Deferred, n)
		}
	}
	t.Run("new leaders", func(t *testing.T) {
		settledTwins(t, n, func(t *testing.T, h *twinsHarness, base []services.Service) {
			expired(t, h)
			h.clk.add(time.Second)
			res := h.apply(t, "new leaders", crashedTwins(t, n))
			firstCrashed, lastOther, drains := -1, -1, 0
			for i, r := range h.srv.Requests() {
				switch {
				case crashed(r):
					drains++
					if firstCrashed < 0 {
						firstCrashed = i
					}
				case r.Method == "PUT":
					lastOther = i
				}
			}
			if drains != n || firstCrashed < lastOther {
				t.Errorf("new leaders: %d drains of the crashed members' twins, the first at #%d, the last other write #%d: want %d, after it (%s)",
					drains, firstCrashed, lastOther, n, kinds(res.Changes))
			}
			// MovedAt: after every other write was answered, before the
			// first drain of a crashed member's twin was sent.
			if reqs := h.srv.Requests(); res.MovedAt.IsZero() || firstCrashed < 0 || lastOther < 0 ||
				res.MovedAt.Before(reqs[lastOther].At) || res.MovedAt.After(reqs[firstCrashed].At) {
				t.Errorf("new leaders: traffic moved at %v; want between the last other write and the first drain", res.MovedAt)
			}
			if res.Deferred != 0 || res.RetryIn != 0 {
				t.Errorf("new leaders: %d deferred, due in %s; want none", res.Deferred, res.RetryIn)
			}
		}, dpapitest.WithRuntimeReadDelay(20*time.Millisecond))
	})
	t.Run("no new leader", func(t *testing.T) {
		settledTwins(t, n, func(t *testing.T, h *twinsHarness, base []services.Service) {
			expired(t, h)
			h.clk.add(2 * time.Second)
			res := h.apply(t, "due", lostTwins(t, n, false))
			firstDrain, lastGet, drains := -1, -1, 0
			for i, r := range h.srv.Requests() {
				b := r.Query.Get("backend")
				switch {
				case r.Method == "GET" && r.Path == "/runtime/servers" && (strings.HasSuffix(b, "-primary") || strings.HasSuffix(b, "-default")):
					lastGet = i
				case crashed(r):
					drains++
					if firstDrain < 0 {
						firstDrain = i
					}
				}
			}
			if drains != n || lastGet < 0 || firstDrain > lastGet {
				t.Errorf("due: %d drains of the crashed members' twins, the first at #%d, the last fence read at #%d: want %d, the first before the reads end (%s)",
					drains, firstDrain, lastGet, n, kinds(res.Changes))
			}
			if res.Deferred != 0 || res.RetryIn != 0 {
				t.Errorf("due: %d deferred, due in %s; want none", res.Deferred, res.RetryIn)
			}
			if !res.MovedAt.IsZero() {
				t.Errorf("due: traffic moved at %v; want zero (nothing went last)", res.MovedAt)
			}
			if res := h.apply(t, "again", lostTwins(t, n, false)); len(res.Changes) != 0 || res.Deferred != 0 {
				t.Errorf("after the drains: %s, %d deferred; want nothing", kinds(res.Changes), res.Deferred)
			}
		}, dpapitest.WithRuntimeReadDelay(20*time.Millisecond))
	})
}

// fleetChecked is fleetTwins with a default service whose servers check
// for themselves (ownChecks). The tests of this file count the fences and
// force-ups of both write services.
func fleetChecked(t testing.TB, n int, primary func(i int) int) []services.Service {
	t.Helper()
	var out []services.Service
	for i := 0; i < n; i++ {
		out = append(out, twinned(t, ownChecks(cluster(fmt.Sprintf("pg-f%03d", i), 10+i, 3, primary(i))))...)
	}
	return out
}

// ownChecks gives cluster()'s default service a default-server line other
// than the primary service's (no slowstart), so that it does not track it
// (services.CanTrack). It returns svcs.
func ownChecks(svcs []services.Service) []services.Service {
	for j := range svcs {
		if svcs[j].Service == "default" {
			svcs[j].DefaultServer = strings.Replace(svcs[j].DefaultServer, " slowstart 30s", "", 1)
		}
	}
	return svcs
}

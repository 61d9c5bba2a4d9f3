package dataplaneapi

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/haproxytech/client-native/v5/models"
	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/target"
)

// The write guards of an apply: the fences (an old primary forced DOWN, a
// held new leader forced DOWN and drained) and the deactivations of the
// outgoing twins of write services. They go first (applyChanges before a
// configuration write, else the first wave of applyFlips), and a write
// service's activations and force-ups only after them: a write service may
// be without a server for a round trip, never with two primaries.
//
// That order alone is not enough: a guard's PUT may succeed and its answer
// (the API reads the server back from HAProxy after the change) show that
// it did not take (a fence answered operational_state up, an outgoing twin
// answered ready: an operator's `set server`, a runtime socket that
// dropped the command). Each guard's answer is checked as it comes; one
// that did not take (or whose PUT failed) is sent again at once, and when
// that does not take either, the activations and force-ups of its backend,
// and of the backends whose servers track that backend's (target.TrackedBy:
// a tracker comes UP with the server it tracks), are not sent: the backend
// is left as it was, the other backends go on, and the apply returns an
// error naming the guard and what was held back (status and metrics show
// it; the controller applies again).
type guardBook struct {
	// write: the backends of write services (services.WriteCheck), whose
	// outgoing twins are guards; set by applyFlips.
	write map[string]bool
	mu    sync.Mutex
	// missed: "backend/server" of a guard that did not take -> what its
	// answers (or errors) said.
	missed map[string]string
}

// isGuard reports whether c is a write guard.
func (g *guardBook) isGuard(c target.Change) bool {
	switch c.Kind {
	case target.KindForceDown:
		return true
	case target.KindSetState:
		return target.StateOf(c) != "ready" && g.write[c.Backend]
	}
	return false
}

// guardMissed says how the answer rs to write guard c shows that it did
// not take, "" when it took. A fence takes when the server is not UP (or
// is in maint: no traffic, no check), a held new leader's also when it is
// drained (the hold: see holdState), an outgoing twin when it is no longer
// ready.
func guardMissed(c target.Change, rs *models.RuntimeServer) string {
	if rs == nil {
		return "no answer"
	}
	if c.Kind == target.KindForceDown {
		if (rs.OperationalState != "" && rs.OperationalState != "up") || rs.AdminState == "maint" ||
			(isHold(c) && rs.AdminState == holdAdmin) {
			return ""
		}
		return fmt.Sprintf("forced DOWN, answered operational_state %q, admin_state %q", rs.OperationalState, rs.AdminState)
	}
	if rs.AdminState != "" && rs.AdminState != "ready" {
		return ""
	}
	return fmt.Sprintf("set %s, answered admin_state %q", target.StateOf(c), rs.AdminState)
}

// putGuard sends write guard c and checks its answer; one that did not
// take (or whose PUT failed) is sent once more at once, and noted in g
// when it still does not take. It returns the last answer (nil when the
// PUTs failed). It never fails: a guard that does not take holds back its
// backend only (see guardBook).
func (t *Target) putGuard(ctx context.Context, c target.Change, pid int64, g *guardBook) *models.RuntimeServer {
	var rs *models.RuntimeServer
	var missed string
	for attempt := 0; attempt < 2; attempt++ {
		var err error
		if c.Kind == target.KindForceDown {
			rs, err = t.forceHealth(ctx, c, false, pid)
		} else {
			rs, err = t.c.ReplaceRuntimeServer(ctx, c.Backend, c.Server, &models.RuntimeServer{AdminState: target.StateOf(c)})
			if err != nil {
				err = fmt.Errorf("%s/%s: %w", c.Backend, c.Server, err)
			}
		}
		if err != nil {
			rs, missed = nil, err.Error()
		} else if missed = guardMissed(c, rs); missed == "" {
			return rs
		}
		if ctx.Err() != nil {
			break
		}
		if attempt == 0 {
			t.log.Warn("a write guard did not take; sending it again", zap.String("backend", c.Backend),
				zap.String("server", c.Server), zap.String("kind", c.Kind), zap.String("answer", missed))
		}
	}
	g.note(c.Backend+"/"+c.Server, missed)
	return rs
}

func (g *guardBook) note(key, why string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.missed == nil {
		g.missed = map[string]string{}
	}
	g.missed[key] = why
}

// missedAny reports whether a guard did not take.
func (g *guardBook) missedAny() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.missed) > 0
}

// backends names the backends of the guards that did not take.
func (g *guardBook) backends() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for k := range g.missed {
		if b, _, _ := strings.Cut(k, "/"); !seen[b] {
			seen[b] = true
			out = append(out, b)
		}
	}
	return out
}

// held names the backends whose activations and force-ups are held back:
// those of a guard that did not take, and those whose servers track theirs
// (trackedBy: target.TrackedBy). Nil when every guard took.
func (g *guardBook) held(trackedBy map[string][]string) map[string]bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.missed) == 0 {
		return nil
	}
	base := map[string]bool{}
	for k := range g.missed {
		b, _, _ := strings.Cut(k, "/")
		base[b] = true
	}
	out := make(map[string]bool, len(base))
	for b := range base {
		out[b] = true
	}
	for k, bs := range trackedBy {
		if b, _, _ := strings.Cut(k, "/"); base[b] {
			for _, x := range bs {
				out[x] = true
			}
		}
	}
	return out
}

// holdsBack reports whether change c is one held back in held (a backend
// of held's: anything but a guard).
func (g *guardBook) holdsBack(c target.Change, held map[string]bool) bool {
	return held[c.Backend] && !g.isGuard(c)
}

// without returns changes without those held back in held, and those.
func (g *guardBook) without(changes []target.Change, held map[string]bool) (kept, back []target.Change) {
	if len(held) == 0 {
		return changes, nil
	}
	kept = make([]target.Change, 0, len(changes))
	for _, c := range changes {
		if g.holdsBack(c, held) {
			back = append(back, c)
		} else {
			kept = append(kept, c)
		}
	}
	return kept, back
}

// err is the error of an apply whose guards did not all take: what each
// answered, and the changes held back (back), nil when every guard took.
func (g *guardBook) err(back []target.Change) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.missed) == 0 {
		return nil
	}
	var why []string
	for k, w := range g.missed {
		why = append(why, k+" ("+w+")")
	}
	sort.Strings(why)
	var not []string
	for _, c := range back {
		not = append(not, c.Kind+" "+c.Backend+"/"+c.Server)
	}
	sort.Strings(not)
	msg := "write guard did not take, sent twice: " + strings.Join(why, ", ")
	if len(not) > 0 {
		msg += "; held back (not sent): " + strings.Join(not, ", ")
	}
	return fmt.Errorf("%s", msg)
}

package dataplaneapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/haproxytech/client-native/v5/models"
	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// readParallel is how many runtime GETs are in flight at once when the
// admin states of many twin backends are read.
const readParallel = 8

// adminCache keeps the runtime admin states of the twin-layout backends as
// the controller last read them back (after setting them, or in a full
// read), so that an apply reads only what changed: the API has no call that
// answers every backend's runtime servers, and one GET per twin backend per
// apply is 2,000 requests at 1,000 clusters.
//
// What can change the running states behind the controller's back, and how
// each is caught:
//   - a reload or restart of HAProxy (not the controller's): the worker
//     from GET /runtime/info is another process (procTable: another pid,
//     or the same pid started anew, as in a container); the next read
//     reads every twin backend again. The controller's own reloads write a file whose
//     `disabled` keywords are the desired roles, and the reload script
//     carries the running states over, so after them only the backends the
//     write touched are read again;
//   - an operator's `set server` (the pid does not move): the periodic full
//     read (TargetOptions.AdminReadEvery, default 10 minutes) finds it, and
//     the repair is reported as repair_state.
type adminCache struct {
	mu sync.Mutex
	// pid is the worker whose states are cached (its procTable id; 0:
	// none yet).
	pid int64
	// adopt: the controller's own reload is under way; the next new pid is
	// taken without a full read.
	adopt bool
	// states: backend -> server -> admin state (ready, maint, drain).
	states map[string]map[string]string
	// fullAt is when every twin backend was last read.
	fullAt int64 // unix nanoseconds of opts.Now()
	// noInfo: the API does not answer /runtime/info; every read is full.
	noInfo bool
	// gen moves whenever states change otherwise than by the answers of
	// our own PUTs (a read, a forget, a reload): see syncState.
	gen uint64
	// outside: a reload or restart not made by this controller was seen
	// and Apply has not yet taken it (outsideChange).
	outside bool
}

// outsideChange reports, once, that a reload or restart of HAProxy not
// made by this controller was seen since the last call.
func (a *adminCache) outsideChange() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.outside
	a.outside = false
	return o
}

// AdminReads counts how the twin layout's admin states were read.
type AdminReads struct {
	// Full reads GET every twin backend's runtime servers (first read, a
	// new HAProxy process, AdminReadEvery elapsed, no /runtime/info).
	Full int64
	// Backends is how many per-backend runtime GETs were made in all.
	Backends int64
}

// AdminReads returns the admin-state read counters (twin layout).
func (t *Target) AdminReads() AdminReads {
	t.admin.mu.Lock()
	defer t.admin.mu.Unlock()
	return t.adminReads
}

// pidAnswer is what one GET of the running process answered: its id
// (procTable: its pid and start time).
type pidAnswer struct {
	pid int64
	err error
}

// pidAsync GETs the running process in the background (one round trip of
// an apply less: it goes together with the version's GET).
func (c *Client) pidAsync(ctx context.Context) <-chan pidAnswer {
	ch := make(chan pidAnswer, 1)
	go func() {
		pid, err := c.runtimePID(ctx)
		ch <- pidAnswer{pid, err}
	}()
	return ch
}

// runtimePID returns the id of the HAProxy process answering the API's
// runtime socket (see procTable: its pid and its start time, from the pid
// and uptime of one GET /runtime/info; v2 answers a list of per-process
// documents, v3 one). An answer without an uptime is an error: the process
// could not be told from a restarted one with its pid.
func (c *Client) runtimePID(ctx context.Context) (int64, error) {
	var raw json.RawMessage
	sent := time.Now()
	if _, err := c.do(ctx, http.MethodGet, "/runtime/info", nil, nil, &raw); err != nil {
		return 0, err
	}
	recv := time.Now()
	type doc struct {
		Error string                  `json:"error"`
		Info  *models.ProcessInfoItem `json:"info"`
	}
	var docs []doc
	if err := json.Unmarshal(raw, &docs); err != nil {
		var one doc
		if err2 := json.Unmarshal(raw, &one); err2 != nil {
			return 0, fmt.Errorf("decode runtime info: %w", err)
		}
		docs = []doc{one}
	}
	for _, d := range docs {
		if d.Error != "" {
			return 0, fmt.Errorf("runtime info: %s", d.Error)
		}
		if d.Info != nil && d.Info.Pid != nil && *d.Info.Pid > 0 {
			if d.Info.Uptime == nil || *d.Info.Uptime < 0 {
				return 0, fmt.Errorf("runtime info: pid %d without an uptime (a restarted process with the same pid could not be told apart)", *d.Info.Pid)
			}
			return int64(c.procs.Identify(*d.Info.Pid, *d.Info.Uptime, sent, recv)), nil
		}
	}
	return 0, fmt.Errorf("runtime info: no pid")
}

// readAdmins sets Admin on the servers of the twin backends in cur: from
// the cache where it holds them, else (and in a full read) from one runtime
// GET per backend, readParallel in flight.
// It returns the running HAProxy process it read (its procTable id; 0: none
// read: no twin layout, or the API does not answer it); pid is its GET,
// started by the caller (read) together with the version's.
// now is opts.Now() in unix nanoseconds, as the caller decided with it
// (see cleanServices).
func (t *Target) readAdmins(ctx context.Context, desired []services.Service, cur curView, pidGET <-chan pidAnswer, now int64) (int64, error) {
	var names []string
	twins := false
	for _, d := range desired {
		if d.Layout == services.LayoutTwins {
			twins = true
			if cur.has(d.Name) {
				names = append(names, d.Name)
			}
		}
	}
	if !twins {
		return 0, nil
	}
	// Also with no twin backend yet (the first apply creates them): the
	// pid is recorded, and the read-back after the creating reload
	// (waitRuntime) fills the cache.
	pa := <-pidGET
	pid, perr := pa.pid, pa.err
	a := &t.admin
	a.mu.Lock()
	full, why := false, ""
	switch {
	case perr != nil:
		full, why = true, "runtime info unavailable"
		if !a.noInfo {
			t.log.Warn("cannot tell the running HAProxy process through this API: reading every twin backend's admin states on every apply", zap.Error(perr))
		}
		a.noInfo = true
	case a.pid == 0 || a.states == nil:
		full, why = true, "first read"
	case pid != a.pid && a.adopt:
		// Our own reload: the file we wrote and the state file carry the
		// states; the backends the write touched were dropped already.
		t.log.Debug("running HAProxy reloaded by this controller", zap.String("was", procName(a.pid)), zap.String("now", procName(pid)))
		a.pid, a.adopt = pid, false
	case pid != a.pid:
		full, why = true, fmt.Sprintf("the running HAProxy changed (%s -> %s: a reload or restart not made by this controller)", procName(a.pid), procName(pid))
		a.outside = true
	case now-a.fullAt >= int64(t.opts.AdminReadEvery):
		full, why = true, "periodic full read"
	}
	if perr == nil {
		a.noInfo = false
	}
	var need []string
	for _, n := range names {
		if full || !covers(a.states[n], cur[n]) {
			need = append(need, n)
		}
	}
	a.mu.Unlock()
	if full && why != "first read" && why != "runtime info unavailable" {
		t.log.Info("reading every twin backend's runtime admin states", zap.String("why", why), zap.Int("backends", len(need)))
	}
	start := time.Now()
	got, err := t.getRuntimeMany(ctx, need)
	if err != nil {
		return 0, err
	}
	if took := time.Since(start); took > time.Second {
		t.log.Info("read twin backends' admin states", zap.Int("backends", len(need)), zap.Bool("full", full), zap.Duration("took", took))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.states == nil {
		a.states = map[string]map[string]string{}
	}
	for n, st := range got {
		a.states[n] = st
	}
	if len(need) > 0 || full || pid != a.pid {
		a.gen++
	}
	t.adminReads.Backends += int64(len(need))
	if full {
		t.adminReads.Full++
		a.fullAt = now
		a.adopt = false
		if perr == nil {
			a.pid = pid
		}
	}
	for _, n := range names {
		st := a.states[n]
		b := cur[n]
		for i := range b.srv {
			s := &b.srv[i]
			adm, ok := st[s.rec.name]
			if !ok {
				// HAProxy 2.6's master-CLI reload is asynchronous: the file
				// has the server, the running worker not yet.
				delete(a.states, n)
				return 0, fmt.Errorf("read runtime servers of %s: the running HAProxy has no server %s yet (a reload in progress?)", n, s.rec.name)
			}
			s.admin = adm
		}
	}
	if perr != nil {
		return 0, nil
	}
	return pid, nil
}

// covers reports whether cached states hold every server of b.
func covers(st map[string]string, b curBack) bool {
	if st == nil {
		return false
	}
	for i := range b.srv {
		if _, ok := st[b.srv[i].rec.name]; !ok {
			return false
		}
	}
	return true
}

// getRuntimeMany GETs the runtime servers of backends, readParallel in
// flight: backend -> server -> admin state.
func (t *Target) getRuntimeMany(ctx context.Context, backends []string) (map[string]map[string]string, error) {
	rs, errs := t.runtimeServersMany(ctx, backends)
	if len(errs) > 0 {
		if len(errs) > 3 {
			errs = append(errs[:3], fmt.Sprintf("and %d more", len(errs)-3))
		}
		return nil, fmt.Errorf("read runtime servers: %s", strings.Join(errs, "; "))
	}
	out := make(map[string]map[string]string, len(rs))
	for b, servers := range rs {
		st := make(map[string]string, len(servers))
		for _, r := range servers {
			st[r.Name] = adminWord(r.AdminState)
		}
		out[b] = st
	}
	return out, nil
}

// runtimeServersMany GETs the runtime servers of backends, readParallel in
// flight; it returns what was read and the errors (sorted).
func (t *Target) runtimeServersMany(ctx context.Context, backends []string) (map[string][]*models.RuntimeServer, []string) {
	rs, _, errs := t.runtimeServersAt(ctx, backends)
	return rs, errs
}

// runtimeServersAt is runtimeServersMany that also returns, per backend,
// opts.Now() just before its GET was sent: what a fence read DOWN is
// recorded from (a read of 2,000 backends takes seconds; stamping every
// answer with the start of the whole read shortened the later ones' bound
// by as much).
func (t *Target) runtimeServersAt(ctx context.Context, backends []string) (map[string][]*models.RuntimeServer, map[string]time.Time, []string) {
	out := make(map[string][]*models.RuntimeServer, len(backends))
	sent := make(map[string]time.Time, len(backends))
	var mu sync.Mutex
	errs := eachParallel(backends, readParallel, func(b string) error {
		at := t.opts.Now()
		rs, err := t.c.GetRuntimeServers(ctx, b)
		if err != nil {
			return fmt.Errorf("%s: %w", b, err)
		}
		var keep []*models.RuntimeServer
		for _, r := range rs {
			if r != nil {
				keep = append(keep, r)
			}
		}
		mu.Lock()
		out[b], sent[b] = keep, at
		mu.Unlock()
		return nil
	})
	return out, sent, errs
}

// adminReloaded notes the controller's own reload: the next new pid is
// adopted without a full read, and the backends the write touched are read
// again.
func (t *Target) adminReloaded(touched map[string]bool) {
	a := &t.admin
	a.mu.Lock()
	defer a.mu.Unlock()
	a.adopt = true
	a.gen++
	for b := range touched {
		delete(a.states, b)
	}
}

// adminAdopt takes pid as the process of the controller's own reload (see
// adminReloaded) once the reload is seen done: a reload or restart made
// behind the controller's back before its next apply is then seen as
// one (a new pid again), not taken for the controller's own.
func (t *Target) adminAdopt(pid int64) {
	a := &t.admin
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.adopt {
		a.pid, a.adopt = pid, false
	}
}

// adminUnadopt notes that the controller's own reload was not seen to
// come to run (see awaitReload): the next new process is read whole, as
// one made behind the controller's back (it may have loaded a state file
// dumped before runtime changes made since, or not the controller's file).
func (t *Target) adminUnadopt() {
	a := &t.admin
	a.mu.Lock()
	defer a.mu.Unlock()
	a.adopt = false
}

// adminForget drops what is cached for backends (their read-back failed).
func (t *Target) adminForget(backends []string) {
	a := &t.admin
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gen++
	for _, b := range backends {
		delete(a.states, b)
	}
}

// adminKeep records read-back states.
func (t *Target) adminKeep(got map[string]map[string]string) {
	a := &t.admin
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.states == nil {
		return // no full read yet: the next read does one
	}
	a.gen++
	for b, st := range got {
		a.states[b] = st
	}
	t.adminReads.Backends += int64(len(got))
}

// adminMerge records the states of single servers as the API answered
// their runtime PUTs, into backends already cached (a backend not cached
// stays uncached: the next apply reads it whole).
func (t *Target) adminMerge(got map[string]map[string]string) {
	a := &t.admin
	a.mu.Lock()
	defer a.mu.Unlock()
	for b, st := range got {
		c := a.states[b]
		if c == nil {
			continue
		}
		for s, adm := range st {
			c[s] = adminWord(adm)
		}
	}
}

package dataplaneapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// runningState tracks whether the running HAProxy is known to serve what
// its configuration file says. The API commits to the file and reloads
// later (reload_delay): a reload that fails (the reload command exits 1) or
// is lost (the API dies before its delayed reload) leaves the file right
// and HAProxy stale, and a read of the file alone would call that in sync.
type runningState struct {
	// confirmed is true once the running HAProxy was seen serving the
	// desired services after the last reload; false at start (a previous
	// controller may have left a reload failed or lost).
	confirmed bool
	// rawNext sends the next change set as one raw POST: after a failed
	// reload the real API (2.9.9, 3.2.0) puts the previous file back but
	// its parsed copy keeps the failed one, so transactions then fail with
	// 409 "already exists" for good; a raw POST makes it re-parse the file.
	rawNext bool
	// before is the file as the current write found it ("" when unknown):
	// what refused puts back.
	before string
	// pid is the HAProxy process the API's runtime socket answered from
	// when the current write began (0: unknown): a reload HAProxy carried
	// out answers from a new process. Only when the running HAProxy was
	// confirmed (see rememberRunning); pidBefore is that process whatever
	// the confirmation (twin layout: the apply's read has it; 0: unknown).
	pid, pidBefore int64
	// waited is what awaitReload found of the current write's reload (nil:
	// not watched): confirmRunning takes it instead of watching again.
	waited *reloadWait
}

// reloadWait is what watching a reload come to run found (waitReloaded).
type reloadWait struct {
	diff string // what still differed ("" when served)
	err  error
}

// rememberRunning keeps, right before a write that reloads, the file as it
// was (the one the running HAProxy serves, unless a reload is pending), so
// that a file HAProxy refuses to load (a bind that fails, which `haproxy
// -c` cannot see) can be put back and the clusters that cause it held back
// (issue 12 row 6), and the running process (see waitReloaded). It
// costs one GET of the file only when the parsed copy has no text (after a
// transaction), and only on writes. Call with t.mu held.
func (t *Target) rememberRunning(ctx context.Context, st *state) {
	t.running.before = ""
	t.running.pid = 0
	// The pid tells only when the running HAProxy was confirmed: after a
	// put-back or a lost reload, a reload of ours and an earlier one may
	// overlap, and a new pid would not say whose file it loaded.
	if t.running.confirmed {
		if st.pid != 0 {
			t.running.pid = st.pid // read by this apply already (twin layout)
		} else if pid, err := t.c.runtimePID(ctx); err == nil {
			t.running.pid = pid
		}
	}
	if text := st.fileText(); text != "" {
		t.running.before = text
		return
	}
	text, v, err := t.c.GetRawConfig(ctx)
	if err != nil || v != st.version {
		t.log.Debug("could not keep the running file before a write; a refused file will not be put back", zap.Error(err))
		return
	}
	t.running.before = text
}

// refused handles a file HAProxy did not load (its reload failed, or the
// running HAProxy never came to serve it): it posts back the file the
// running HAProxy serves (the real API restores its previous file after a
// failed reload but keeps the failed one parsed) and watches that reload.
// When it succeeds, the new content is what HAProxy refused: the error is
// marked rejected, so the controller holds back the clusters causing it and
// applies the rest. When it fails too, or the running file is unknown, the
// reload itself is broken: the error stays a plain one (retried with
// backoff). Call with t.mu held.
func (t *Target) refused(ctx context.Context, desired []services.Service, res target.Result, cause error) (target.Result, error) {
	before := t.running.before
	t.running.before = ""
	t.running.confirmed = false
	t.forgetSnapshot()
	if before == "" {
		return res, cause
	}
	// The process running now runs the file put back already; the reload
	// of it replaces that process, from a state dump made when it starts.
	pid0, perr := t.c.runtimePID(ctx)
	v, err := t.c.GetVersion(ctx)
	if err != nil {
		return res, fmt.Errorf("%w; putting back the running file: read version: %v", cause, err)
	}
	m, err := t.c.PostRawConfig(ctx, v, before)
	if err != nil {
		return res, fmt.Errorf("%w; putting back the running file: %v", cause, err)
	}
	back, err := t.followReload(ctx, m, target.Result{})
	if err != nil || (back.Reloaded && back.ReloadResult != "succeeded") {
		return res, fmt.Errorf("%w; the reload of the file HAProxy runs did not succeed either (%s, %v): the reload itself fails",
			cause, back.ReloadResult, err)
	}
	t.running.rawNext = false
	if perr == nil && back.Reloaded {
		t.waitReplaced(ctx, pid0)
	}
	t.log.Warn("HAProxy refused the new configuration; the file it runs was put back",
		zap.Int64("version", m.Version), zap.Error(cause))
	why := ""
	if binds := t.bindProblems(ctx, desired); len(binds) > 0 {
		why = " (" + strings.Join(binds, "; ") + ")"
	}
	return res, target.Reject(fmt.Errorf("%w; HAProxy refused it%s and keeps running the previous configuration (file put back)", cause, why))
}

// waitReplaced waits, at most ReloadTimeout, until the running HAProxy is
// no longer process pid0: a reload command may return before HAProxy's
// master replaced its workers (a master-CLI reload is asynchronous), and
// the runtime changes the next apply makes in the old process before then
// are lost (the new one starts from the state dumped by the reload).
func (t *Target) waitReplaced(ctx context.Context, pid0 int64) {
	left, err := t.poll(ctx, func() (string, error) {
		pid, err := t.c.runtimePID(ctx)
		switch {
		case err != nil:
			return fmt.Sprintf("the running HAProxy's process: %v", err), nil
		case pid == pid0:
			return fmt.Sprintf("the running HAProxy is still process %d", pid0), nil
		}
		t.adminAdopt(pid)
		return "", nil
	})
	if left != "" || err != nil {
		t.log.Warn("the reload of the file put back has not replaced the running HAProxy yet",
			zap.String("left", left), zap.Error(err), zap.Duration("waited", t.opts.ReloadTimeout))
	}
}

// bindProblems names the desired services whose bind cannot listen, when
// the API's HAProxy runs on this machine (the API's URL names a loopback
// or local address): HAProxy's master does not tell the API which bind
// failed, and the operator and the hold-back report need the service.
// Only the services the running HAProxy does not serve are tried, each
// for an instant; only "address in use" and "not available" count.
func (t *Target) bindProblems(ctx context.Context, desired []services.Service) []string {
	if !localHost(t.c.base.Hostname()) {
		return nil
	}
	stats, err := t.c.runningStats(ctx)
	if err != nil {
		return nil
	}
	running := map[string]bool{}
	for _, s := range stats {
		if s.Type == "frontend" {
			running[s.Name] = true
		}
	}
	var out []string
	for _, d := range desired {
		if running[d.Name] {
			continue
		}
		if p := target.BindProblem(d); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// localHost reports whether host is this machine: a loopback address,
// localhost, or an address of one of its interfaces.
func localHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// applyFailed notes an apply error: a commit whose reload failed or was
// not seen to finish leaves the running HAProxy unconfirmed, and the parsed
// copy of the file (read once) is dropped, as the commit moved the file.
// Call with t.mu held.
func (t *Target) applyFailed(res target.Result, err error) {
	if res.Reloaded || errors.Is(err, ErrReloadFailed) {
		t.running.confirmed = false
		t.forgetSnapshot()
	}
	if errors.Is(err, ErrReloadFailed) || (IsConflict(err) && !t.running.confirmed) {
		t.running.rawNext = true
	}
}

// ErrNotRunning is wrapped when the running HAProxy does not serve the
// configuration the API holds (a failed or lost reload), even after a
// reload the controller asked for.
var ErrNotRunning = errors.New("the running HAProxy does not serve its configuration")

// confirmRunning makes "in sync" mean the running HAProxy serves desired:
// after an apply whose reload did not succeed before our eyes (and on the
// first apply), it reads the running HAProxy's servers (native stats: the
// live process, not the file); when they differ from desired, it asks the
// API for a reload (the same file, posted again) and reads them again. Any
// doubt is an error, so the worker reports the target failing and retries
// with backoff; a reload that succeeded while we watched needs no read.
// Call with t.mu held.
func (t *Target) confirmRunning(ctx context.Context, desired []services.Service, res target.Result) (target.Result, error) {
	if res.Reloaded {
		t.running.rawNext = false
		if res.ReloadResult == "in_progress" {
			t.running.confirmed = false
			return res, fmt.Errorf("apply %s: reload %s not finished after %s: %w (retrying)",
				t.Name(), res.ReloadID, t.opts.ReloadTimeout, ErrNotRunning)
		}
		// A reload command that exits 0 does not mean HAProxy loaded the
		// file: HAProxy 2.6's master reloads asynchronously, and a bind
		// that fails (which `haproxy -c` cannot see) leaves the old
		// workers serving the old file. Watch the running HAProxy come to
		// serve what was written (awaitReload did, before the runtime
		// changes of the apply).
		var diff string
		var err error
		if w := t.running.waited; w != nil {
			diff, err = w.diff, w.err
		} else {
			var pid int64
			diff, pid, err = t.waitReloaded(ctx, desired)
			if pid != 0 && ((err == nil && diff == "") || errors.Is(err, errNoNativeStats)) {
				t.adminAdopt(pid)
			}
		}
		t.running.waited = nil
		switch {
		case (err == nil && diff == "") || errors.Is(err, errNoNativeStats):
			t.running.confirmed, t.running.before = true, ""
			return res, nil
		case err != nil:
			t.running.confirmed, t.running.before = false, ""
			return res, fmt.Errorf("apply %s: read the running HAProxy after reload %s: %w", t.Name(), res.ReloadID, err)
		}
		return t.refused(ctx, desired, res, fmt.Errorf("apply %s: reload %s: %w after %s: %s",
			t.Name(), res.ReloadID, ErrNotRunning, t.opts.ReloadTimeout, diff))
	}
	if t.running.confirmed {
		return res, nil
	}
	diff, err := t.runningDiff(ctx, desired)
	if s := statusOf(err); s == http.StatusNotFound || s == http.StatusNotImplemented {
		// An API without native stats (a test double): nothing to read back.
		t.log.Warn("cannot read the running HAProxy's servers through this API; trusting its reloads", zap.Error(err))
		t.running.confirmed = true
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("apply %s: read the running HAProxy: %w", t.Name(), err)
	}
	if diff == "" {
		t.running.confirmed = true
		return res, nil
	}
	t.log.Warn("the running HAProxy does not serve its configuration (a reload failed or was lost): reloading",
		zap.String("difference", diff))
	text, v, err := t.c.GetRawConfig(ctx)
	if err == nil {
		var m Meta
		if m, err = t.c.PostRawConfig(ctx, v, text); err == nil {
			res, err = t.followReload(ctx, m, res)
		}
	}
	t.forgetSnapshot()
	if err != nil {
		return res, fmt.Errorf("apply %s: %w (%s); reload: %w", t.Name(), ErrNotRunning, diff, err)
	}
	// The reload command returns before the new worker serves: poll.
	if diff, err = t.waitRunning(ctx, desired); err != nil || diff != "" {
		if err != nil {
			return res, fmt.Errorf("apply %s: %w after reload %s: %s (%w)", t.Name(), ErrNotRunning, res.ReloadID, diff, err)
		}
		return res, fmt.Errorf("apply %s: %w after reload %s: %s", t.Name(), ErrNotRunning, res.ReloadID, diff)
	}
	t.running.confirmed = true
	t.log.Info("the running HAProxy serves its configuration again", zap.String("reload_id", res.ReloadID))
	return res, nil
}

// errNoNativeStats: the API cannot read the running HAProxy's stats (a
// test double without them): its reloads are trusted.
var errNoNativeStats = errors.New("no native stats")

// awaitReload watches, after a write whose reload the API reports done,
// the running HAProxy come to serve the new file (waitReloaded) before any
// runtime change goes: a reload command may exit before the new worker
// serves (`systemctl reload`, a master slow to load a large file), and a
// flip or a forced health sent to the old worker after the command dumped
// the server-state file never reaches the new one (the states it keeps
// would be read from the old one too). With the shipped reload script,
// which waits for the master, the new process answers the first GET (the
// one confirmRunning made after the runtime changes, now made before
// them): no request is added.
// It records what it found for confirmRunning and returns the process the
// runtime changes go to (0: unknown) and whether the new file is served;
// when not (not within ReloadTimeout, or a reload not seen done), no
// runtime change may go, and the next process to answer is read whole (its
// states are not the controller's). Call with t.mu held.
func (t *Target) awaitReload(ctx context.Context, desired []services.Service, res target.Result) (int64, bool) {
	if res.ReloadResult != "succeeded" {
		t.adminUnadopt()
		return 0, false
	}
	diff, pid, err := t.waitReloaded(ctx, desired)
	t.running.waited = &reloadWait{diff: diff, err: err}
	if (err == nil && diff == "") || errors.Is(err, errNoNativeStats) {
		if pid != 0 {
			t.adminAdopt(pid)
		}
		return pid, true
	}
	t.adminUnadopt()
	return 0, false
}

// waitReloaded waits, at most ReloadTimeout, for the running HAProxy to
// serve the file just written. HAProxy forks new workers only once its
// master loaded the new file whole, so when the process the runtime socket
// answers from is known from before the write and the running HAProxy was
// confirmed, a new process proves it: one small GET per poll, whatever the
// fleet's size (the whole running state, GET /stats/native, took 10 s
// through the API at 1,000 clusters). Unconfirmed (an earlier reload may
// have been lost or put back), a new process is waited for when the one
// before is known, then the running servers are compared with desired
// (waitRunning). It returns what still differs ("" when served) and the
// new process (0: not read).
func (t *Target) waitReloaded(ctx context.Context, desired []services.Service) (string, int64, error) {
	pid0, before := t.running.pid, t.running.pidBefore
	if pid0 > 0 {
		before = pid0
	}
	var moved int64
	running := t.runningCheck(ctx, desired)
	left, err := t.poll(ctx, func() (string, error) {
		if before > 0 && moved == 0 {
			pid, err := t.c.runtimePID(ctx)
			switch {
			case err != nil:
				// The new worker may not answer yet: keep polling.
				return fmt.Sprintf("the running HAProxy's process: %v", err), nil
			case pid == before:
				return fmt.Sprintf("the running HAProxy is still %s, from before the reload (its master did not load the new file)", procName(before)), nil
			}
			moved = pid
			if pid0 > 0 {
				return "", nil
			}
		}
		return running()
	})
	return left, moved, err
}

// waitRunning polls the running HAProxy until it serves desired, at most
// ReloadTimeout; it returns the last difference seen ("" when it serves),
// or errNoNativeStats when the API cannot read it.
func (t *Target) waitRunning(ctx context.Context, desired []services.Service) (string, error) {
	return t.poll(ctx, t.runningCheck(ctx, desired))
}

// runningCheck is one poll of waitRunning.
func (t *Target) runningCheck(ctx context.Context, desired []services.Service) func() (string, error) {
	return func() (string, error) {
		diff, err := t.runningDiff(ctx, desired)
		if s := statusOf(err); s == http.StatusNotFound || s == http.StatusNotImplemented {
			t.log.Warn("cannot read the running HAProxy's servers through this API; trusting its reloads", zap.Error(err))
			return "", errNoNativeStats
		}
		if err != nil {
			// The new worker may not answer yet: keep polling.
			return err.Error(), nil
		}
		return diff, nil
	}
}

// poll calls check every ReloadPollInterval until it reports nothing left
// ("") or an error, at most ReloadTimeout; it returns what check last
// reported left, with ctx's error when ctx ended first.
func (t *Target) poll(ctx context.Context, check func() (string, error)) (string, error) {
	deadline := time.NewTimer(t.opts.ReloadTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(t.opts.ReloadPollInterval)
	defer tick.Stop()
	for {
		left, err := check()
		if err != nil || left == "" {
			return left, err
		}
		select {
		case <-ctx.Done():
			return left, ctx.Err()
		case <-deadline.C:
			return left, nil
		case <-tick.C:
		}
	}
}

// forgetSnapshot drops the parsed configuration: our own raw POST moved
// the version.
func (t *Target) forgetSnapshot() {
	t.snapMu.Lock()
	t.snap = nil
	t.snapMu.Unlock()
}

// nativeStat is one row of GET /services/haproxy/stats/native.
type nativeStat struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	BackendName string `json:"backend_name"`
	Stats       struct {
		Addr   string `json:"addr"`
		Bck    *int64 `json:"bck"`
		Status string `json:"status"`
		// Tracked: "backend/server" a tracker follows, "" for none.
		Tracked string `json:"tracked"`
	} `json:"stats"`
}

// nativeDocs is the answer of GET /stats/native: v2 answers a list of
// per-process documents, v3 one. do decodes it as it is read
// (decodeStream): at 1,000 clusters the answer is ~14 MB.
type nativeDocs []nativeDoc

type nativeDoc struct {
	Error string       `json:"error"`
	Stats []nativeStat `json:"stats"`
}

// decodeStream decodes an answer of GET /stats/native as it is read,
// one row at a time: at 1,000 clusters the answer is ~14 MB, sent chunked,
// so reading it whole took ~20 MB of buffers (io.ReadAll's growth) for
// the read after every reload, the controller's greatest memory of a
// fleet's first apply. The rows are those json.Unmarshal gives (see
// the tests' unmarshalNative): keys matched as encoding/json matches them, a later
// key winning, unknown keys skipped.
func (d *nativeDocs) decodeStream(r io.Reader) error {
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err == io.EOF {
		return nil // an empty answer: no documents, as do leaves it
	}
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		var one nativeDoc
		if err := one.decodeFields(dec); err != nil {
			return err
		}
		*d = nativeDocs{one}
	case json.Delim('['):
		docs := nativeDocs{}
		for dec.More() {
			var doc nativeDoc
			if t, err := dec.Token(); err != nil {
				return err
			} else if t == nil {
				docs = append(docs, doc) // null: a zero document, as Unmarshal makes it
				continue
			} else if t != json.Delim('{') {
				return fmt.Errorf("native stats: a document is %v, not an object", t)
			}
			if err := doc.decodeFields(dec); err != nil {
				return err
			}
			docs = append(docs, doc)
		}
		if _, err := dec.Token(); err != nil { // ']'
			return err
		}
		*d = docs
	case nil:
		*d = nil
	default:
		return fmt.Errorf("native stats: the answer is %v, neither a list nor an object", tok)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("native stats: data after the answer")
	}
	return nil
}

// decodeFields decodes the fields of a document whose '{' dec read.
func (doc *nativeDoc) decodeFields(dec *json.Decoder) error {
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		switch {
		case strings.EqualFold(key, "error"):
			if err := dec.Decode(&doc.Error); err != nil {
				return err
			}
		case strings.EqualFold(key, "stats"):
			t, err := dec.Token()
			if err != nil {
				return err
			}
			if t == nil {
				doc.Stats = nil
				continue
			}
			if t != json.Delim('[') {
				return fmt.Errorf("native stats: stats is %v, not a list", t)
			}
			if doc.Stats == nil {
				doc.Stats = []nativeStat{} // as Unmarshal: [] is an empty list, not none
			}
			doc.Stats = doc.Stats[:0]
			for dec.More() {
				var s nativeStat
				if err := dec.Decode(&s); err != nil {
					return err
				}
				doc.Stats = append(doc.Stats, s)
			}
			if _, err := dec.Token(); err != nil { // ']'
				return err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return err
			}
		}
	}
	_, err := dec.Token() // '}'
	return err
}

// runningStats reads the running HAProxy's stats through the API (its
// runtime socket).
func (c *Client) runningStats(ctx context.Context) ([]nativeStat, error) {
	var docs nativeDocs
	if _, err := c.do(ctx, http.MethodGet, "/stats/native", nil, nil, &docs); err != nil {
		return nil, err
	}
	n := 0
	for _, d := range docs {
		if d.Error != "" {
			return nil, fmt.Errorf("native stats: %s", d.Error)
		}
		n += len(d.Stats)
	}
	if len(docs) == 1 {
		return docs[0].Stats, nil
	}
	out := make([]nativeStat, 0, n)
	for _, d := range docs {
		out = append(out, d.Stats...)
	}
	return out, nil
}

// runningDiff says how the running HAProxy differs from desired (frontends,
// and each backend's servers with their address, backup flag and the
// server they track), or "".
func (t *Target) runningDiff(ctx context.Context, desired []services.Service) (string, error) {
	stats, err := t.c.runningStats(ctx)
	if err != nil {
		return "", err
	}
	diff := runningMismatch(stats, desired)
	if diff == "" {
		if out := trackersOutOfStep(stats, desired); len(out) > 0 {
			t.log.Warn("the running HAProxy has trackers out of step with the servers they track: resynchronizing them",
				zap.Strings("trackers", out))
			t.notePending(out, true)
		}
	}
	return diff, nil
}

// trackersOutOfStep returns the "backend/server" of the trackers of
// desired that the running HAProxy has UP under a tracked server DOWN, or
// the other way (stats: its native stats). A tracker mirrors the server it
// tracks from the moment it starts in the state of its own server-state
// line: a line dumped before it was a tracker (a controller stopped
// between the reload that made the trackers and their resync, an HAProxy
// restarted from such a file) leaves it so (see resyncTrackers). A server
// in maintenance or drain on either side is left out (a tracker shows
// those of the server it tracks).
func trackersOutOfStep(stats []nativeStat, desired []services.Service) []string {
	up := map[string]bool{} // "backend/server" -> UP (absent: neither UP nor DOWN)
	for _, s := range stats {
		if s.Type != "server" {
			continue
		}
		switch w, _, _ := strings.Cut(s.Stats.Status, " "); w {
		case "UP", "no": // "UP", "UP 1/3" (going down), "no check"
			up[s.BackendName+"/"+s.Name] = true
		case "DOWN": // "DOWN", "DOWN 1/2" (going up)
			up[s.BackendName+"/"+s.Name] = false
		}
	}
	var out []string
	for _, d := range desired {
		for _, sv := range d.Servers {
			if sv.Track == "" {
				continue
			}
			k := d.Name + "/" + sv.Name
			mine, ok1 := up[k]
			theirs, ok2 := up[sv.Track]
			if ok1 && ok2 && mine != theirs {
				out = append(out, k)
			}
		}
	}
	return out
}

func runningMismatch(stats []nativeStat, desired []services.Service) string {
	fe := map[string]bool{}
	type srv struct {
		addr, tracked string
		bck           bool
	}
	servers := map[string]map[string]srv{}
	for _, s := range stats {
		switch s.Type {
		case "frontend":
			fe[s.Name] = true
		case "server":
			if servers[s.BackendName] == nil {
				servers[s.BackendName] = map[string]srv{}
			}
			servers[s.BackendName][s.Name] = srv{addr: s.Stats.Addr, tracked: s.Stats.Tracked, bck: s.Stats.Bck != nil && *s.Stats.Bck != 0}
		}
	}
	var diffs []string
	for _, d := range desired {
		if !fe[d.Name] {
			diffs = append(diffs, "frontend "+d.Name+" not running")
		}
		run := servers[d.Name]
		want := map[string]bool{}
		for _, sv := range d.Servers {
			want[sv.Name] = true
			r, ok := run[sv.Name]
			addr := sv.Address + ":" + strconv.Itoa(sv.Port)
			switch {
			case !ok:
				diffs = append(diffs, fmt.Sprintf("server %s/%s not running", d.Name, sv.Name))
			case r.addr != "" && r.addr != addr:
				diffs = append(diffs, fmt.Sprintf("server %s/%s runs at %s, want %s", d.Name, sv.Name, r.addr, addr))
			case r.bck != sv.Backup:
				diffs = append(diffs, fmt.Sprintf("server %s/%s runs with backup %t, want %t", d.Name, sv.Name, r.bck, sv.Backup))
			case r.tracked != sv.Track:
				// (A reload still to come: the running HAProxy checks a
				// server the file makes a tracker, or the other way.)
				diffs = append(diffs, fmt.Sprintf("server %s/%s runs tracking %q, want %q", d.Name, sv.Name, r.tracked, sv.Track))
			}
		}
		for name := range run {
			if !want[name] {
				diffs = append(diffs, fmt.Sprintf("server %s/%s still running", d.Name, name))
			}
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 5 {
		diffs = append(diffs[:5], fmt.Sprintf("and %d more", len(diffs)-5))
	}
	return strings.Join(diffs, "; ")
}

package dataplaneapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
		t.running.confirmed = res.ReloadResult == "succeeded"
		if res.ReloadResult == "in_progress" {
			return res, fmt.Errorf("apply %s: reload %s not finished after %s: %w (retrying)",
				t.Name(), res.ReloadID, t.opts.ReloadTimeout, ErrNotRunning)
		}
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
	deadline := time.NewTimer(t.opts.ReloadTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(t.opts.ReloadPollInterval)
	defer tick.Stop()
	for {
		if diff, err = t.runningDiff(ctx, desired); err == nil && diff == "" {
			break
		}
		if err != nil {
			diff = err.Error()
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("apply %s: %w after reload %s: %s (%w)", t.Name(), ErrNotRunning, res.ReloadID, diff, ctx.Err())
		case <-deadline.C:
			return res, fmt.Errorf("apply %s: %w after reload %s: %s", t.Name(), ErrNotRunning, res.ReloadID, diff)
		case <-tick.C:
		}
	}
	t.running.confirmed = true
	t.log.Info("the running HAProxy serves its configuration again", zap.String("reload_id", res.ReloadID))
	return res, nil
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
	} `json:"stats"`
}

// runningStats reads the running HAProxy's stats through the API (its
// runtime socket). v2 answers a list of per-process documents, v3 one.
func (c *Client) runningStats(ctx context.Context) ([]nativeStat, error) {
	var raw json.RawMessage
	if _, err := c.do(ctx, http.MethodGet, "/stats/native", nil, nil, &raw); err != nil {
		return nil, err
	}
	type doc struct {
		Error string       `json:"error"`
		Stats []nativeStat `json:"stats"`
	}
	var docs []doc
	if err := json.Unmarshal(raw, &docs); err != nil {
		var one doc
		if err2 := json.Unmarshal(raw, &one); err2 != nil {
			return nil, fmt.Errorf("decode native stats: %w", err)
		}
		docs = []doc{one}
	}
	var out []nativeStat
	for _, d := range docs {
		if d.Error != "" {
			return nil, fmt.Errorf("native stats: %s", d.Error)
		}
		out = append(out, d.Stats...)
	}
	return out, nil
}

// runningDiff says how the running HAProxy differs from desired (frontends,
// and each backend's servers with their address and backup flag), or "".
func (t *Target) runningDiff(ctx context.Context, desired []services.Service) (string, error) {
	stats, err := t.c.runningStats(ctx)
	if err != nil {
		return "", err
	}
	return runningMismatch(stats, desired), nil
}

func runningMismatch(stats []nativeStat, desired []services.Service) string {
	fe := map[string]bool{}
	type srv struct {
		addr string
		bck  bool
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
			servers[s.BackendName][s.Name] = srv{addr: s.Stats.Addr, bck: s.Stats.Bck != nil && *s.Stats.Bck != 0}
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

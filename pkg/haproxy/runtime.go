// Package haproxy drives a local HAProxy 2.6 directly, without the Data Plane
// API: its stats socket (runtime commands), its master socket (reloads), the
// server-state file that keeps health states across reloads, and the config
// file the controller owns. Direct implements target.Target on top of them;
// Process starts a master-worker HAProxy for tests and the demo.
package haproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgsvc/pgsvc/pkg/target"
)

// DefaultTimeout bounds one socket command when Runtime.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Runtime talks to one HAProxy's UNIX sockets: the stats socket (which must be
// `level admin` for set commands) and, for reloads, the master socket of a
// master-worker (-W -S) HAProxy. One command per connection: HAProxy closes a
// non-interactive stats connection after answering, and the master CLI closes
// once we shut our write side.
type Runtime struct {
	// Socket is the stats socket path.
	Socket string
	// MasterSocket is the master CLI socket path ("" = reloads unsupported).
	MasterSocket string
	// Timeout bounds each command (DefaultTimeout when 0); ctx may shorten it.
	Timeout time.Duration
	// beforePipeline, when set, sees every pipelined batch right before it
	// is sent (tests: the order of the commands, and what runs between
	// two batches). It may be called from several goroutines at once.
	beforePipeline func(cmds []string)
}

// Exec sends one command line to the stats socket and returns the whole answer.
func (r *Runtime) Exec(ctx context.Context, cmd string) (string, error) {
	return r.exec(ctx, r.Socket, cmd)
}

// ExecMaster sends one command line to the master socket.
func (r *Runtime) ExecMaster(ctx context.Context, cmd string) (string, error) {
	if r.MasterSocket == "" {
		return "", errors.New("no master socket configured")
	}
	return r.exec(ctx, r.MasterSocket, cmd)
}

func (r *Runtime) exec(ctx context.Context, path, cmd string) (string, error) {
	if strings.ContainsAny(cmd, "\n\r") {
		return "", fmt.Errorf("command %q: contains a newline", cmd)
	}
	ctx, cancel, err := r.commandContext(ctx, cmd)
	if err != nil {
		return "", fmt.Errorf("haproxy socket %s: %s: %w", path, firstWord(cmd), err)
	}
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return "", fmt.Errorf("haproxy socket %s: %w", path, err)
	}
	defer conn.Close()
	// Cancellation unblocks reads and writes by moving the deadline into
	// the past; the ctx deadline itself bounds the whole exchange.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", fmt.Errorf("haproxy socket %s: %s: %w", path, firstWord(cmd), ctxErr(ctx, err))
	}
	// The master CLI keeps the connection open until it sees EOF.
	if uc, ok := conn.(*net.UnixConn); ok {
		_ = uc.CloseWrite()
	}
	out, err := io.ReadAll(conn)
	if err != nil {
		return string(out), fmt.Errorf("haproxy socket %s: %s: %w", path, firstWord(cmd), ctxErr(ctx, err))
	}
	return string(out), nil
}

// commandContext bounds the exchange of cmds on ctx by the timeout. A write
// (anything but a show command), once sent, is waited for rather than
// abandoned when ctx is canceled (see target.SendContext).
func (r *Runtime) commandContext(ctx context.Context, cmds ...string) (context.Context, context.CancelFunc, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	for _, c := range cmds {
		if !strings.HasPrefix(c, "show ") {
			return target.SendContext(ctx, timeout)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	return ctx, cancel, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

func firstWord(cmd string) string {
	f := strings.Fields(cmd)
	if len(f) > 2 {
		return strings.Join(f[:2], " ")
	}
	return cmd
}

// execSet runs a command whose success answer is empty; any text is
// HAProxy's error message ("No such server.", "Require 'backend/server'.").
func (r *Runtime) execSet(ctx context.Context, cmd string) error {
	out, err := r.Exec(ctx, cmd)
	if err != nil {
		return err
	}
	if msg := strings.TrimSpace(out); msg != "" {
		return fmt.Errorf("haproxy: %s: %s", cmd, msg)
	}
	return nil
}

// SetWeight sets a server's user weight at runtime (lost at the next reload
// unless the config file or the server-state file carries it).
func (r *Runtime) SetWeight(ctx context.Context, backend, server string, weight int) error {
	if weight < 0 || weight > 256 {
		return fmt.Errorf("server %s/%s: weight %d out of range 0-256", backend, server, weight)
	}
	return r.execSet(ctx, fmt.Sprintf("set server %s/%s weight %d", backend, server, weight))
}

// SetState sets a server's admin state: "ready", "maint" or "drain".
// "ready" makes a server UP at once, before any check; "maint" cuts its
// sessions when the server has on-marked-down shutdown-sessions.
func (r *Runtime) SetState(ctx context.Context, backend, server, state string) error {
	switch state {
	case "ready", "maint", "drain":
	default:
		return fmt.Errorf("server %s/%s: state %q: want ready, maint or drain", backend, server, state)
	}
	return r.execSet(ctx, fmt.Sprintf("set server %s/%s state %s", backend, server, state))
}

// ShowServersState returns the raw `show servers state` answer, the format
// HAProxy's server-state-file expects.
func (r *Runtime) ShowServersState(ctx context.Context) (string, error) {
	out, err := r.Exec(ctx, "show servers state")
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(out, "1\n") {
		return "", fmt.Errorf("show servers state: unexpected answer %q", truncate(out, 120))
	}
	return out, nil
}

// Stat row types (the `type` column of show stat).
const (
	TypeFrontend = 0
	TypeBackend  = 1
	TypeServer   = 2
)

// StatRow is one row of `show stat`.
type StatRow struct {
	Proxy string // pxname
	Name  string // svname: FRONTEND, BACKEND or the server name
	Type  int    // TypeFrontend, TypeBackend, TypeServer
	// Status is OPEN, UP, DOWN, "UP 1/3", "DOWN 1/2", MAINT, DRAIN, no check...
	Status string
	// Weight is the user weight (uweight) for servers; the effective weight
	// during slowstart is EffectiveWeight.
	Weight          int
	EffectiveWeight int
	Active          bool // act
	Backup          bool // bck
	Addr            string
	Port            int
	CheckStatus     string // L7OK, L4CON, INI, ...
	CheckDesc       string
	CurrentSessions int // scur
	TotalSessions   int // stot
}

// Up reports whether the server takes traffic according to its status.
func (s StatRow) Up() bool {
	return strings.HasPrefix(s.Status, "UP") || s.Status == "no check" || s.Status == "DRAIN"
}

// ShowStat runs `show stat` and returns its rows.
func (r *Runtime) ShowStat(ctx context.Context) ([]StatRow, error) {
	out, err := r.Exec(ctx, "show stat")
	if err != nil {
		return nil, err
	}
	return ParseStat(out)
}

// ParseStat parses `show stat` CSV output. Columns are found by the header
// line, so added columns in other HAProxy versions don't break it.
func ParseStat(out string) ([]StatRow, error) {
	lines := strings.Split(out, "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "# ") {
		return nil, fmt.Errorf("show stat: no header line in %q", truncate(out, 120))
	}
	col := map[string]int{}
	for i, name := range strings.Split(strings.TrimPrefix(lines[0], "# "), ",") {
		col[name] = i
	}
	for _, need := range []string{"pxname", "svname", "status", "weight", "bck", "type", "addr"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("show stat: header lacks column %q", need)
		}
	}
	var rows []StatRow
	for n, line := range lines[1:] {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Split(line, ",")
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(f) {
				return f[i]
			}
			return ""
		}
		atoi := func(name string) int { v, _ := strconv.Atoi(get(name)); return v }
		typ, err := strconv.Atoi(get("type"))
		if err != nil {
			return nil, fmt.Errorf("show stat: line %d: bad type %q", n+2, get("type"))
		}
		row := StatRow{
			Proxy: get("pxname"), Name: get("svname"), Type: typ, Status: get("status"),
			EffectiveWeight: atoi("weight"), Active: get("act") == "1", Backup: get("bck") == "1",
			CheckStatus: get("check_status"), CheckDesc: get("check_desc"),
			CurrentSessions: atoi("scur"), TotalSessions: atoi("stot"),
		}
		row.Weight = row.EffectiveWeight
		if _, ok := col["uweight"]; ok && get("uweight") != "" {
			row.Weight = atoi("uweight")
		}
		if a := get("addr"); a != "" {
			host, port, err := net.SplitHostPort(a)
			if err != nil {
				return nil, fmt.Errorf("show stat: line %d: server %s/%s: bad addr %q", n+2, row.Proxy, row.Name, a)
			}
			row.Addr = host
			row.Port, _ = strconv.Atoi(port)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// ProcInfo is the master's `show proc`.
type ProcInfo struct {
	MasterPID int
	// Reloads is the master's reload counter; FailedReloads counts reloads
	// whose new config did not load.
	Reloads       int
	FailedReloads int
	// Workers are the current workers (the newest serves new connections).
	Workers []Proc
	// OldWorkers are leaving workers still finishing their sessions.
	OldWorkers []Proc
}

// Proc is one worker line of `show proc`.
type Proc struct {
	PID     int
	Reloads int // reloads this worker has survived
	Uptime  string
}

// ShowProc runs `show proc` on the master socket.
func (r *Runtime) ShowProc(ctx context.Context) (ProcInfo, error) {
	out, err := r.ExecMaster(ctx, "show proc")
	if err != nil {
		return ProcInfo{}, err
	}
	return ParseProc(out)
}

// ParseProc parses the master's `show proc` answer (HAProxy 2.6 format:
// "<pid> master <reloads> [failed: N] <uptime> <version>", then "# workers",
// optional "# old workers" and "# programs" blocks).
func ParseProc(out string) (ProcInfo, error) {
	var p ProcInfo
	section := ""
	sawMaster := false
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "#"):
			section = strings.TrimSpace(strings.TrimPrefix(line, "#"))
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		switch f[1] {
		case "master":
			p.MasterPID = pid
			p.Reloads, _ = strconv.Atoi(f[2])
			if i := strings.Index(line, "failed: "); i >= 0 {
				rest := line[i+len("failed: "):]
				if j := strings.IndexByte(rest, ']'); j >= 0 {
					p.FailedReloads, _ = strconv.Atoi(rest[:j])
				}
			}
			sawMaster = true
		case "worker":
			w := Proc{PID: pid}
			w.Reloads, _ = strconv.Atoi(f[2])
			if len(f) > 3 {
				w.Uptime = f[3]
			}
			if section == "old workers" {
				p.OldWorkers = append(p.OldWorkers, w)
			} else {
				p.Workers = append(p.Workers, w)
			}
		}
	}
	if !sawMaster {
		return p, fmt.Errorf("show proc: no master line in %q", truncate(out, 160))
	}
	return p, nil
}

// WorkerPID returns the PID of the worker answering on the stats socket.
func (r *Runtime) WorkerPID(ctx context.Context) (int, error) {
	w, err := r.ShowWorker(ctx)
	return w.PID, err
}

// Worker is what one `show info` tells of the worker answering the stats
// socket.
type Worker struct {
	PID int
	// Uptime is its Uptime_sec: whole seconds since the worker started (a
	// reload's new worker starts again at 0); -1 when the answer has none.
	Uptime int64
	// Sent and Received bound when HAProxy answered: right before the
	// command was sent, right after its answer was read (time.Now, with
	// its monotonic reading).
	Sent, Received time.Time
}

// ShowWorker runs `show info` and returns its Pid and Uptime_sec.
func (r *Runtime) ShowWorker(ctx context.Context) (Worker, error) {
	sent := time.Now()
	out, err := r.Exec(ctx, "show info")
	if err != nil {
		return Worker{}, err
	}
	w, err := ParseWorker(out)
	w.Sent, w.Received = sent, time.Now()
	return w, err
}

// ParseWorker reads Pid and Uptime_sec from a `show info` answer (Uptime
// -1 when it has none; no Pid is an error).
func ParseWorker(out string) (Worker, error) {
	w := Worker{Uptime: -1}
	havePID := false
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Pid: "); ok {
			pid, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return w, fmt.Errorf("show info: Pid: %w", err)
			}
			w.PID, havePID = pid, true
		} else if v, ok := strings.CutPrefix(line, "Uptime_sec: "); ok {
			if up, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && up >= 0 {
				w.Uptime = up
			}
		}
	}
	if !havePID {
		return w, fmt.Errorf("show info: no Pid line")
	}
	return w, nil
}

// ReloadPollInterval is how often Reload polls the master and stats sockets.
const ReloadPollInterval = 20 * time.Millisecond

// Reload asks the master to reload and waits until it has: the reload
// counter moved past before, the master did not count a failure, and the
// stats socket is answered by a new worker. HAProxy 2.6's `reload` is
// asynchronous and prints nothing, and the master re-executes itself, so its
// socket refuses or answers nothing for a moment: errors are retried until
// ctx ends. Reload returns the master's state after the reload; a reload
// whose new config failed to load returns ErrReloadFailed (the old worker
// keeps serving).
func (r *Runtime) Reload(ctx context.Context) (ProcInfo, error) {
	before, err := r.retryShowProc(ctx)
	if err != nil {
		return ProcInfo{}, fmt.Errorf("reload: read master state: %w", err)
	}
	oldWorkers := map[int]bool{}
	for _, w := range before.Workers {
		oldWorkers[w.PID] = true
	}
	if _, err := r.ExecMaster(ctx, "reload"); err != nil {
		return ProcInfo{}, fmt.Errorf("reload: %w", err)
	}
	t := time.NewTicker(ReloadPollInterval)
	defer t.Stop()
	var last error
	for {
		after, err := r.ShowProc(ctx)
		switch {
		case err != nil:
			last = err // the master is re-executing; try again
		case after.FailedReloads > before.FailedReloads:
			return after, fmt.Errorf("%w: master reload counter %d, failed %d", ErrReloadFailed, after.Reloads, after.FailedReloads)
		case after.Reloads <= before.Reloads:
			last = fmt.Errorf("master reload counter still %d", after.Reloads)
		default:
			pid, err := r.WorkerPID(ctx)
			switch {
			case err != nil:
				last = err
			case oldWorkers[pid]:
				last = fmt.Errorf("stats socket still answered by old worker %d", pid)
			default:
				return after, nil
			}
		}
		select {
		case <-ctx.Done():
			return ProcInfo{}, fmt.Errorf("reload: waiting for the new worker: %w (last: %v)", ctx.Err(), last)
		case <-t.C:
		}
	}
}

// ErrReloadFailed means HAProxy's master counted the reload as failed.
var ErrReloadFailed = errors.New("haproxy reload failed")

func (r *Runtime) retryShowProc(ctx context.Context) (ProcInfo, error) {
	t := time.NewTicker(ReloadPollInterval)
	defer t.Stop()
	for {
		p, err := r.ShowProc(ctx)
		if err == nil {
			return p, nil
		}
		if !retryable(err) {
			return p, err
		}
		select {
		case <-ctx.Done():
			return p, fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// retryable: the master socket refuses or answers empty while the master
// re-executes after a reload.
func retryable(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) ||
		errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || strings.Contains(err.Error(), "no master line")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

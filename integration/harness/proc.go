package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one process the harness started. PID and StartTime identify it:
// the start time (field 22 of /proc/<pid>/stat) guards against signalling a
// recycled PID when a process is stopped from a state file much later.
type proc struct {
	Name      string `json:"name"`
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
	Log       string `json:"log"`

	// done is closed once this process has been reaped; nil for a process
	// adopted from a state file (another process is, or was, its parent).
	done chan struct{}
}

// asPostgres prefixes argv so that it runs as the postgres user. setpriv and
// env both exec in place, so the PID we get is the final program's PID.
func asPostgres(argv ...string) []string {
	return append([]string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
		"env", "HOME=/var/lib/postgresql"}, argv...)
}

// baseEnv is a small, predictable environment: the caller's may carry a
// pyenv python3 shim or PG* variables that would change what runs.
func baseEnv() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8",
		"LC_ALL=C.UTF-8",
	}
}

// startProc starts argv detached in its own process group (so it survives
// the caller's exit and terminal signals), output appended to logPath.
func startProc(name string, argv []string, logPath string) (*proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: open log: %w", name, err)
	}
	defer lf.Close() // the child holds its own copy of the descriptor
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = baseEnv()
	cmd.Dir = filepath.Dir(logPath)
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, strings.Join(argv, " "), err)
	}
	p := &proc{Name: name, PID: cmd.Process.Pid, Log: logPath, done: make(chan struct{})}
	p.StartTime, _ = procStartTime(p.PID)
	go func() {
		// Reap the child so that a kill -9 leaves no zombie behind.
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// alive reports whether the process still runs (a zombie counts as gone).
func (p *proc) alive() bool {
	if p == nil || p.PID <= 0 {
		return false
	}
	if p.done != nil {
		select {
		case <-p.done:
			return false
		default:
			return true
		}
	}
	st, state, err := procStat(p.PID)
	if err != nil || state == 'Z' {
		return false
	}
	return p.StartTime == 0 || st == p.StartTime
}

// signal sends sig if the process is still the one we started.
func (p *proc) signal(sig syscall.Signal) error {
	if !p.alive() {
		return nil
	}
	if err := syscall.Kill(p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s (pid %d): %w", p.Name, p.PID, err)
	}
	return nil
}

// wait polls until the process is gone or ctx ends.
func (p *proc) wait(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for p.alive() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s (pid %d) to exit: %w", p.Name, p.PID, ctx.Err())
		case <-p.done:
		case <-t.C:
		}
	}
	return nil
}

// stop sends sig (the program's "shut down now, cleanly" signal), waits up
// to grace, then SIGKILLs and waits again.
func (p *proc) stop(ctx context.Context, sig syscall.Signal, grace time.Duration) error {
	if !p.alive() {
		return nil
	}
	if err := p.signal(sig); err != nil {
		return err
	}
	gctx, cancel := context.WithTimeout(ctx, grace)
	err := p.wait(gctx)
	cancel()
	if err == nil {
		return nil
	}
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return p.wait(kctx)
}

// procStat returns the start time and state letter of pid from /proc.
func procStat(pid int) (uint64, byte, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// comm (field 2) may contain spaces and parentheses: parse after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fields := strings.Fields(string(b[i+2:]))
	// fields[0] is field 3 (state); field 22 (starttime) is fields[19].
	if len(fields) < 20 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	st, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: starttime: %w", pid, err)
	}
	return st, fields[0][0], nil
}

func procStartTime(pid int) (uint64, error) {
	st, _, err := procStat(pid)
	return st, err
}

// postmasterProc finds the postmaster of dataDir from its postmaster.pid and
// returns it only if that PID really is a postgres whose command line names
// dataDir, so that a stale pid file never makes us signal a stranger.
func postmasterProc(name, dataDir string) (*proc, error) {
	f, err := os.Open(filepath.Join(dataDir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("postmaster of %s: %w", name, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return nil, nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
	if err != nil || pid <= 0 {
		return nil, fmt.Errorf("postmaster of %s: %s: bad pid line %q", name, f.Name(), sc.Text())
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, nil // gone
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if len(args) == 0 || filepath.Base(args[0]) != "postgres" || !strings.Contains(string(cmdline), dataDir) {
		return nil, nil // PID reused by something else
	}
	st, state, err := procStat(pid)
	if err != nil || state == 'Z' {
		return nil, nil
	}
	return &proc{Name: name + "/postmaster", PID: pid, StartTime: st}, nil
}

// tail returns the last n lines of a log file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

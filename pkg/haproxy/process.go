package haproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a master-worker HAProxy started by StartProcess. It is meant
// for tests and the demo; production HAProxies are started by their service
// manager with the same flags.
type Process struct {
	// PID is the master's PID, read from the pidfile.
	PID          int
	MasterSocket string
	PIDFile      string
}

// StartProcess runs `bin -W -D -S masterSocket -f configPath -p pidFile` and
// waits until the master answers `show proc` with a worker. The pidfile must
// not also be set in the config (HAProxy refuses both).
func StartProcess(ctx context.Context, bin, configPath, masterSocket, pidFile string) (*Process, error) {
	if bin == "" {
		bin = "haproxy"
	}
	_ = os.Remove(pidFile) // a stale pidfile would name someone else's process
	cmd := exec.CommandContext(ctx, bin, "-W", "-D", "-S", masterSocket, "-f", configPath, "-p", pidFile)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// With -D the command returns once the master has daemonized.
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("start %s -f %s: %w: %s", bin, configPath, err, strings.TrimSpace(out.String()))
	}
	p := &Process{MasterSocket: masterSocket, PIDFile: pidFile}
	rt := &Runtime{MasterSocket: masterSocket, Timeout: time.Second}
	t := time.NewTicker(ReloadPollInterval)
	defer t.Stop()
	var last error
	for {
		if p.PID == 0 {
			if b, err := os.ReadFile(pidFile); err == nil {
				p.PID, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			}
		}
		if p.PID > 0 {
			info, err := rt.ShowProc(ctx)
			if err == nil && len(info.Workers) > 0 {
				return p, nil
			}
			last = err
		}
		select {
		case <-ctx.Done():
			if p.PID > 0 {
				_ = p.Stop()
			}
			return nil, fmt.Errorf("haproxy started (pid %d) but its master socket %s did not answer: %w (last: %v; output: %s)",
				p.PID, masterSocket, ctx.Err(), last, strings.TrimSpace(out.String()))
		case <-t.C:
		}
	}
}

// StopTimeout bounds Stop's wait before it escalates to SIGKILL.
const StopTimeout = 10 * time.Second

// Stop terminates the master (which stops its workers) by PID and waits
// until it is gone; after StopTimeout it sends SIGKILL. Stopping a stopped
// process is not an error.
func (p *Process) Stop() error {
	if p == nil || p.PID <= 0 {
		return nil
	}
	if err := syscall.Kill(p.PID, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("stop haproxy %d: %w", p.PID, err)
	}
	if waitGone(p.PID, StopTimeout) {
		return nil
	}
	_ = syscall.Kill(p.PID, syscall.SIGKILL)
	if waitGone(p.PID, 2*time.Second) {
		return nil
	}
	return fmt.Errorf("stop haproxy %d: still running after SIGKILL", p.PID)
}

// waitGone polls until pid no longer exists or is a zombie (a daemonized
// master is not our child; if nobody reaps it, it stays a zombie).
func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if !alive(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// Field 3 is the state; the command in field 2 may contain spaces.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}

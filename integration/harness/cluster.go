package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// pollInterval is how often the Wait* helpers re-check.
const pollInterval = 200 * time.Millisecond

// LeaderKey is the etcd key holding the leader's member name.
func LeaderKey(cluster string) string { return DefaultNamespace + cluster + "/leader" }

// Leader reads the cluster's leader key from etcd ("" when there is none).
func (e *Env) Leader(ctx context.Context, cluster string) (string, error) {
	cli, err := e.client()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, LeaderKey(cluster))
	if err != nil {
		return "", fmt.Errorf("get %s: %w", LeaderKey(cluster), err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// SyncKey is the etcd key where Patroni's leader names its synchronous
// standbys (synchronous_mode).
func SyncKey(cluster string) string { return DefaultNamespace + cluster + "/sync" }

// SyncState is the cluster's sync key as Patroni 3.0 writes it:
// {"leader": "...", "sync_standby": "a,b" or null}.
type SyncState struct {
	// Present is false when the key does not exist.
	Present bool
	// Leader is the member that wrote it, Standbys the names it lists.
	Leader   string
	Standbys []string
	// Raw is the key's value as stored.
	Raw string
}

// Sync reads the cluster's sync key from etcd.
func (e *Env) Sync(ctx context.Context, cluster string) (SyncState, error) {
	var st SyncState
	cli, err := e.client()
	if err != nil {
		return st, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, SyncKey(cluster))
	if err != nil {
		return st, fmt.Errorf("get %s: %w", SyncKey(cluster), err)
	}
	if len(resp.Kvs) == 0 {
		return st, nil
	}
	st.Present, st.Raw = true, string(resp.Kvs[0].Value)
	var v struct {
		Leader      string  `json:"leader"`
		SyncStandby *string `json:"sync_standby"`
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		return st, fmt.Errorf("%s: %q: %w", SyncKey(cluster), st.Raw, err)
	}
	st.Leader = v.Leader
	if v.SyncStandby != nil {
		for _, s := range strings.Split(*v.SyncStandby, ",") {
			if s = strings.TrimSpace(s); s != "" {
				st.Standbys = append(st.Standbys, s)
			}
		}
	}
	return st, nil
}

// WaitLeader waits until the cluster has a leader other than notName ("" =
// any leader) and returns it. ctx carries the deadline.
func (e *Env) WaitLeader(ctx context.Context, cluster, notName string) (string, error) {
	return e.waitLeader(ctx, cluster, func(l string) bool { return l != notName })
}

func (e *Env) waitLeader(ctx context.Context, cluster string, ok func(string) bool) (string, error) {
	last, lastErr := "", error(nil)
	for {
		l, err := e.Leader(ctx, cluster)
		if err == nil && l != "" && ok(l) {
			return l, nil
		}
		last, lastErr = l, err
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("wait for leader of %s: %w (last leader %q, last error: %v)", cluster, ctx.Err(), last, lastErr)
		case <-time.After(pollInterval):
		}
	}
}

// SwitchoverResult is what Switchover measured.
type SwitchoverResult struct {
	// Command is how long patronictl took.
	Command time.Duration
	// LeaderMoved is the time from the start until etcd's leader key named
	// the candidate.
	LeaderMoved time.Duration
	// Output is patronictl's combined output.
	Output string
}

// Switchover runs `patronictl switchover --leader X --candidate Y --force`
// and waits until the leader key names the candidate.
func (e *Env) Switchover(ctx context.Context, cluster, leader, candidate string) (SwitchoverResult, error) {
	var res SwitchoverResult
	cfg := e.PatroniConfigPath(leader)
	if cfg == "" {
		return res, fmt.Errorf("switchover: unknown member %q", leader)
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, "/usr/bin/patronictl", "-c", cfg, "switchover", cluster,
		"--leader", leader, "--candidate", candidate, "--force")
	cmd.Env = baseEnv()
	out, err := cmd.CombinedOutput()
	res.Command = time.Since(start)
	res.Output = string(out)
	if err != nil {
		return res, fmt.Errorf("patronictl switchover %s -> %s: %w: %s", leader, candidate, err, strings.TrimSpace(res.Output))
	}
	if _, err := e.waitLeader(ctx, cluster, func(l string) bool { return l == candidate }); err != nil {
		return res, fmt.Errorf("switchover %s -> %s: %w", leader, candidate, err)
	}
	res.LeaderMoved = time.Since(start)
	e.log.Info("switchover done", zap.String("cluster", cluster), zap.String("from", leader),
		zap.String("to", candidate), zap.Duration("command", res.Command), zap.Duration("leader_moved", res.LeaderMoved))
	return res, nil
}

// MemberStatus is one member as Patroni's REST /cluster reports it, plus
// the processes the harness knows of.
type MemberStatus struct {
	Cluster      string `json:"cluster"`
	Name         string `json:"name"`
	Addr         string `json:"addr"`
	Role         string `json:"role"`  // leader, replica, ... ("" when unknown)
	State        string `json:"state"` // running, stopped, ... ("" when unknown)
	Timeline     int    `json:"timeline"`
	Lag          any    `json:"lag,omitempty"` // a number, or "unknown"
	PatroniPID   int    `json:"patroni_pid"`
	PatroniUp    bool   `json:"patroni_up"`
	PgbouncerPID int    `json:"pgbouncer_pid"`
	PgbouncerUp  bool   `json:"pgbouncer_up"`
}

type restCluster struct {
	Members []struct {
		Name     string `json:"name"`
		Role     string `json:"role"`
		State    string `json:"state"`
		Host     string `json:"host"`
		Timeline int    `json:"timeline"`
		Lag      any    `json:"lag"`
	} `json:"members"`
}

type restPatroni struct {
	State       string `json:"state"`
	Role        string `json:"role"`
	Replication []struct {
		ApplicationName string `json:"application_name"`
		State           string `json:"state"`
	} `json:"replication"`
}

var httpClient = &http.Client{Timeout: 3 * time.Second}

func getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	// /patroni answers 503 with a full body on a replica that is not
	// healthy; the body is what we want either way.
	if err := json.Unmarshal(buf.Bytes(), v); err != nil {
		return fmt.Errorf("GET %s: status %d: %w", url, resp.StatusCode, err)
	}
	return nil
}

func restURL(addr, path string) string {
	return "http://" + net.JoinHostPort(addr, strconv.Itoa(PatroniPort)) + path
}

// clusterView asks each member's REST /cluster in turn, first answer wins.
func (e *Env) clusterView(ctx context.Context, cluster string) (restCluster, error) {
	var rc restCluster
	members := e.Members(cluster)
	if members == nil {
		return rc, fmt.Errorf("unknown cluster %q", cluster)
	}
	var errs []error
	for _, m := range members {
		rc = restCluster{}
		if err := getJSON(ctx, restURL(m.Addr, "/cluster"), &rc); err != nil {
			errs = append(errs, err)
			continue
		}
		return rc, nil
	}
	return rc, fmt.Errorf("no member of %s answers /cluster: %w", cluster, errors.Join(errs...))
}

// checkHealthy returns nil when every member of the cluster runs, there is
// exactly one leader, and the leader reports every other member streaming.
func (e *Env) checkHealthy(ctx context.Context, cluster string) error {
	rc, err := e.clusterView(ctx, cluster)
	if err != nil {
		return err
	}
	seen := map[string]string{}
	leader, leaderAddr := "", ""
	for _, m := range rc.Members {
		seen[m.Name] = m.State
		if m.Role == "leader" || m.Role == "master" || m.Role == "primary" {
			if leader != "" {
				return fmt.Errorf("two leaders: %s and %s", leader, m.Name)
			}
			leader, leaderAddr = m.Name, m.Host
		}
	}
	for _, m := range e.Members(cluster) {
		if st := seen[m.Name]; st != "running" {
			return fmt.Errorf("member %s state %q", m.Name, st)
		}
	}
	if leader == "" {
		return errors.New("no leader")
	}
	var rp restPatroni
	if err := getJSON(ctx, restURL(leaderAddr, "/patroni"), &rp); err != nil {
		return err
	}
	streaming := map[string]bool{}
	for _, r := range rp.Replication {
		if r.State == "streaming" {
			streaming[r.ApplicationName] = true
		}
	}
	for _, m := range e.Members(cluster) {
		if m.Name != leader && !streaming[m.Name] {
			return fmt.Errorf("replica %s is not streaming from leader %s", m.Name, leader)
		}
	}
	return nil
}

// WaitHealthy waits until every member of the cluster runs, one of them
// leads and all others stream from it. ctx carries the deadline.
func (e *Env) WaitHealthy(ctx context.Context, cluster string) error {
	for {
		err := e.checkHealthy(ctx, cluster)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s not healthy: %w (last: %v)", cluster, ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Status reports every member of every cluster. Members of a cluster that
// no REST API answers for have an empty Role and State.
func (e *Env) Status(ctx context.Context) []MemberStatus {
	var out []MemberStatus
	for _, cl := range e.cfg.Clusters {
		rc, _ := e.clusterView(ctx, cl.Name)
		for _, ms := range cl.Members {
			m := e.member(ms.Name)
			e.mu.Lock()
			s := MemberStatus{Cluster: cl.Name, Name: ms.Name, Addr: ms.Addr,
				PatroniUp: m.patroni.alive(), PgbouncerUp: m.bouncer.alive()}
			if m.patroni != nil {
				s.PatroniPID = m.patroni.PID
			}
			if m.bouncer != nil {
				s.PgbouncerPID = m.bouncer.PID
			}
			e.mu.Unlock()
			for _, r := range rc.Members {
				if r.Name == ms.Name {
					s.Role, s.State, s.Timeline, s.Lag = r.Role, r.State, r.Timeline, r.Lag
				}
			}
			out = append(out, s)
		}
	}
	return out
}

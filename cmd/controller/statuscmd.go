package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgsvc/pgsvc/pkg/controller"
)

func init() {
	commands["status"] = command{summary: "show what a running controller sees and did", run: runStatus}
}

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:9876", "the controller's status address")
	format := fs.String("format", "text", "text or json (the /status document as is)")
	timeout := fs.Duration("timeout", 5*time.Second, "request timeout")
	clusters := fs.String("cluster", "", "only these clusters (comma-separated) and the history about them; the whole document at 1,000 clusters is ~8 MB")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *format != "text" && *format != "json" {
		fmt.Fprintf(stderr, "controller: --format: %q is not text or json\n", *format)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	statusURL := strings.TrimRight(*url, "/") + "/status"
	if *clusters != "" {
		statusURL += "?" + neturl.Values{"cluster": {*clusters}}.Encode()
	}
	body, err := fetchStatus(ctx, statusURL)
	if err != nil {
		fmt.Fprintf(stderr, "controller: %v\n", err)
		return 1
	}
	var st controller.Status
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintf(stderr, "controller: %s/status: not a status document: %v\n", *url, err)
		return 1
	}
	if *format == "json" {
		// The document as served; the exit code says whether the
		// controller is ready, as for text (a script checks either).
		_, _ = stdout.Write(body)
		if !st.Ready {
			return 3
		}
		return 0
	}
	if err := writeStatusText(stdout, &st); err != nil {
		fmt.Fprintf(stderr, "controller: %v\n", err)
		return 1
	}
	if !st.Ready {
		return 3
	}
	return 0
}

func fetchStatus(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("status: %s answered %s: %s", url, resp.Status, e.Error)
		}
		return nil, fmt.Errorf("status: %s answered %s", url, resp.Status)
	}
	return body, nil
}

// writeStatusText prints the status document as tables an operator reads at 3 a.m.
func writeStatusText(w io.Writer, st *controller.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	ready := "READY"
	if !st.Ready {
		ready = "NOT READY"
	}
	fmt.Fprintf(tw, "controller\t%s\tinventory %s\n", ready, st.Inventory)
	for _, r := range st.NotReady {
		fmt.Fprintf(tw, "  ! %s\n", r)
	}
	if st.Leader != nil {
		role := "standby (another instance applies)"
		if st.Leader.IsLeader {
			role = "LEADER (applies changes)"
		}
		fmt.Fprintf(tw, "instance\t%s\t%s\tleader: %s\n", st.Leader.Identity, role, st.Leader.Leader)
	}
	if st.DryRun {
		fmt.Fprintln(tw, "mode\tDRY RUN: nothing is changed")
	}
	if st.TransitionsInFlight > 0 {
		fmt.Fprintf(tw, "transitions\t%d switchover(s)/failover(s) in flight\n", st.TransitionsInFlight)
	}
	fmt.Fprintln(tw, "\nDCS\tREVISION\tAGE\tCONNECTED\tWATCH RESTARTS\tSTALE\tLAST ERROR")
	for _, n := range st.DCS {
		fmt.Fprintf(tw, "%s\t%d\t%.1fs\t%t\t%d\t%s\t%s\n", n.Namespace, n.Revision, n.AgeSeconds, n.Connected, n.Restarts, dash(n.Stale), dash(n.LastError))
	}
	for _, cl := range st.Clusters {
		leader := cl.Leader
		if leader == "" {
			leader = "(none)"
		}
		fmt.Fprintf(tw, "\ncluster %s\tleader %s\trevision %d", cl.Name, leader, cl.Revision)
		if cl.Frozen != "" {
			fmt.Fprintf(tw, "\tFROZEN: %s", cl.Frozen)
		}
		if cl.PlanError != "" {
			fmt.Fprintf(tw, "\tPLAN FAILED (last good services kept): %s", cl.PlanError)
		}
		fmt.Fprintln(tw)
		if cl.Transition != "" {
			fmt.Fprintf(tw, "  > in transition: %s\n", cl.Transition)
		}
		for _, wmsg := range cl.Warnings {
			fmt.Fprintf(tw, "  ! %s\n", wmsg)
		}
		fmt.Fprintln(tw, "  MEMBER\tADDRESS\tINVENTORY\tLIVE ROLE\tPATRONI\tSTATE\tLAG\tWHY")
		for _, m := range cl.Members {
			lag := "-"
			if m.LagBytes != nil {
				lag = fmt.Sprintf("%dB", *m.LagBytes)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Address, m.InventoryRole, m.Role,
				dash(m.PatroniRole), dash(m.State), lag, m.RoleReason)
		}
		fmt.Fprintln(tw, "  SERVICE\tBIND\tSERVER\tADDRESS\tBACKUP\tWHY")
		for _, s := range cl.Services {
			if len(s.Servers) == 0 {
				fmt.Fprintf(tw, "  %s\t%s:%d\t(no server)\t\t\t\n", s.Name, s.IP, s.Port)
			}
			for i, sv := range s.Servers {
				name, bind := "", ""
				if i == 0 {
					name, bind = s.Name, fmt.Sprintf("%s:%d", s.IP, s.Port)
				}
				backup := ""
				if sv.Backup {
					backup = "backup"
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s:%d\t%s\t%s\n", name, bind, sv.Name, sv.Address, sv.Port, backup, sv.Reason)
			}
		}
	}
	fmt.Fprintln(tw, "\nTARGET\tSTATE\tLAST APPLIED\tVERSION\tRELOAD\tSTATE KEPT\tLAST ERROR")
	for _, t := range st.Targets {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", t.Name, t.State, ago(st.Now, t.LastApplied), t.Version,
			dash(strings.TrimSpace(t.ReloadID+" "+t.ReloadResult)), preserved(t.StatePreserved), dash(t.LastError))
		if t.StateWarning != "" {
			fmt.Fprintf(tw, "  ! %s\n", t.StateWarning)
		}
		for _, h := range t.HeldBack {
			fmt.Fprintf(tw, "  ! held back since %s (%d failures, next try %s): cluster %s (%s): %s\n",
				h.Since.UTC().Format(time.RFC3339), h.Failures, h.NextTry.UTC().Format(time.RFC3339), h.Cluster, strings.Join(h.Services, ", "), h.Error)
		}
		if t.Deferred > 0 {
			fmt.Fprintf(tw, "  > %d change(s) deferred until %s\n", t.Deferred, t.DeferredUntil.UTC().Format(time.RFC3339Nano))
		}
	}
	if n := len(st.History); n > 0 {
		fmt.Fprintln(tw, "\nRECENT DECISIONS\tKIND\tTARGET\tREVISION\tCHANGES")
		from := n - 10
		if from < 0 {
			from = 0
		}
		for _, e := range st.History[from:] {
			var parts []string
			for _, c := range e.Changes {
				parts = append(parts, strings.TrimSpace(c.Kind+" "+c.Backend+"/"+c.Server+" "+c.Detail))
			}
			if e.Error != "" {
				parts = append(parts, "error: "+e.Error)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", e.At.Format(time.RFC3339), e.Kind, dash(e.Target), e.Revision, strings.Join(parts, "; "))
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(100*time.Millisecond).String() + " ago"
}

func preserved(p *bool) string {
	switch {
	case p == nil:
		return "unknown"
	case *p:
		return "yes"
	default:
		return "NO"
	}
}

package plan

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// WriteText writes the plan as readable tables, one block per cluster: its
// leader, its members (inventory role -> live role and why), every service
// with its servers (address:port, weight, BACKUP, why) and the warnings.
func (p *Plan) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for i, c := range p.Clusters {
		if i > 0 {
			bw.WriteString("\n")
		}
		writeCluster(bw, c)
	}
	return bw.Flush()
}

func writeCluster(w *bufio.Writer, c Cluster) {
	leader := c.Leader
	if leader == "" {
		leader = "(none)"
	}
	state := "no live state: inventory roles"
	switch {
	case c.Leaderless:
		state = "live, LEADERLESS"
	case c.Live:
		state = "live"
	}
	citus := ""
	if c.CitusGroup != nil {
		citus = fmt.Sprintf("  citus scope %s group %d", c.Scope, *c.CitusGroup)
	}
	fmt.Fprintf(w, "cluster %s  namespace %s%s  leader %s  (%s)\n", c.Name, c.Namespace, citus, leader, state)

	w.WriteString("  members:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "    NAME\tADDRESS\tINVENTORY -> ROLE\tPATRONI\tSTATE\tTL\tLAG\tSERVED\tWHY")
	for _, m := range c.Members {
		served := "yes"
		if !m.Served {
			served = "no"
		}
		inv := m.InventoryRole
		if !m.Known {
			inv = "(unknown)"
		}
		patroniRole := dash(m.PatroniRole)
		if m.SyncStandby {
			patroniRole += " (sync)"
		}
		tl := "-"
		if m.Timeline != 0 {
			tl = strconv.FormatInt(m.Timeline, 10)
		}
		lag := "-"
		if m.LagBytes != nil {
			lag = strconv.FormatInt(*m.LagBytes, 10)
		}
		fmt.Fprintf(tw, "    %s\t%s\t%s -> %s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Address, inv, m.Role, patroniRole,
			dash(m.State), tl, lag, served, oneLine(m.RoleReason))
	}
	tw.Flush()

	w.WriteString("  services:\n")
	for _, s := range c.Services {
		writeService(w, s)
	}
	if len(c.Warnings) > 0 {
		w.WriteString("  warnings:\n")
		for _, msg := range c.Warnings {
			fmt.Fprintf(w, "    - %s\n", oneLine(msg))
		}
	}
}

func writeService(w *bufio.Writer, s services.Service) {
	ip := s.IP
	if ip == "" {
		ip = "*"
	}
	fmt.Fprintf(w, "    %s  bind %s:%d -> %s  check %s  %s  maxconn %d\n", s.Name, ip, s.Port, s.Dest, s.Check, s.Balance, s.Maxconn)
	if len(s.Servers) == 0 {
		w.WriteString("      (no servers)\n")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, sv := range s.Servers {
		backup := ""
		if sv.Backup {
			backup = "BACKUP"
		}
		fmt.Fprintf(tw, "      %s\t%s:%d\tweight %d\t%s\t%s\n", sv.Name, sv.Address, sv.Port, sv.Weight, backup, oneLine(sv.Reason))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps table rows on one line whatever a message contains.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

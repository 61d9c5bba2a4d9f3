package services

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/pgsvc/pgsvc/pkg/topology"
)

// LayoutTwins is Service.Layout for the twin layout (see Twins).
const LayoutTwins = "twins"

// BackupTwinSuffix names a member's backup twin: "pg-test-1" is the member as
// a normal server, "pg-test-1.backup" the same member as a `backup` server.
// Both are valid HAProxy server names and read naturally in `show stat`,
// `controller status` and the Data Plane API.
// Merge leaves unserved an unknown member named like another member's
// backup twin (topology.MemberView.TwinClash).
const BackupTwinSuffix = topology.BackupTwinSuffix

// selectsAll reports whether a selector picks every member (Pigsty's `[]`).
func selectsAll(sel string) bool {
	// sel without its blanks (unicode.IsSpace, as strings.Fields) is "",
	// "[]" or "[*]", compared as it is walked: a plan asks this of every
	// service of every cluster.
	var buf [3]rune
	n := 0
	for _, r := range sel {
		if unicode.IsSpace(r) {
			continue
		}
		if n == len(buf) {
			return false
		}
		buf[n] = r
		n++
	}
	switch string(buf[:n]) {
	case "", "[]", "[*]":
		return true
	}
	return false
}

// InactiveState is the runtime admin state of an inactive twin in s: "maint"
// in a write service (its Patroni check passes only on the primary: a
// member leaving it must take no more writes, and maint cuts its sessions,
// as the failing health check would), "drain" elsewhere (read services:
// sessions on a replica that became the backup, or on a former primary
// that now is a plain replica, are still valid reads and survive; a drained
// server keeps being health-checked, so activating it later follows its real
// health instead of `ready`'s immediate UP). In the file an inactive twin is
// always `disabled` (maint), the only admin keyword HAProxy's file has.
func InactiveState(s Service) string {
	if WriteCheck(s.Check) {
		return "maint"
	}
	return "drain"
}

// Twins turns Pigsty's layout into the twin layout: in every service whose
// membership depends on live roles (Service.RoleDependent), every served
// member of the cluster is present twice — the normal server (member name)
// and a backup twin (member name + BackupTwinSuffix) — whatever the roles,
// so that a role change is a runtime admin-state change only, never a
// reload. Exactly one twin of a member is active (not Disabled) when
// Pigsty's layout has the member (as normal or backup server); both are
// Disabled when the selectors leave it out, or when the DCS has live data for
// the cluster but does not report the member running (its twins are never
// activated before the DCS says it is alive in that role), or, in a write
// service (WriteCheck), when the member is not the merged primary
// (Server.Primary: HAProxy's check passes on the primary only, so Pigsty's
// layout never routes there, while a twin's activation is UP at once). A laid-out
// service has no Candidates (its twins are), so Twins leaves it as it is.
// Services whose membership does not depend on roles (primary, default:
// `[]` without backup) are returned unchanged. Pure; in is not modified.
//
// A write service with the same members and check as an earlier one of its
// cluster (Pigsty's default beside its primary) tracks it (TrackSources,
// Track): its servers take the state of that service's servers.
func Twins(in []Service) ([]Service, error) {
	out := make([]Service, 0, len(in))
	srcs := TrackSources(in)
	for i := range in {
		t, err := LayOut(in[i], srcs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// LayOut is Twins of one service s, given the service it tracks (src, from
// TrackSources; nil for none).
func LayOut(s Service, src *Service) (Service, error) {
	return LayOutAfter(s, src, nil)
}

// LayOutAfter is LayOut(s, src) that takes from prev, the layout of an
// earlier version of s (nil for none; never modified), the strings of
// its servers that come out the same (a backup twin's name, a tracked
// server's "backend/server", a tracking server's reason) instead of
// making new ones. The result is LayOut's, string for string
// (TestLayOutAfterIsLayOut); only the memory differs: while a target's
// driver holds the layout it applied last, a mass failover's new layout
// shares those strings with it instead of doubling them.
func LayOutAfter(s Service, src, prev *Service) (Service, error) {
	switch {
	case s.RoleDependent && len(s.Candidates) > 0:
		t, err := twinsOf(s, prev)
		switch {
		case err != nil || src == nil:
			return t, err
		case CanTrackBackups(&s, src):
			return trackBackups(t, src, prev, trackPrimaryWhat, trackPrimaryWhy), nil
		case CanTrackReplicas(&s, src):
			return trackBackups(t, src, prev, trackReplicaWhat, trackReplicaWhy), nil
		}
		return t, nil
	case src != nil:
		return track(s, src.Name, prev), nil
	}
	return s, nil
}

// prevServer is the server named name in prev (nil for none), looked for
// from index i first (layouts of one service mostly keep their order).
func prevServer(prev *Service, i int, name string) *Server {
	if prev == nil {
		return nil
	}
	if i < len(prev.Servers) && prev.Servers[i].Name == name {
		return &prev.Servers[i]
	}
	for j := range prev.Servers {
		if prev.Servers[j].Name == name {
			return &prev.Servers[j]
		}
	}
	return nil
}

// isConcat reports whether s is a+b+c, without concatenating.
func isConcat(s, a, b, c string) bool {
	return len(s) == len(a)+len(b)+len(c) && strings.HasPrefix(s, a) && strings.HasSuffix(s, c) &&
		s[len(a):len(a)+len(b)] == b
}

// twinName is member's backup twin's name (member + BackupTwinSuffix):
// prev's string when prev has that twin, from index i on.
func twinName(member string, prev *Service, i int) string {
	if prev != nil {
		for j := range prev.Servers {
			k := (i + j) % len(prev.Servers)
			if n := prev.Servers[k].Name; isConcat(n, member, BackupTwinSuffix, "") {
				return n
			}
		}
	}
	return member + BackupTwinSuffix
}

// twinsOf is Twins of one role-dependent service. A service has a handful
// of members: scans, not maps (every apply of a twins target lays out the
// whole fleet).
func twinsOf(s Service, prev *Service) (Service, error) {
	t := s
	t.Layout = LayoutTwins
	// The twins are the candidates now: a layout keeps none of the plan's
	// lists (a target keeping the layout of an unchanged service kept the
	// older plan's candidates of it alive), and Twins of a laid-out service
	// leaves it as it is.
	t.Candidates = nil
	t.Servers = make([]Server, 0, 2*len(s.Candidates))
	inactive := InactiveState(s)
	write := WriteCheck(s.Check)
	for i, c := range s.Candidates {
		bname := twinName(c.Name, prev, 2*i+1)
		if hasServer(s.Candidates, bname) {
			return Service{}, fmt.Errorf("service %s: member %s and the backup twin of member %s have the same name", s.Name, bname, c.Name)
		}
		// As a map by name would: the last server of that name, once (a
		// candidate listed twice finds it taken).
		var p Server
		in := false
		if !hasServer(s.Candidates[:i], c.Name) {
			for _, sv := range s.Servers {
				if sv.Name == c.Name {
					p, in = sv, true
				}
			}
		}
		for _, backup := range []bool{false, true} {
			tw := c
			tw.Member, tw.Backup, tw.Selected = c.Name, backup, !backup
			if backup {
				tw.Name = bname
			}
			switch {
			case in && p.Backup == backup && !c.Unconfirmed && (c.Primary || !write):
				tw.Weight, tw.ForceUp, tw.ForceDown, tw.HoldDown, tw.Reason, tw.Selected = p.Weight, p.ForceUp, p.ForceDown, p.HoldDown, internConcat("active twin: ", p.Reason), p.Selected
			case in && p.Backup == backup && !c.Unconfirmed:
				// A write service routes to the primary only (its check
				// passes nowhere else), and `ready` is UP before any check.
				tw.Disabled, tw.ForceUp, tw.ForceDown, tw.HoldDown = true, false, false, false
				tw.Reason = internConcat("inactive twin (", inactive, "): not the primary, and the check passes on the primary only; Pigsty's layout: ", p.Reason)
			case in && p.Backup == backup:
				tw.Disabled, tw.ForceUp, tw.ForceDown, tw.HoldDown = true, false, false, false
				// Not the member's name: the twin names it (Member), and a
				// string per twin was ~0.5 MB at 1,000 clusters.
				tw.Reason = internConcat("inactive twin (", inactive, "): the DCS does not report the member running; Pigsty's layout: ", p.Reason)
			case in:
				tw.Disabled, tw.ForceUp, tw.ForceDown, tw.HoldDown = true, false, false, false
				tw.Reason = internConcat("inactive twin (", inactive, "): the member is ", serverKind(p.Backup))
			default:
				tw.Disabled, tw.ForceUp, tw.ForceDown, tw.HoldDown = true, false, false, false
				tw.Reason = internConcat("inactive twin (", inactive, "): not selected (", c.Reason, ")")
			}
			t.Servers = append(t.Servers, tw)
		}
	}
	// Servers Pigsty's layout has that are no candidates (none today) are
	// kept as they are.
	for _, sv := range s.Servers {
		if !hasServer(s.Candidates, sv.Name) {
			t.Servers = append(t.Servers, sv)
		}
	}
	return t, nil
}

// What a tracking backup twin's reason says: "backup twin: tracks " what
// " in the " <service> " service" why (trackBackups). Not the tracked
// server's name (Server.Track has it): a reason per server would crowd
// the reasons kept once (maxReasons) out of the shared ones.
const (
	trackPrimaryWhat = "its member's server"
	trackPrimaryWhy  = ", UP while the member is the primary (the backup selector picks the primary only)"
	trackReplicaWhat = "its member's normal twin"
	trackReplicaWhy  = ", active while the member is a replica (the backup selector picks the replicas only)"
)

// trackBackups makes the backup twins of t (laid out by twinsOf) track the
// server of their member in src (CanTrackBackups: the server of a write
// service; CanTrackReplicas: a normal twin): no check of their own, never
// Disabled (src's server says whether the member is in that role), no
// health intent; what and why make their reason. t's servers are its own
// (twinsOf made them). A server of prev (see LayOutAfter) of the same name
// tracking the same server gives its Track string.
func trackBackups(t Service, srcSvc *Service, prev *Service, what, why string) Service {
	src := srcSvc.Name
	for i := range t.Servers {
		sv := &t.Servers[i]
		if !sv.Backup || sv.Member == "" {
			continue
		}
		if p := prevServer(prev, i, sv.Name); p != nil && isConcat(p.Track, src, "/", sv.Member) {
			sv.Track = p.Track
		} else {
			sv.Track = src + "/" + sv.Member
		}
		sv.CheckPort, sv.CheckSSL, sv.CAFile = 0, false, ""
		sv.Disabled, sv.ForceUp, sv.ForceDown, sv.HoldDown, sv.Writable, sv.Unconfirmed = false, false, false, false, false, false
		sv.Selected = false
		sv.Reason = internConcat("backup twin: tracks ", what, " in the ", srcSvc.Service, " service", why)
	}
	return t
}

// hasServer reports whether list has a server named name.
func hasServer(list []Server, name string) bool {
	for i := range list {
		if list[i].Name == name {
			return true
		}
	}
	return false
}

func serverKind(backup bool) string {
	if backup {
		return "a backup server"
	}
	return "a normal server"
}

// AdminWord is the runtime admin state desired for sv in s: "ready" or
// InactiveState(s).
func AdminWord(s Service, sv Server) string {
	if sv.Disabled {
		return InactiveState(s)
	}
	return "ready"
}

// aliveState reports whether a Patroni member state means PostgreSQL runs:
// "running" (Patroni < 3.0.4 for every member), "streaming" and "in archive
// recovery" (replicas in newer Patroni).
func aliveState(s string) bool {
	switch s {
	case "running", "streaming", "in archive recovery":
		return true
	}
	return false
}

package services

import (
	"strings"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// CanTrack reports whether the servers of s can track (HAProxy's `track`)
// the servers of the same name in src instead of running checks of their
// own: both are write services of one cluster laid out as Pigsty's
// (membership `[]`, no backup, no twins), with the same check, the same
// default-server line, which cuts a server's sessions when it is marked DOWN
// (`on-marked-down shutdown-sessions`: a tracking server is marked DOWN with
// the server it tracks, and so cut with it), and the same servers in the
// same order (name, address, check port and TLS) with the same health
// intents (force-up, fence, hold). Pigsty's default service and its primary
// service are such a pair: one check, one force-up and one fence per member
// then serve both, the same in every state HAProxy can reach (a forced
// health, drain and maint reach a tracking server at once; measured on
// HAProxy 2.6). Pure.
func CanTrack(s, src *Service) bool {
	if s.Cluster != src.Cluster || s.Name == src.Name || s.Layout != "" || src.Layout != "" ||
		s.RoleDependent || src.RoleDependent || !WriteCheck(s.Check) || s.Check != src.Check ||
		s.DefaultServer != src.DefaultServer || !ShutsSessionsDown(s.DefaultServer) ||
		len(s.Servers) == 0 || len(s.Servers) != len(src.Servers) {
		return false
	}
	for i := range s.Servers {
		a, b := &s.Servers[i], &src.Servers[i]
		if a.Name != b.Name || a.Address != b.Address || a.CheckPort != b.CheckPort || a.CheckSSL != b.CheckSSL ||
			a.CAFile != b.CAFile || a.Track != "" || b.Track != "" || a.Backup || b.Backup || a.Disabled || b.Disabled ||
			a.ForceUp != b.ForceUp || a.ForceDown != b.ForceDown || a.HoldDown != b.HoldDown {
			return false
		}
	}
	return true
}

// ShutsSessionsDown reports whether a default-server line has
// `on-marked-down shutdown-sessions`.
// (Without allocating: the Data Plane API driver asks it for every write
// service at every apply.)
func ShutsSessionsDown(options string) bool {
	prev := ""
	for f := range strings.FieldsSeq(options) {
		if prev == "on-marked-down" && f == "shutdown-sessions" {
			return true
		}
		prev = f
	}
	return false
}

// Track returns s with every server tracking the server of the same name in
// backend src (see CanTrack): no check of its own, and no health intent (a
// force-up, a fence or a hold of src's server reaches it with src's). The
// result's servers are new; s is not modified.
func Track(s Service, src string) Service { return track(s, src, nil) }

// trackedPrefix and trackedSuffix frame a tracking server's reason
// (Track): trackedPrefix + Track + trackedSuffix + its own reason.
const (
	trackedPrefix = "tracks "
	trackedSuffix = " (same members and check): "
)

// track is Track(s, src) taking from prev (see LayOutAfter) a server's
// reason when it comes out the same, and its Track with it. A new reason
// holds Track: Track is that part of it (one string per server, not two).
func track(s Service, src string, prev *Service) Service {
	t := s
	t.Servers = make([]Server, len(s.Servers))
	for i, sv := range s.Servers {
		if p := prevServer(prev, i, sv.Name); p != nil && isConcat(p.Track, src, "/", sv.Name) &&
			strings.HasPrefix(p.Reason, trackedPrefix) && isConcat(p.Reason[len(trackedPrefix):], p.Track, trackedSuffix, sv.Reason) {
			sv.Track, sv.Reason = p.Track, p.Reason
		} else {
			sv.Reason = trackedPrefix + src + "/" + sv.Name + trackedSuffix + sv.Reason
			sv.Track = sv.Reason[len(trackedPrefix) : len(trackedPrefix)+len(src)+1+len(sv.Name)]
		}
		sv.CheckPort, sv.CheckSSL, sv.CAFile = 0, false, ""
		sv.ForceUp, sv.ForceDown, sv.HoldDown, sv.Writable = false, false, false, false
		t.Servers[i] = sv
	}
	return t
}

// TrackSources returns, for each service of in, the service its servers
// track in the twin layout, nil for none: the first write service laid out
// as Pigsty's in its cluster's run of services (Build lists a cluster's
// services together, in definition order: Pigsty's primary before its
// default), for
//   - a later write service with the same members and check (CanTrack):
//     every server tracks (Track). In a mass failover through the Data
//     Plane API that is one force-up and one fence read fewer per cluster,
//     and HAProxy runs one Patroni check fewer per member;
//   - a read service whose backup is the primary (CanTrackBackups): its
//     backup twins track (LayOut). A role change then flips no backup twin:
//     two runtime changes fewer per cluster in a failover;
//   - a read service whose backup is the replicas (CanTrackReplicas, of
//     any service of its cluster: Pigsty's offline service beside its
//     replica service): its backup twins track that service's normal
//     twins, and take their admin state with their health. A role change
//     then flips nothing in it: one runtime change fewer per cluster in a
//     failover, and HAProxy runs one Patroni check fewer per member.
//
// The pointers are into in.
func TrackSources(in []Service) []*Service {
	srcs := make([]*Service, len(in))
	for from := 0; from < len(in); {
		to := from + 1
		for to < len(in) && in[to].Cluster == in[from].Cluster {
			to++
		}
		first := -1 // the first write service of the cluster's run
		for i := from; i < to; i++ {
			s := &in[i]
			if s.RoleDependent || s.Layout != "" || !WriteCheck(s.Check) {
				continue
			}
			if first < 0 {
				first = i
				continue
			}
			if CanTrack(s, &in[first]) {
				srcs[i] = &in[first]
			}
		}
		if first >= 0 {
			for i := from; i < to; i++ {
				if CanTrackBackups(&in[i], &in[first]) {
					srcs[i] = &in[first]
				}
			}
		}
		for i := from; i < to; i++ {
			for j := from; j < to && srcs[i] == nil; j++ {
				if CanTrackReplicas(&in[i], &in[j]) {
					srcs[i] = &in[j]
				}
			}
		}
		from = to
	}
	return srcs
}

// pigstyReplicaBackups are the backup selectors (blanks removed) that pick
// the primary, and the offline members (BackupIsPrimary).
var pigstyReplicaBackups = map[string]bool{
	"[?pg_role==`primary`||pg_role==`offline`]": true,
	"[?pg_role=='primary'||pg_role=='offline']": true,
	"[?pg_role==`primary`]":                     true,
	"[?pg_role=='primary']":                     true,
}

// backupIsPrimary reports whether def, over the served members, makes a
// member its backup server exactly while it is the primary
// (Service.BackupIsPrimary): selector `[]`, Pigsty's replica backup
// selector, no member offline (in the inventory or merged), and not a
// standby cluster. A standby cluster's leader (inventory primary with
// pg_upstream, Patroni's standby_leader) is its replica service's backup,
// checked on /read-only which passes on it, while its primary service's
// /primary check never passes there: a backup twin tracking that server
// would never take the reads Pigsty's replica service gives it.
func backupIsPrimary(def *topology.ServiceDef, served []*topology.MemberView) bool {
	if !selectsAll(def.Selector) || !pigstyReplicaBackups[strings.Join(strings.Fields(def.Backup), "")] {
		return false
	}
	for _, m := range served {
		if m.InventoryRole == "offline" || m.Role == "offline" {
			return false
		}
		if m.Live != nil && m.Live.Role == patroni.RoleStandbyLeader {
			return false
		}
		if up, _ := m.Vars["pg_upstream"].(string); up != "" && m.InventoryRole == "primary" {
			return false
		}
	}
	return true
}

// passesOnPrimary reports whether a Patroni check passes on a running
// primary as it does on a running replica: /read-only (Pigsty's replica
// service) and /health. (/replica, /sync, /async pass on replicas only.)
func passesOnPrimary(check string) bool {
	switch checkPath(check) {
	case "/read-only", "/health":
		return true
	}
	return false
}

// CanTrackBackups reports whether the backup twins of role-dependent
// service s can track (HAProxy's `track`) the servers of the same name in
// write service src instead of being flipped: s takes no writes and its
// check passes on the primary as on a replica (/read-only: Pigsty's
// replica service; not /sync, which would keep a backup primary DOWN), its
// backup server is the primary exactly (Service.BackupIsPrimary), and src
// is of s's cluster, laid out as Pigsty's, with a server of every member
// of s checked through the same Patroni (name, address, check port, TLS).
// Such a twin is UP exactly while src's server is: while HAProxy's
// /primary check passes (Patroni answers it only on the leader: the member
// is the primary, which Pigsty's replica service makes its backup), or the
// controller forces it UP (the new primary) or DOWN (the fence, the hold of
// a new leader); and an operator's drain or maint of src's server reaches
// it. The normal twins are flipped as before. Pure.
func CanTrackBackups(s, src *Service) bool {
	if !s.RoleDependent || !s.BackupIsPrimary || s.Layout != "" || !passesOnPrimary(s.Check) || len(s.Candidates) == 0 ||
		src.Cluster != s.Cluster || src.RoleDependent || src.Layout != "" || !WriteCheck(src.Check) {
		return false
	}
	return checkedAlike(s.Candidates, src.Servers, func(b *Server) bool { return !b.Backup && !b.Disabled })
}

// checkedAlike reports whether every server of cands has exactly one
// server of its name in list, checked through the same Patroni (address,
// check port, TLS), tracking nothing, and for which ok holds.
func checkedAlike(cands, list []Server, ok func(b *Server) bool) bool {
	for i := range cands {
		c := &cands[i]
		found := false
		for j := range list {
			b := &list[j]
			if b.Name != c.Name {
				continue
			}
			if found || b.Address != c.Address || b.CheckPort != c.CheckPort || b.CheckSSL != c.CheckSSL ||
				b.CAFile != c.CAFile || b.Track != "" || !ok(b) {
				return false
			}
			found = true
		}
		if !found {
			return false
		}
	}
	return true
}

// pigstyOfflineSelectors and pigstyOfflineBackups are Pigsty's offline
// service's selector and backup selector (blanks removed; backquoted or
// quoted literals), see BackupIsReplicas.
var (
	pigstyOfflineSelectors = map[string]bool{
		"[?pg_role==`offline`||pg_offline_query]": true,
		"[?pg_role=='offline'||pg_offline_query]": true,
	}
	pigstyOfflineBackups = map[string]bool{
		"[?pg_role==`replica`&&!pg_offline_query]": true,
		"[?pg_role=='replica'&&!pg_offline_query]": true,
	}
)

// backupIsReplicas reports whether def, over the served members, selects
// no member and makes a member its backup server exactly while it is no
// primary (Service.BackupIsReplicas): Pigsty's offline selectors, no
// member offline (in the inventory or merged), and pg_offline_query unset
// or false on every member (JMESPath's truth: false, null, "", [] and {}
// are false). Merged roles are then primary or replica only.
func backupIsReplicas(def *topology.ServiceDef, served []*topology.MemberView) bool {
	if !pigstyOfflineSelectors[strings.Join(strings.Fields(def.Selector), "")] ||
		!pigstyOfflineBackups[strings.Join(strings.Fields(def.Backup), "")] {
		return false
	}
	for _, m := range served {
		if m.InventoryRole == "offline" || m.Role == "offline" || jmesTruthy(m.Vars["pg_offline_query"]) {
			return false
		}
	}
	return true
}

// jmesTruthy is JMESPath's truth of a JSON value: false, null, "", empty
// lists and objects are false; everything else (0 too) is true.
func jmesTruthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

// passesAsReplica reports whether a service's check (its whole text, no
// query) is one Patroni answers on a member that is not the leader exactly
// as /replica: /replica itself and /read-only (Patroni 3.0: on a
// non-leader both are 200 exactly when it runs as a replica, is not
// tagged noloadbalance and, without ?lag, whatever its lag). A query
// (?lag=, tag filters) or another path can differ.
func passesAsReplica(check string) bool {
	return check == "/replica" || check == "/read-only"
}

// CanTrackReplicas reports whether the backup twins of role-dependent
// service s can track (HAProxy's `track`) the normal twins of the same
// member in read service src instead of being flipped:
//   - s's backup servers are exactly the members that are no primary
//     (Service.BackupIsReplicas: Pigsty's offline service with no offline
//     member and no pg_offline_query), and src's normal servers are too
//     (Service.BackupIsPrimary: Pigsty's replica service, `[]` with the
//     primary as backup, no offline member, no standby cluster), so a
//     backup twin of s is to be active exactly while src's normal twin of
//     its member is (TestOfflineTrackersActiveAsBefore); that twin's drain
//     or maint reaches the tracker with its health (measured on HAProxy
//     2.6: IDRAIN, IMAINT);
//   - both take no writes, have the same default-server line (one check
//     timing, one on-marked-down) and checks answered alike on a member
//     that is no leader (s /replica, src /replica or /read-only: see
//     passesAsReplica): while the twin is active its member is no leader,
//     and its check says what s's own would. (A member promoted under a
//     controller that has not seen it yet passes /read-only: its tracker
//     takes offline reads a moment longer, as Pigsty's replica service
//     does);
//   - src has a server of every member of s checked through the same
//     Patroni (name, address, check port, TLS), tracking nothing.
//
// Pure.
func CanTrackReplicas(s, src *Service) bool {
	if !s.RoleDependent || !s.BackupIsReplicas || s.Layout != "" || len(s.Candidates) == 0 || s.Check != "/replica" ||
		WriteCheck(s.Check) || src.Cluster != s.Cluster || src.Name == s.Name || !src.RoleDependent || !src.BackupIsPrimary ||
		src.Layout != "" || WriteCheck(src.Check) || !passesAsReplica(src.Check) || src.DefaultServer != s.DefaultServer {
		return false
	}
	return checkedAlike(s.Candidates, src.Candidates, func(*Server) bool { return true })
}

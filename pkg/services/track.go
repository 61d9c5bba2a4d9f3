package services

import "strings"

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
func ShutsSessionsDown(options string) bool {
	f := strings.Fields(options)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "on-marked-down" && f[i+1] == "shutdown-sessions" {
			return true
		}
	}
	return false
}

// Track returns s with every server tracking the server of the same name in
// backend src (see CanTrack): no check of its own, and no health intent (a
// force-up, a fence or a hold of src's server reaches it with src's). The
// result's servers are new; s is not modified.
func Track(s Service, src string) Service {
	t := s
	t.Servers = make([]Server, len(s.Servers))
	for i, sv := range s.Servers {
		sv.Track = src + "/" + sv.Name
		sv.CheckPort, sv.CheckSSL, sv.CAFile = 0, false, ""
		sv.ForceUp, sv.ForceDown, sv.HoldDown, sv.Writable = false, false, false, false
		sv.Reason = "tracks " + sv.Track + " (same members and check): " + sv.Reason
		t.Servers[i] = sv
	}
	return t
}

// TrackSources returns, for each service of in, the service whose servers
// its servers track in the twin layout (CanTrack), nil for none: the first
// write service laid out as Pigsty's in its cluster's run of services
// (Build lists a cluster's services together, in definition order:
// Pigsty's primary before its default). In a mass failover through the
// Data Plane API that is one force-up and one fence read fewer per
// cluster, and HAProxy runs one Patroni check fewer per member. The
// pointers are into in.
func TrackSources(in []Service) []*Service {
	srcs := make([]*Service, len(in))
	first := -1 // the first write service of the current cluster's run
	for i := range in {
		s := &in[i]
		if i == 0 || s.Cluster != in[i-1].Cluster {
			first = -1
		}
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
	return srcs
}

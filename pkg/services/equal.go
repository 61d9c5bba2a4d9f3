package services

import "slices"

// Equal reports whether a and b are the same service: every field, their
// servers and their candidates in order. Pure functions of one service
// (Twins of it, its validation) give the same result for both, so callers
// may keep a result while the service stays Equal (TestEqualCoversEveryField
// keeps it in step with the struct).
func Equal(a, b *Service) bool {
	return a.Cluster == b.Cluster && a.Name == b.Name && a.Service == b.Service && a.IP == b.IP && a.Port == b.Port &&
		a.Check == b.Check && a.Dest == b.Dest && a.DestPort == b.DestPort && a.Balance == b.Balance &&
		a.Maxconn == b.Maxconn && a.DefaultServer == b.DefaultServer && a.Layout == b.Layout &&
		a.RoleDependent == b.RoleDependent && a.BackupIsPrimary == b.BackupIsPrimary && a.BackupIsReplicas == b.BackupIsReplicas && sameServers(a.Servers, b.Servers) && sameServers(a.Candidates, b.Candidates) &&
		slices.Equal(a.BackupAddrs, b.BackupAddrs)
}

// sameServers compares two server lists element by element (Server has
// only comparable fields).
func sameServers(a, b []Server) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

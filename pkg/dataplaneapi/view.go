package dataplaneapi

import (
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// curView is the diff's view of the desired backends one read found, by
// name: what target.Diff compares desired with. It keeps, per server, the
// parsed record (shared with the snapshot, which never changes a record)
// and what the read adds to it (the runtime admin state, the live health);
// a backend's target.Backend is made only when diffed, and dropped after.
// Made whole at once (a map of services.Server per backend: 152 bytes a
// server, each its own allocation) the view of a 1,000-cluster mass
// failover was ~4.6 MB of live heap for the whole apply.
type curView map[string]curBack

// curBack is one backend of a curView.
type curBack struct {
	settings *target.Settings // nil: no frontend, or not read
	dw       int              // the backend's default-server weight
	hasFE    bool
	srv      []curSrv // in no particular order
}

// curSrv is one server of a curBack: its record and what the read set on
// it (the fields of services.Server a record does not have).
type curSrv struct {
	rec            *srvRec
	admin          string
	down, holdDown bool
}

// newCurBack is the view of backend name of sn (which has it).
func newCurBack(sn *snapshot, d services.Service) curBack {
	be, fe := sn.be[d.Name], sn.fe[d.Name]
	recs := sn.servers[d.Name]
	cb := curBack{dw: defaultWeight(be), hasFE: fe != nil, srv: make([]curSrv, 0, len(recs))}
	for _, r := range recs {
		cb.srv = append(cb.srv, curSrv{rec: r})
	}
	if fe != nil {
		cb.settings = settingsOf(d, fe, sn.bind[d.Name], be, sn.checks[d.Name], sn.dsText[d.Name])
	}
	return cb
}

func (s *curSrv) server(dw int) services.Server {
	v := s.rec.view(dw)
	v.Admin, v.Down, v.HoldDown = s.admin, s.down, s.holdDown
	return v
}

// has reports whether the read found backend b.
func (v curView) has(b string) bool {
	_, ok := v[b]
	return ok
}

func (v curView) find(b, name string) *curSrv {
	cb, ok := v[b]
	if !ok {
		return nil
	}
	for i := range cb.srv {
		if cb.srv[i].rec.name == name {
			return &cb.srv[i]
		}
	}
	return nil
}

// server is server name of backend b as the diff sees it (false: no such
// server).
func (v curView) server(b, name string) (services.Server, bool) {
	s := v.find(b, name)
	if s == nil {
		return services.Server{}, false
	}
	return s.server(v[b].dw), true
}

// set records on server name of backend b (which the view has) what a read
// found: c's Admin, Down and HoldDown, the only fields a read sets (the
// others are the record's).
func (v curView) set(b, name string, c services.Server) {
	if s := v.find(b, name); s != nil {
		s.admin, s.down, s.holdDown = c.Admin, c.Down, c.HoldDown
	}
}

// backend is the target.Backend of b (nil: not found), made anew.
func (v curView) backend(b string) *target.Backend {
	cb, ok := v[b]
	if !ok {
		return nil
	}
	out := &target.Backend{Servers: make(map[string]services.Server, len(cb.srv))}
	cb.fill(b, out)
	return out
}

// fill makes into the view of backend name, its map of servers cleared
// first.
func (cb *curBack) fill(name string, into *target.Backend) {
	clear(into.Servers)
	into.Name, into.HasFrontend, into.Settings = name, cb.hasFE, cb.settings
	for i := range cb.srv {
		into.Servers[cb.srv[i].rec.name] = cb.srv[i].server(cb.dw)
	}
}

// diff is target.Diff of the view and desired, one service at a time (a
// service's changes depend on its own backend only), so that one backend
// is made at a time, into one map of servers used again (target.Diff
// keeps nothing of it: a new map per backend and diff was ~10 MB of
// garbage per 1,000-cluster mass failover).
func (v curView) diff(desired []services.Service) []target.Change {
	var out []target.Change
	one := make(map[string]*target.Backend, 1)
	scratch := &target.Backend{Servers: map[string]services.Server{}}
	for i := range desired {
		name := desired[i].Name
		if cb, ok := v[name]; ok {
			cb.fill(name, scratch)
			one[name] = scratch
		}
		out = append(out, target.Diff(one, desired[i:i+1])...)
		delete(one, name)
	}
	return out
}

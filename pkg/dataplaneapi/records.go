package dataplaneapi

import "github.com/haproxytech/client-native/v5/models"

// feRec, bindRec and beRec are what a snapshot keeps of a frontend, its
// bind and a backend: the fields the parser reads and the diff compares.
// The client-native models are 0.85–1.1 KB each before what their pointers
// hold: 12,000 of them (1,000 clusters) were ~11 MB of the controller's
// live heap, kept between applies. A write builds the model it needs
// (toModel) on the spot.
type feRec struct {
	name, from, mode, defaultBackend string
	maxconn                          int64 // -1: none
}

func (r *feRec) toModel() *models.Frontend {
	if r == nil {
		return nil
	}
	m := &models.Frontend{Name: r.name, From: r.from, Mode: r.mode, DefaultBackend: r.defaultBackend}
	if r.maxconn >= 0 {
		n := r.maxconn
		m.Maxconn = &n
	}
	return m
}

func feRecOf(m *models.Frontend) *feRec {
	r := &feRec{name: m.Name, from: m.From, mode: m.Mode, defaultBackend: m.DefaultBackend, maxconn: -1}
	if m.Maxconn != nil {
		r.maxconn = *m.Maxconn
	}
	return r
}

type bindRec struct {
	name, address string
	port          int64 // -1: none
}

func (r *bindRec) toModel() *models.Bind {
	if r == nil {
		return nil
	}
	m := &models.Bind{Address: r.address}
	m.Name = r.name
	if r.port >= 0 {
		p := r.port
		m.Port = &p
	}
	return m
}

func bindRecOf(m *models.Bind) *bindRec {
	r := &bindRec{name: m.Name, address: m.Address, port: -1}
	if m.Port != nil {
		r.port = *m.Port
	}
	return r
}

type beRec struct {
	name, from, mode, advCheck, httpConnMode string
	balance                                  *string // nil: no balance line
	// ds is the default-server line parsed, shared (dsEntry.ds); nil: none.
	ds *models.DefaultServer
}

func (r *beRec) toModel() *models.Backend {
	if r == nil {
		return nil
	}
	m := &models.Backend{Name: r.name, From: r.from, Mode: r.mode, AdvCheck: r.advCheck, HTTPConnectionMode: r.httpConnMode, DefaultServer: r.ds}
	if r.balance != nil {
		alg := *r.balance
		m.Balance = &models.Balance{Algorithm: &alg}
	}
	return m
}

func beRecOf(m *models.Backend) *beRec {
	r := &beRec{name: m.Name, from: m.From, mode: m.Mode, advCheck: m.AdvCheck, httpConnMode: m.HTTPConnectionMode, ds: m.DefaultServer}
	if m.Balance != nil && m.Balance.Algorithm != nil {
		alg := *m.Balance.Algorithm
		r.balance = &alg
	}
	return r
}

package services

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/jmespath/go-jmespath"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// DefaultServerOptions is Pigsty's default `default-server` line, used when a
// service definition has no options.
const DefaultServerOptions = "inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100"

// Pigsty's defaults for the per-member variables, used only when neither the
// inventory member nor its variables carry a value.
const (
	defaultPgPort        = 5432
	defaultPgbouncerPort = 6432
	defaultPatroniPort   = 8008
	defaultWeight        = 100
	// defaultServiceDest is pg_default_service_dest's documented default.
	defaultServiceDest = "pgbouncer"
)

// Error is a service that could not be built: a selector that fails at run
// time or returns something other than member documents, or a bad dest.
type Error struct {
	Cluster string
	Service string
	// Field is "selector", "backup" or "dest".
	Field string
	// Source and Line locate the definition in the inventory
	// (topology.ServiceDef), when known.
	Source string
	Line   int
	Err    error
}

func (e *Error) Error() string {
	if e.Source != "" {
		return fmt.Sprintf("cluster %s: service %s (%s): %s: %v", e.Cluster, e.Service, e.Source, e.Field, e.Err)
	}
	return fmt.Sprintf("cluster %s: service %s: %s: %v", e.Cluster, e.Service, e.Field, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Build evaluates every service definition of v.Cluster (pg_default_services
// then pg_services, as the cluster lists them) over the served members of v
// and returns the desired HAProxy services in that order.
//
// Servers follow the selectors' result order, as Pigsty's service template
// iterates them: members the selector returns, in the order it returns them
// (with Backup set when the backup selector matches them too), then members
// only the backup selector returns, in its order, as backup servers. A
// filter (`[? ...]`, `[]`) keeps v.Members order; sort_by, reverse and the
// like reorder, which `balance first` and hash balancing depend on. A member
// returned twice is served once, where it first appears. The result depends
// only on v.
func Build(v *topology.View) ([]Service, error) {
	if v == nil || v.Cluster == nil {
		return nil, fmt.Errorf("build services: no cluster")
	}
	c := v.Cluster
	served := make([]*topology.MemberView, 0, len(v.Members))
	docs := make([]any, 0, len(v.Members))
	for _, m := range v.Members {
		if m == nil || !m.Served {
			continue
		}
		served = append(served, m)
		docs = append(docs, m.Vars)
	}
	index := newDocIndex(served)
	out := make([]Service, 0, len(c.Services))
	// The selectors' orders, cut from one array: each selector returns
	// each member once at most, so it never grows (a slice cut before a
	// growth would stay valid anyway).
	ords := make([]int, 0, 2*len(served)*len(c.Services))
	for _, def := range c.Services {
		if def == nil {
			continue
		}
		e, err := evaluate(v, def, docs, index, &ords)
		if err != nil {
			return nil, err
		}
		out = append(out, e.build(v, served))
	}
	return out, nil
}

// evaluated is one service definition with its selectors run over the
// served members (Build).
type evaluated struct {
	def              *topology.ServiceDef
	dest             string
	destPort         int
	selected, backup map[int]bool
	// selOrder and bakOrder are the members the selector and the backup
	// selector returned, in their order, each once.
	selOrder, bakOrder []int
	roleDependent      bool
}

func evaluate(v *topology.View, def *topology.ServiceDef, docs []any, index *docIndex, ords *[]int) (evaluated, error) {
	c := v.Cluster
	fail := func(field string, err error) (evaluated, error) {
		return evaluated{}, &Error{Cluster: c.Name, Service: def.Name, Field: field, Source: def.Source, Line: def.Line, Err: err}
	}
	e := evaluated{def: def, roleDependent: def.Backup != "" || !selectsAll(def.Selector)}
	var err error
	if e.dest, e.destPort, err = resolveDest(def.Dest, c.Vars); err != nil {
		return fail("dest", err)
	}
	if hit, order, ok := everyMember(def.Selector, docs, ords); ok {
		e.selected, e.selOrder = hit, order
	} else {
		selExpr := def.SelectorExpr
		if selExpr == nil {
			// Definitions built by hand (tests, other loaders) may lack the
			// compiled form; compile once here rather than failing.
			if selExpr, err = topology.CompileSelector(def.Selector); err != nil {
				return fail("selector", fmt.Errorf("compile %q: %w", def.Selector, err))
			}
		}
		if e.selected, e.selOrder, err = match(selExpr, index.input(docs, def.Selector), index, ords); err != nil {
			return fail("selector", fmt.Errorf("%q: %w", def.Selector, err))
		}
	}
	if def.Backup != "" {
		bExpr := def.BackupExpr
		if bExpr == nil {
			if bExpr, err = topology.CompileSelector(def.Backup); err != nil {
				return fail("backup", fmt.Errorf("compile %q: %w", def.Backup, err))
			}
		}
		if e.backup, e.bakOrder, err = match(bExpr, index.input(docs, def.Backup), index, ords); err != nil {
			return fail("backup", fmt.Errorf("%q: %w", def.Backup, err))
		}
	}
	return e, nil
}

// everyMember is the result of a selector that takes every member as it
// is (`[]`, `[*]`: Pigsty's primary, replica and default services) over
// docs, the served members' documents, without running it: JMESPath's
// flatten or wildcard over a list of objects returns them all, in order.
// ok is false for any other selector, or a document that is not an object.
// Not selectsAll: that one ignores every blank, and JMESPath refuses "[ ]"
// (a selector Build may be given uncompiled must fail as it did).
func everyMember(sel string, docs []any, ords *[]int) (hit map[int]bool, order []int, ok bool) {
	switch strings.TrimSpace(sel) {
	case "[]", "[*]":
	default:
		return nil, nil, false
	}
	for _, d := range docs {
		if m, isMap := d.(map[string]any); !isMap || m == nil {
			return nil, nil, false
		}
	}
	hit = make(map[int]bool, len(docs))
	from := len(*ords)
	for i := range docs {
		hit[i] = true
		*ords = append(*ords, i)
	}
	return hit, (*ords)[from:len(*ords):len(*ords)], true
}

// build makes the service. Its servers and candidates share one array,
// sized as it ends: a role-dependent service is one long-lived object per
// plan instead of two (a mass failover plans every cluster 3-4 times among
// its garbage; every object left behind pins memory around it). Not one
// array per cluster: a target that keeps an unchanged service of an older
// plan (the twins layout does) would keep every service's servers of it.
// Each list is capped at its length, so an append to one never writes into
// the other.
func (e *evaluated) build(v *topology.View, served []*topology.MemberView) Service {
	c, def, dest := v.Cluster, e.def, e.dest
	name := def.FullName
	if name == "" {
		name = c.Name + "-" + def.Name
	}
	s := Service{
		Cluster:       c.Name,
		Name:          name,
		Service:       def.Name,
		IP:            orDefault(def.IP, "*"),
		Port:          def.Port,
		Check:         orDefault(def.Check, "/"),
		Dest:          dest,
		DestPort:      e.destPort,
		Balance:       orDefault(def.Balance, "roundrobin"),
		Maxconn:       def.Maxconn,
		DefaultServer: orDefault(def.Options, orDefault(c.DefaultServer, DefaultServerOptions)),
		RoleDependent: e.roleDependent,
	}
	s.BackupIsPrimary = e.roleDependent && backupIsPrimary(def, served)
	s.BackupIsReplicas = e.roleDependent && backupIsReplicas(def, served)
	if s.Maxconn == 0 {
		s.Maxconn = 5000
	}
	n := 0
	for i := range served {
		if e.selected[i] || e.backup[i] {
			n++
		}
	}
	if s.RoleDependent {
		n += len(served)
	}
	arena := make([]Server, 0, n)
	from := 0
	if s.RoleDependent && len(served) > 0 {
		for _, m := range served {
			cand := server(v, def, m, dest, true, false)
			cand.Unconfirmed = v.Live && (m.Live == nil || !aliveState(m.Live.State))
			cand.Primary = m.Role == "primary"
			arena = append(arena, cand)
		}
		s.Candidates = arena[from:len(arena):len(arena)]
		from = len(arena)
	}
	for _, i := range e.selOrder {
		arena = append(arena, server(v, def, served[i], dest, true, e.backup[i]))
	}
	for _, i := range e.bakOrder {
		if !e.selected[i] {
			arena = append(arena, server(v, def, served[i], dest, false, true))
		}
	}
	s.Servers = arena[from:len(arena):len(arena)]
	s.BackupAddrs = e.backupAddrs(s.Servers, served)
	return s
}

// backupAddrs is Service.BackupAddrs: nil when the backup servers of svs
// come in the backup selector's order, else the addresses in that order.
func (e *evaluated) backupAddrs(svs []Server, served []*topology.MemberView) []string {
	k := 0
	inOrder := true
	for i := range svs {
		if !svs[i].Backup {
			continue
		}
		if k >= len(e.bakOrder) || served[e.bakOrder[k]].Address != svs[i].Address {
			inOrder = false
			break
		}
		k++
	}
	if inOrder && k == len(e.bakOrder) {
		return nil
	}
	out := make([]string, len(e.bakOrder))
	for j, i := range e.bakOrder {
		out[j] = served[i].Address
	}
	return out
}

// match runs expr over the member documents (docs, or a copy made by
// docIndex.input) and returns the positions of the members it selected, as a
// set and in the order it returned them (each once). The result must be a
// list of member documents.
func match(expr *jmespath.JMESPath, docs []any, index *docIndex, ords *[]int) (hit map[int]bool, order []int, err error) {
	defer func() {
		// go-jmespath panics on a few malformed inputs; a selector must never
		// take the controller down.
		if r := recover(); r != nil {
			hit, order, err = nil, nil, fmt.Errorf("evaluation failed: %v", r)
		}
	}()
	res, err := expr.Search(docs)
	if err != nil {
		return nil, nil, err
	}
	list, ok := res.([]any)
	if !ok {
		return nil, nil, shapeError{fmt.Errorf("returned %s, want a list of members", kindOf(res))}
	}
	hit = make(map[int]bool, len(list))
	from := len(*ords)
	for n, e := range list {
		doc, ok := e.(map[string]any)
		if !ok {
			return nil, nil, shapeError{fmt.Errorf("element %d is %s, want a member (a filter such as [? ...], not a projection)", n, kindOf(e))}
		}
		i, ok := index.find(doc)
		if !ok {
			return nil, nil, shapeError{fmt.Errorf("element %d is not a member of the cluster (selectors must return members unchanged)", n)}
		}
		if !hit[i] {
			hit[i] = true
			*ords = append(*ords, i)
		}
	}
	return hit, (*ords)[from:len(*ords):len(*ords)], nil
}

// docIndex finds which member a document returned by a selector is.
// JMESPath filters return the input maps themselves, so the map's identity
// is tried first; expressions that build new objects (merge) are matched by
// pg_instance (set by the merge), then inventory_hostname.
type docIndex struct {
	byPtr  map[uintptr]int
	byName map[string]int
	// buf is the list each selector runs over: a copy of the documents,
	// made again for every selector, because go-jmespath's sort_by sorts
	// its argument in place (sort_by(@, &pg_weight) reordered the list
	// the next selectors of the cluster saw, and their servers with it).
	buf []any
}

// input returns what selector sel runs over: a fresh copy of docs in x's
// buffer, valid until the next call (match reads the result before another
// selector runs). When sel calls sort_by, the documents are deep copies
// too: sort_by over a list inside a document (sort_by(pg_databases, &name))
// would sort the inventory's own list, shared by every member, every
// plan and whatever reads the inventory meanwhile. The copies are found
// again by pg_instance (docIndex.find).
func (x *docIndex) input(docs []any, sel string) []any {
	if !strings.Contains(sel, "sort_by") {
		x.buf = append(x.buf[:0], docs...)
		return x.buf
	}
	x.buf = x.buf[:0]
	for _, d := range docs {
		x.buf = append(x.buf, deepCopy(d))
	}
	return x.buf
}

// deepCopy copies the maps and lists of a JSON-shaped value.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

func newDocIndex(served []*topology.MemberView) *docIndex {
	x := &docIndex{byPtr: make(map[uintptr]int, len(served)), byName: make(map[string]int, 2*len(served))}
	for i, m := range served {
		if m.Vars != nil {
			x.byPtr[reflect.ValueOf(m.Vars).Pointer()] = i
		}
		if k := docName(m.Vars); k != "" {
			x.byName[k] = i
		}
	}
	return x
}

func (x *docIndex) find(doc map[string]any) (int, bool) {
	if doc != nil {
		if i, ok := x.byPtr[reflect.ValueOf(doc).Pointer()]; ok {
			return i, true
		}
	}
	if k := docName(doc); k != "" {
		i, ok := x.byName[k]
		return i, ok
	}
	return 0, false
}

func docName(doc map[string]any) string {
	if s, ok := doc["pg_instance"].(string); ok && s != "" {
		return "i:" + s
	}
	if s, ok := doc["inventory_hostname"].(string); ok && s != "" {
		return "h:" + s
	}
	return ""
}

func server(v *topology.View, def *topology.ServiceDef, m *topology.MemberView, dest string, selected, backup bool) Server {
	sv := plainServer(v, def, m, dest, selected, backup)
	if m.Fenced && WriteCheck(def.Check) {
		sv.ForceDown, sv.HoldDown = true, m.FenceRising
		sv.Reason = internConcat(sv.Reason, "; forced DOWN, sessions cut: ", m.FenceReason)
	}
	if m.Promoted && WriteCheck(def.Check) {
		sv.ForceUp = true
		sv.Reason = internConcat(sv.Reason, "; forced UP: it just took the leader key and Patroni reports it running as primary")
	}
	sv.Writable = WriteCheck(def.Check) && !m.Fenced && v.Leader != "" && m.Name == v.Leader &&
		m.Live != nil && m.Live.Role == patroni.RolePrimary && m.Live.State == "running"
	return sv
}

// WriteCheck reports whether a service's Patroni health check passes only on
// the primary: such a service carries writes, and a member that is being
// demoted must take no new connections in it.
func WriteCheck(check string) bool {
	switch checkPath(check) {
	case "", "/primary", "/read-write", "/master", "/leader":
		return true
	}
	return false
}

// checkPath is a Patroni health check's path without its query and
// trailing slash ("/read-only?lag=1MB" -> "/read-only").
func checkPath(check string) string {
	path, _, _ := strings.Cut(check, "?")
	return strings.TrimSuffix(path, "/")
}

func plainServer(v *topology.View, def *topology.ServiceDef, m *topology.MemberView, dest string, selected, backup bool) Server {
	return Server{
		Name:      m.Name,
		Address:   m.Address,
		Port:      destPortOf(m, dest),
		CheckPort: memberPort(m, "patroni_port", m.PatroniPort, func(i *topology.Member) int { return i.PatroniPort }, defaultPatroniPort),
		Weight:    memberPort(m, "pg_weight", m.Weight, func(i *topology.Member) int { return i.Weight }, defaultWeight),
		CheckSSL:  v.Cluster.PatroniSSL,
		CAFile:    v.Cluster.PatroniCAFile,
		Backup:    backup,
		Selected:  selected,
		Reason:    reason(v, def, m, selected, backup),
	}
}

// reason says in one sentence why a server is in the service, e.g.
// "selected by [] (role primary, holds leader key); backup: matches [? ...]".
func reason(v *topology.View, def *topology.ServiceDef, m *topology.MemberView, selected, backup bool) string {
	var arr [256]byte
	b := arr[:0]
	if !selected {
		b = append(b, "not "...)
	}
	b = append(b, "selected by "...)
	b = append(b, def.Selector...)
	b = append(b, " ("...)
	b = appendDescribe(b, v, m)
	b = append(b, ')')
	switch {
	case backup:
		b = append(append(b, "; backup: matches "...), def.Backup...)
	case def.Backup != "":
		b = append(append(b, "; not backup: does not match "...), def.Backup...)
	}
	return internBytes(b)
}

// reasons are the reason texts in use, one copy each: a fleet's thousands
// of servers have a few dozen distinct ones (selectors and roles), kept as
// long as the plan (~4 MB of copies at 1,000 clusters). Bounded: past
// maxReasons a text is not remembered, only returned.
var reasons = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

const maxReasons = 4096

// internBytes returns b as a string, the remembered copy when there is one.
func internBytes(b []byte) string {
	reasons.Lock()
	defer reasons.Unlock()
	if s, ok := reasons.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(reasons.m) < maxReasons {
		reasons.m[s] = s
	}
	return s
}

// internConcat is intern of the parts' concatenation, made only when no
// equal reason is kept already (internBytes of a buffer on the stack): a
// plan of 1,000 clusters lays out ~24,000 twins, nearly every one with a
// reason the last plan had, and concatenating each first was ~1.2 MB of
// garbage per plan of a mass failover.
func internConcat(parts ...string) string {
	var buf [256]byte
	b := buf[:0]
	for _, p := range parts {
		b = append(b, p...)
	}
	return internBytes(b)
}

// intern is internBytes for a string.
func intern(s string) string {
	reasons.Lock()
	defer reasons.Unlock()
	if k, ok := reasons.m[s]; ok {
		return k
	}
	if len(reasons.m) < maxReasons {
		reasons.m[s] = s
	}
	return s
}

// appendDescribe appends to b what a reason says of member m: its role,
// the inventory's role where it differs, the leader key, an unknown member
// (written into reason's own buffer: a plan of 1,000 clusters describes
// ~24,000 servers).
func appendDescribe(b []byte, v *topology.View, m *topology.MemberView) []byte {
	b = append(append(b, "role "...), m.Role...)
	if m.InventoryRole != "" && m.InventoryRole != m.Role {
		b = append(append(b, ", inventory "...), m.InventoryRole...)
	}
	switch {
	case v.Leader != "" && v.Leader == m.Name:
		b = append(b, ", holds leader key"...)
	case v.Leaderless && v.RoleLeader != "" && v.RoleLeader == m.Name:
		b = append(b, ", last known leader, no leader key"...)
	}
	if !m.Known {
		b = append(b, ", not in inventory"...)
	}
	return b
}

// resolveDest turns a definition's dest into "postgres", "pgbouncer" or a
// port number as text, plus the port it means at cluster level.
func resolveDest(dest string, clusterVars map[string]any) (string, int, error) {
	d := strings.TrimSpace(dest)
	if d == "" || d == "default" {
		d = defaultServiceDest
		if raw, ok := clusterVars["pg_default_service_dest"]; ok && raw != nil {
			switch x := raw.(type) {
			case string:
				d = strings.TrimSpace(x)
			default:
				n, ok := toInt(raw)
				if !ok {
					return "", 0, fmt.Errorf("pg_default_service_dest is %s, want postgres, pgbouncer or a port", kindOf(raw))
				}
				d = strconv.Itoa(n)
			}
			if d == "default" || d == "" {
				return "", 0, fmt.Errorf("pg_default_service_dest %q: want postgres, pgbouncer or a port", d)
			}
		}
	}
	switch d {
	case "postgres":
		return d, varInt(clusterVars, "pg_port", defaultPgPort), nil
	case "pgbouncer":
		return d, varInt(clusterVars, "pgbouncer_port", defaultPgbouncerPort), nil
	}
	n, err := strconv.Atoi(d)
	if err != nil || n < 1 || n > 65535 {
		return "", 0, fmt.Errorf("%q: want default, postgres, pgbouncer or a port 1-65535", d)
	}
	return strconv.Itoa(n), n, nil
}

func destPortOf(m *topology.MemberView, dest string) int {
	switch dest {
	case "postgres":
		return memberPort(m, "pg_port", m.PgPort, func(i *topology.Member) int { return i.PgPort }, defaultPgPort)
	case "pgbouncer":
		return memberPort(m, "pgbouncer_port", m.PgbouncerPort, func(i *topology.Member) int { return i.PgbouncerPort }, defaultPgbouncerPort)
	}
	n, _ := strconv.Atoi(dest) // resolveDest validated it
	return n
}

// memberPort reads a numeric member setting: the value the merge chose
// (merged, when set), else the typed inventory field when the member is in the
// inventory, else its selector variables, else def.
func memberPort(m *topology.MemberView, key string, merged int, field func(*topology.Member) int, def int) int {
	if merged > 0 {
		return merged
	}
	if m.Inv != nil {
		// pg_weight 0 is meaningful (a drained member); ports are never 0.
		if n := field(m.Inv); n > 0 || key == "pg_weight" {
			return n
		}
	}
	if n, ok := toInt(m.Vars[key]); ok {
		return n
	}
	return def
}

func varInt(vars map[string]any, key string, def int) int {
	if n, ok := toInt(vars[key]); ok {
		return n
	}
	return def
}

func toInt(v any) (int, bool) {
	switch x := v.(type) {
	case int:
		return x, true
	case int64:
		return int(x), true
	case float64:
		if x != math.Trunc(x) || math.IsInf(x, 0) {
			return 0, false
		}
		return int(x), true
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(x))
		return n, err == nil
	}
	return 0, false
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64, int, int64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

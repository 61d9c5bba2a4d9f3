package topology

import (
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load reads the Pigsty inventory at path and parses it with Parse.
func Load(path string) (*Inventory, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	return Parse(path, data)
}

// Parse parses a Pigsty (Ansible YAML) inventory. file is used in error
// messages only.
//
// The inventory is `all.vars`, `all.hosts` and groups under `all.children`
// (nested to any depth). Each host's variables are merged as Ansible merges
// them, key by key, the later layer replacing the earlier one: built-in
// defaults < all.vars < the vars of every group the host is in (its groups
// and their ancestors, by depth, then ansible_group_priority, then name) <
// host vars. A PostgreSQL cluster is every host whose merged pg_cluster has
// one value, whatever groups they are in, as Pigsty selects a cluster's
// members (hostvars filtered on pg_cluster); hosts without pg_cluster are
// ignored. Clusters come in the order of their first host, members in the
// order hosts first appear in the file.
//
// On any problem Parse returns a nil inventory and every *Error found, joined
// with errors.Join: nothing half-loaded is ever returned.
func Parse(file string, data []byte) (*Inventory, error) {
	return ParseWith(file, data, ParseOptions{})
}

// ParseWith is Parse with options (the Pigsty version to render for).
func ParseWith(file string, data []byte, opts ParseOptions) (*Inventory, error) {
	if !ValidVersion(opts.PigstyVersion) {
		return nil, fmt.Errorf("pigsty version %q: want auto, v3 or v4", opts.PigstyVersion)
	}
	p := &parser{file: file, decoded: map[*yaml.Node]layer{}, work: maxWork, opts: opts,
		groupsByName: map[string]*group{}, hostsByName: map[string]*hostEntry{}, cvs: map[*Cluster]layer{}}
	inv := p.parse(data)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	// A copy: a pointer into the parser would keep the whole parser alive
	// (the YAML tree, every vars layer) as long as the inventory (23 MB of
	// 27 MB for 1,000 clusters).
	out := *inv
	return &out, nil
}

// Cluster returns the cluster named name, or nil.
func (inv *Inventory) Cluster(name string) *Cluster {
	for _, c := range inv.Clusters {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Member returns the member named name (<pg_cluster>-<pg_seq>), or nil.
func (c *Cluster) Member(name string) *Member {
	for _, m := range c.Members {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// varEntry is one variable of one layer, with the node it came from so errors
// can give its line (node is nil for built-in defaults).
type varEntry struct {
	val  any // as yaml.v3 decoded it (ints are int): validation reads this
	json any // normalised once per layer (see normalize): Vars hold this
	node *yaml.Node
	src  string // where the vars mapping is ("" for built-in defaults)
}

type layer map[string]varEntry

// merged flattens layers, later ones replacing earlier ones key by key.
func merged(layers []layer) layer {
	out := layer{}
	for _, l := range layers {
		for k, v := range l {
			out[k] = v
		}
	}
	return out
}

func (l layer) line(key string) int {
	if e, ok := l[key]; ok && e.node != nil {
		return e.node.Line
	}
	return 0
}

// clusterScoped are variables that describe the whole cluster (its services,
// where they live, the DCS namespace): every member must have the same
// merged value, wherever it is set.
var clusterScoped = []string{"pg_services", "pg_default_services", "pg_default_service_dest", "pg_namespace", "pg_service_provider",
	"pg_mode", "pg_shard", "pg_group", "pg_rto", "pg_rto_plan", "patroni_ssl_enabled"}

// maxWork is far beyond any real inventory (thousands of hosts and groups).
const maxWork = 1 << 18

// spend uses n units of work; once the budget is gone it records one error
// and reports false, and the walk stops.
func (p *parser) spend(n int, line int) bool {
	if p.work <= 0 {
		return false
	}
	p.work -= n
	if p.work <= 0 {
		p.errf(line, where{}, "", "inventory too large (aliases expand to more than %d nodes)", maxWork)
		return false
	}
	return true
}

// where identifies what an error is about.
type where struct {
	cluster, host string
}

type parser struct {
	// work bounds the walk over groups and merge keys: aliases turn the YAML
	// tree into a DAG, and a few lines reusing an anchor at each level would
	// otherwise make the walk exponential.
	work    int
	file    string
	errs    []error
	inv     Inventory
	decoded map[*yaml.Node]layer // vars mappings already decoded
	// Ansible's view of the inventory: groups by name and hosts in the
	// order they first appear (hostvars order), see membership.go.
	groupsByName map[string]*group
	groupOrder   []*group
	hostsByName  map[string]*hostEntry
	hostOrder    []*hostEntry
	opts         ParseOptions
	cvs          map[*Cluster]layer // each cluster's merged vars (its first member's)
	// strs holds one copy of every text the inventory's values and
	// service definitions repeat: what the parse keeps is shared.
	strs strTable
}

// intern returns the parse's one copy of s.
func (p *parser) intern(s string) string { return p.strs.str(s) }

func (p *parser) errf(line int, w where, field, format string, args ...any) {
	p.add(&Error{File: p.file, Line: line, Cluster: w.cluster, Host: w.host, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// maxErrors keeps the report readable; the first errors are the useful ones.
const maxErrors = 50

func (p *parser) add(e *Error) {
	switch {
	case len(p.errs) < maxErrors:
		p.errs = append(p.errs, e)
	case len(p.errs) == maxErrors:
		p.errs = append(p.errs, &Error{File: p.file, Msg: "too many errors; stopping the report here"})
	}
}

func nodeLine(n *yaml.Node) int {
	if n == nil {
		return 0
	}
	return n.Line
}

var yamlLineRE = regexp.MustCompile(`line (\d+): (.*)`)

// yamlParserProblems are the messages of yaml.v3's parser (as opposed to its
// scanner) that come with a context line.
var yamlParserProblems = map[string]bool{
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected <document start>": true,
}

// yamlErr turns a yaml.v3 error into an *Error carrying its line.
func (p *parser) yamlErr(err error, line int, w where, field string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		if n, convErr := strconv.Atoi(m[1]); convErr == nil {
			line = n
		}
		msg = m[2]
		// yaml.v3 (3.0.1) reports parser errors at the 0-based line of the
		// enclosing collection (its scanner errors are 1-based): shift those
		// so the line points at where the broken mapping or list starts.
		if yamlParserProblems[msg] {
			line++
			msg += " (in the collection starting on this line)"
		}
	}
	p.add(&Error{File: p.file, Line: line, Cluster: w.cluster, Host: w.host, Field: field, Msg: "invalid YAML: " + msg, Err: err})
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// pairs iterates a mapping node's key/value pairs, reporting duplicate keys
// (yaml.v3 only catches those when decoding into a Go map).
func (p *parser) pairs(m *yaml.Node, w where, what string, fn func(key string, k, v *yaml.Node)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], resolve(m.Content[i+1])
		if prev, dup := seen[k.Value]; dup {
			p.errf(k.Line, w, what+"."+k.Value, "duplicate key (first at line %d)", prev)
			continue
		}
		seen[k.Value] = k.Line
		fn(k.Value, k, v)
	}
}

func (p *parser) parse(data []byte) *Inventory {
	p.inv.File = p.file
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		p.yamlErr(err, 0, where{}, "")
		return nil
	}
	yaml11Bools(&doc)
	if len(doc.Content) == 0 || isNull(resolve(doc.Content[0])) {
		p.errf(0, where{}, "", "empty inventory (want a mapping with key all)")
		return nil
	}
	root := resolve(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		p.errf(root.Line, where{}, "", "top level must be a mapping with key all")
		return nil
	}
	var all *yaml.Node
	p.pairs(root, where{}, "", func(key string, k, v *yaml.Node) {
		if key != "all" {
			p.errf(k.Line, where{}, key, "unknown top-level key (want all)")
			return
		}
		all = v
	})
	if all == nil || isNull(all) {
		if len(p.errs) == 0 {
			p.errf(root.Line, where{}, "all", "missing or empty")
		}
		return nil
	}
	if all.Kind != yaml.MappingNode {
		p.errf(all.Line, where{}, "all", "must be a mapping with children and vars")
		return nil
	}
	var allVars layer
	// Hosts and groups are recorded in file order (Ansible's hostvars order).
	p.pairs(all, where{}, "all", func(key string, k, v *yaml.Node) {
		switch key {
		case "vars":
			allVars = p.decodeVars(v, where{}, "all.vars", "all.vars")
		case "children":
			p.walk(v, "", "all.children")
		case "hosts":
			// Hosts straight under all are in Ansible's "ungrouped" group.
			p.hostsOf(v, nil, where{}, "all.hosts")
		default:
			p.errf(k.Line, where{}, "all."+key, "unknown key (want children, vars or hosts)")
		}
	})
	p.buildClusters(defaultLayer(), allVars)
	p.applyVersion(p.opts, allVars, p.cvs)
	p.checkProviders()
	p.validate()
	if len(p.errs) == 0 && len(p.inv.Clusters) == 0 {
		p.errf(0, where{}, "all.children", "no PostgreSQL cluster (no host has pg_cluster)")
	}
	return &p.inv
}

func defaultLayer() layer {
	l := layer{}
	for k, v := range defaultVars() {
		l[k] = varEntry{val: v, json: normalize(v)}
	}
	return l
}

// decodeVars decodes a vars mapping into a layer. Merge keys (<<) and anchors
// are honoured; each entry keeps its value node for error lines.
//
// src is where the mapping is in the inventory (e.g. all.children.pg-test.vars),
// kept on each entry for messages about a variable whose value is shared.
func (p *parser) decodeVars(n *yaml.Node, w where, field, src string) layer {
	n = resolve(n)
	if isNull(n) {
		return layer{}
	}
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, w, field, "must be a mapping of variables")
		return layer{}
	}
	// Aliases can make one vars mapping reachable from many groups; decode
	// it once.
	if l, ok := p.decoded[n]; ok {
		return l
	}
	l := layer{}
	p.decoded[n] = l
	var vals map[string]any
	if err := n.Decode(&vals); err != nil {
		p.yamlErr(err, n.Line, w, field)
		return l
	}
	nodes := map[string]*yaml.Node{}
	p.collectValueNodes(n, nodes, 0)
	for k, v := range vals {
		l[p.intern(k)] = varEntry{val: v, json: normalizeWith(v, &p.strs), node: nodes[k], src: src}
	}
	return l
}

// collectValueNodes maps each key of a mapping (including keys brought in by
// merge keys, which explicit keys override) to its value node.
func (p *parser) collectValueNodes(m *yaml.Node, out map[string]*yaml.Node, depth int) {
	if depth > 16 || !p.spend(len(m.Content)/2+1, m.Line) { // merge chains this deep are not real inventories
		return
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value != "<<" {
			continue
		}
		v := resolve(m.Content[i+1])
		switch v.Kind {
		case yaml.MappingNode:
			p.collectValueNodes(v, out, depth+1)
		case yaml.SequenceNode:
			for _, s := range v.Content {
				if s = resolve(s); s.Kind == yaml.MappingNode {
					p.collectValueNodes(s, out, depth+1)
				}
			}
		}
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k := m.Content[i].Value; k != "<<" {
			out[k] = m.Content[i+1]
		}
	}
}

// str reads a string variable; absent or null gives def.
func (p *parser) str(l layer, key string, w where, def string) (string, bool) {
	e, ok := l[key]
	if !ok || e.val == nil {
		return def, true
	}
	s, ok := e.val.(string)
	if !ok {
		p.errf(nodeLine(e.node), w, key, "must be a string, got %s", describe(e.val))
		return def, false
	}
	return s, true
}

// asInt converts a YAML-decoded integer. Floats, strings and booleans are not
// integers: Pigsty never quotes these numbers, and accepting "5432" would hide
// templating mistakes.
func asInt(v any) (int, bool) {
	switch x := v.(type) {
	case int:
		return x, true
	case int64:
		if x >= math.MinInt && x <= math.MaxInt {
			return int(x), true
		}
	case uint64:
		if x <= math.MaxInt {
			return int(x), true
		}
	}
	return 0, false
}

// intIn reads an integer variable in [lo, hi].
func (p *parser) intIn(l layer, key string, w where, lo, hi int) (int, bool) {
	e, ok := l[key]
	if !ok || e.val == nil {
		p.errf(nodeLine(e.node), w, key, "missing (want an integer between %d and %d)", lo, hi)
		return 0, false
	}
	n, ok := asInt(e.val)
	if !ok || n < lo || n > hi {
		p.errf(nodeLine(e.node), w, key, "must be an integer between %d and %d, got %s", lo, hi, describe(e.val))
		return 0, false
	}
	return n, true
}

// validName accepts what HAProxy allows in a section/server name (and what is
// safe in an etcd key): letters, digits, '-', '_', '.', ':'.
var validName = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)

var roles = map[string]bool{"primary": true, "replica": true, "offline": true}

// member validates one host's merged variables; hostLine (the host key's
// line) locates errors about variables the host lacks.
func (p *parser) member(mv layer, w where, cluster string, hostLine int) *Member {
	nErrs := len(p.errs)
	m := &Member{Host: w.host}
	e, ok := mv["pg_seq"]
	if !ok || e.val == nil {
		p.errf(hostLine, w, "pg_seq", "missing (each host needs an integer pg_seq)")
	} else if n, isInt := asInt(e.val); !isInt || n < 0 {
		p.errf(nodeLine(e.node), w, "pg_seq", "must be a non-negative integer, got %s", describe(e.val))
	} else {
		m.Seq = n
		m.Name = cluster + "-" + strconv.Itoa(n)
	}
	if e, ok := mv["pg_role"]; !ok || e.val == nil {
		p.errf(hostLine, w, "pg_role", "missing (want primary, replica or offline)")
	} else if s, isStr := e.val.(string); !isStr || !roles[s] {
		p.errf(nodeLine(e.node), w, "pg_role", "unknown role %s (want primary, replica or offline)", describe(e.val))
	} else {
		m.Role = p.intern(s)
	}
	m.Weight, _ = p.intIn(mv, "pg_weight", w, 0, 255)
	m.PgPort, _ = p.intIn(mv, "pg_port", w, 1, 65535)
	m.PgbouncerPort, _ = p.intIn(mv, "pgbouncer_port", w, 1, 65535)
	m.PatroniPort, _ = p.intIn(mv, "patroni_port", w, 1, 65535)
	if len(p.errs) > nErrs {
		return nil
	}
	m.Vars = jsonVars(mv)
	return m
}

// checkNodePorts rejects a service port that equals a member's own
// PostgreSQL, pgbouncer or Patroni port: without pg_service_provider (or
// with one that names no group, see delegated) every member's HAProxy binds
// every service port on that member.
func (p *parser) checkNodePorts(c *Cluster, w where) {
	for _, m := range c.Members {
		for _, s := range c.Services {
			for _, own := range []struct {
				name string
				port int
			}{{"pg_port", m.PgPort}, {"pgbouncer_port", m.PgbouncerPort}, {"patroni_port", m.PatroniPort}} {
				if s.Port == own.port {
					p.errf(s.Line, where{cluster: w.cluster, host: m.Host}, s.Source+".port",
						"service %q: port %d collides with %s on the member (every member's HAProxy binds the service ports)", s.Name, s.Port, own.name)
				}
			}
		}
	}
}

// delegated reports whether c's services go to its pg_service_provider
// group rather than to its members' own HAProxies. As Pigsty's pgsql role
// (service_local.yml when pg_service_provider is empty or not in groups) and
// placement.Place do, a provider that names no inventory group is local.
func (p *parser) delegated(c *Cluster) bool {
	return c.ServiceProvider != "" && p.isGroup(c.ServiceProvider)
}

// isGroup reports whether name is an Ansible group of the inventory (as
// Ansible's groups has them: all, ungrouped and every group under children,
// empty or not).
func (p *parser) isGroup(name string) bool {
	return name == "all" || name == "ungrouped" || p.groupsByName[name] != nil
}

// checkProviders enforces that clusters delegating to the same
// pg_service_provider group use distinct service ports: they share HAProxies.
// A provider that is not a group is local (see delegated): its clusters'
// ports are checked per member (checkNodePorts), not here.
func (p *parser) checkProviders() {
	type owner struct{ cluster, service string }
	byProvider := map[string]map[int]owner{}
	for _, c := range p.inv.Clusters {
		if !p.delegated(c) {
			continue
		}
		ports := byProvider[c.ServiceProvider]
		if ports == nil {
			ports = map[int]owner{}
			byProvider[c.ServiceProvider] = ports
		}
		for _, s := range c.Services {
			if o, dup := ports[s.Port]; dup {
				p.errf(s.Line, where{cluster: c.Name}, s.Source+".port",
					"service %q: port %d already used by service %q of cluster %s on provider group %s", s.Name, s.Port, o.service, o.cluster, c.ServiceProvider)
				continue
			}
			ports[s.Port] = owner{c.Name, s.Name}
		}
	}
}

// jsonVars returns a layer's JSON-shaped values. Nested values are shared
// between members (they were normalised once per layer): read-only.
func jsonVars(l layer) map[string]any {
	out := make(map[string]any, len(l))
	for k, e := range l {
		out[k] = e.json
	}
	return out
}

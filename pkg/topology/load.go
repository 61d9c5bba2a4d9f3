package topology

import (
	"errors"
	"fmt"
	"maps"
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
// The inventory is `all.vars`, and groups under `all.children`; every group
// whose vars set pg_cluster is a PostgreSQL cluster, the others are ignored
// (their own children are searched, with their vars as an extra layer). Clusters
// and members keep the order of the file. Variables are merged per key, the
// later layer replacing the earlier one as Ansible does: built-in defaults <
// all.vars < group vars < host vars.
//
// On any problem Parse returns a nil inventory and every *Error found, joined
// with errors.Join: nothing half-loaded is ever returned.
func Parse(file string, data []byte) (*Inventory, error) {
	p := &parser{file: file, clusters: map[string]*yaml.Node{}, decoded: map[*yaml.Node]layer{}, work: maxWork}
	inv := p.parse(data)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return inv, nil
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
// where they live, the DCS namespace): a per-host value would be ambiguous,
// so they must be set at group or global level.
var clusterScoped = []string{"pg_cluster", "pg_services", "pg_default_services", "pg_default_service_dest", "pg_namespace", "pg_service_provider"}

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
	work     int
	file     string
	errs     []error
	inv      Inventory
	clusters map[string]*yaml.Node // pg_cluster -> its group key node, for duplicates
	decoded  map[*yaml.Node]layer  // vars mappings already decoded
}

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
	var children *yaml.Node
	var allVars layer
	p.pairs(all, where{}, "all", func(key string, k, v *yaml.Node) {
		switch key {
		case "vars":
			allVars = p.decodeVars(v, where{}, "all.vars")
		case "children":
			children = v
		case "hosts":
			// Ungrouped hosts cannot belong to a cluster group.
		default:
			p.errf(k.Line, where{}, "all."+key, "unknown key (want children, vars or hosts)")
		}
	})
	p.groups(children, []layer{defaultLayer(), allVars}, "all.children")
	p.checkProviders()
	if len(p.errs) == 0 && len(p.inv.Clusters) == 0 {
		p.errf(0, where{}, "all.children", "no PostgreSQL cluster (no group sets pg_cluster)")
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
func (p *parser) decodeVars(n *yaml.Node, w where, field string) layer {
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
		l[k] = varEntry{val: v, json: normalize(v), node: nodes[k]}
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

func (p *parser) groups(children *yaml.Node, parents []layer, path string) {
	if isNull(children) {
		return
	}
	if children.Kind != yaml.MappingNode {
		p.errf(children.Line, where{}, path, "must be a mapping of groups")
		return
	}
	p.pairs(children, where{}, path, func(name string, k, g *yaml.Node) {
		if isNull(g) || !p.spend(len(g.Content)+1, k.Line) {
			return // a group with nothing in it, or out of budget
		}
		gpath := path + "." + name
		if g.Kind != yaml.MappingNode {
			p.errf(g.Line, where{}, gpath, "group must be a mapping with hosts, vars or children")
			return
		}
		var hosts, kids *yaml.Node
		gvars := layer{}
		p.pairs(g, where{}, gpath, func(key string, k, v *yaml.Node) {
			switch key {
			case "hosts":
				hosts = v
			case "vars":
				gvars = p.decodeVars(v, where{}, gpath+".vars")
			case "children":
				kids = v
			default:
				p.errf(k.Line, where{}, gpath+"."+key, "unknown key (want hosts, vars or children)")
			}
		})
		layers := append(append([]layer(nil), parents...), gvars)
		if _, ok := gvars["pg_cluster"]; ok {
			p.cluster(k, gpath, hosts, kids, layers)
			return
		}
		p.groups(kids, layers, gpath+".children")
	})
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

func (p *parser) cluster(groupKey *yaml.Node, gpath string, hosts, kids *yaml.Node, layers []layer) {
	cv := merged(layers)
	nErrs := len(p.errs)
	name, _ := p.str(cv, "pg_cluster", where{}, "")
	if name == "" || !validName.MatchString(name) {
		if len(p.errs) == nErrs {
			p.errf(cv.line("pg_cluster"), where{}, gpath+".vars.pg_cluster", "invalid cluster name %q (want letters, digits, '-', '_', '.')", name)
		}
		return
	}
	w := where{cluster: name}
	if prev, dup := p.clusters[name]; dup {
		p.errf(groupKey.Line, w, "pg_cluster", "duplicate cluster (also group %s at line %d)", prev.Value, prev.Line)
		return
	}
	p.clusters[name] = groupKey
	if kids != nil && !isNull(kids) {
		p.errf(kids.Line, w, "children", "nested groups inside a PostgreSQL cluster group are not supported; list the members under hosts")
	}

	c := &Cluster{Name: name}
	ns, _ := p.str(cv, "pg_namespace", w, defaultNamespace)
	// Patroni builds keys as /<namespace>/<scope>/..., collapsing slashes.
	c.Namespace = strings.TrimRight("/"+strings.Trim(ns, "/"), "/")
	c.ServiceProvider, _ = p.str(cv, "pg_service_provider", w, "")
	if e, set := cv["pg_default_service_dest"]; set && e.val != nil {
		if d, ok := destText(e.val); !ok || d == defaultDest {
			p.errf(nodeLine(e.node), w, "pg_default_service_dest", "unknown destination %s (want postgres, pgbouncer or a port number)", describe(e.val))
		}
	}
	c.Services = p.services(cv, w)

	if isNull(hosts) {
		p.errf(groupKey.Line, w, "hosts", "cluster has no hosts")
		return
	}
	if hosts.Kind != yaml.MappingNode {
		p.errf(hosts.Line, w, "hosts", "must be a mapping of host -> vars")
		return
	}
	seqs := map[int]string{}
	primary := ""
	p.pairs(hosts, w, "hosts", func(host string, k, hv *yaml.Node) {
		hw := where{cluster: name, host: host}
		if host == "" {
			p.errf(k.Line, w, "hosts", "empty host key")
			return
		}
		hl := p.decodeVars(hv, hw, "vars")
		for _, key := range clusterScoped {
			if _, set := hl[key]; set {
				p.errf(hl.line(key), hw, key, "is a cluster setting: set it in the group vars, not per host")
			}
		}
		// inventory_hostname is Ansible's magic variable: always the host key.
		hl = maps.Clone(hl) // hl may be shared through an alias
		hl["inventory_hostname"] = varEntry{val: host, json: host, node: k}
		mv := merged(append(append([]layer(nil), layers...), hl))
		m := p.member(mv, hw, name, k.Line)
		if m == nil {
			return
		}
		if prev, dup := seqs[m.Seq]; dup {
			p.errf(mv.line("pg_seq"), hw, "pg_seq", "duplicate pg_seq %d (also host %s)", m.Seq, prev)
			return
		}
		seqs[m.Seq] = host
		if m.Role == "primary" {
			if primary != "" {
				p.errf(mv.line("pg_role"), hw, "pg_role", "second primary (host %s is already primary)", primary)
				return
			}
			primary = host
		}
		c.Members = append(c.Members, m)
	})
	if len(c.Members) == 0 && len(p.errs) == nErrs {
		p.errf(hosts.Line, w, "hosts", "cluster has no hosts")
	}
	if c.ServiceProvider == "" {
		p.checkNodePorts(c, w)
	}
	c.Vars = jsonVars(cv)
	if len(p.errs) == nErrs {
		p.inv.Clusters = append(p.inv.Clusters, c)
	}
}

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
		m.Role = s
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
// PostgreSQL, pgbouncer or Patroni port: without pg_service_provider every
// member's HAProxy binds every service port on that member.
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

// checkProviders enforces that clusters delegating to the same
// pg_service_provider group use distinct service ports: they share HAProxies.
func (p *parser) checkProviders() {
	type owner struct{ cluster, service string }
	byProvider := map[string]map[int]owner{}
	for _, c := range p.inv.Clusters {
		if c.ServiceProvider == "" {
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

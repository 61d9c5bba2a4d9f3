package topology

import (
	"maps"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// group is one Ansible group. A name seen twice (under two parents) is one
// group, as in Ansible: its vars, hosts and parents add up.
type group struct {
	name     string
	key      *yaml.Node // where the group is first declared
	vars     layer      // own vars (later declarations override per key)
	parents  []string
	children []string
	// depth is Ansible's: 1 under all, the longest path from all otherwise.
	depth    int
	priority int // ansible_group_priority (default 1)
	// hasHosts: the group, or a descendant, lists at least one host.
	hasHosts bool
	hosts    []string // its own hosts, in file order
	// ancestors (computed once): every group above this one.
	ancestors []string
	state     int // 0 new, 1 visiting, 2 done (depth computation)
}

// hostEntry is one inventory host: its own vars (merged over every place it
// is listed) and the groups that list it.
type hostEntry struct {
	name   string
	key    *yaml.Node // first occurrence, for lines
	vars   layer
	groups []string
}

// walk records the groups under children (parent "" = all).
func (p *parser) walk(children *yaml.Node, parent, path string) {
	if isNull(children) {
		return
	}
	if children.Kind != yaml.MappingNode {
		p.errf(children.Line, where{}, path, "must be a mapping of groups")
		return
	}
	p.pairs(children, where{}, path, func(name string, k, g *yaml.Node) {
		if !p.spend(len(g.Content)+1, k.Line) {
			return // out of budget
		}
		gr := p.groupsByName[name]
		if gr == nil {
			gr = &group{name: name, key: k, vars: layer{}, priority: 1}
			p.groupsByName[name] = gr
			p.groupOrder = append(p.groupOrder, gr)
		}
		if parent != "" && !contains(gr.parents, parent) {
			gr.parents = append(gr.parents, parent)
			pg := p.groupsByName[parent]
			pg.children = append(pg.children, name)
		}
		if isNull(g) {
			return // a group with nothing in it
		}
		gpath := path + "." + name
		if g.Kind != yaml.MappingNode {
			p.errf(g.Line, where{}, gpath, "group must be a mapping with hosts, vars or children")
			return
		}
		var hosts, kids *yaml.Node
		p.pairs(g, where{}, gpath, func(key string, k, v *yaml.Node) {
			switch key {
			case "hosts":
				hosts = v
			case "vars":
				gv := p.decodeVars(v, where{}, gpath+".vars", gpath+".vars")
				if len(gv) > 0 {
					gr.vars = maps.Clone(gr.vars)
					maps.Copy(gr.vars, gv)
				}
			case "children":
				kids = v
			default:
				p.errf(k.Line, where{}, gpath+"."+key, "unknown key (want hosts, vars or children)")
			}
		})
		// Errors about the hosts of a group that names its cluster say so.
		w := where{}
		if e, ok := gr.vars["pg_cluster"]; ok {
			if s, isStr := e.val.(string); isStr {
				w.cluster = s
			}
		}
		if p.hostsOf(hosts, gr, w, gpath+".hosts") {
			gr.hasHosts = true
		}
		p.walk(kids, name, gpath+".children")
	})
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// hostsOf records the hosts of a hosts mapping (g nil = ungrouped) and
// reports whether there was at least one.
func (p *parser) hostsOf(hosts *yaml.Node, g *group, w where, path string) bool {
	if isNull(hosts) {
		return false
	}
	if hosts.Kind != yaml.MappingNode {
		p.errf(hosts.Line, w, "hosts", "must be a mapping of host -> vars")
		return false
	}
	if !p.spend(len(hosts.Content)/2+1, hosts.Line) {
		return false // aliases repeating one hosts mapping in many groups
	}
	found := false
	p.pairs(hosts, w, "hosts", func(host string, k, hv *yaml.Node) {
		hw := where{cluster: w.cluster, host: host}
		if host == "" {
			p.errf(k.Line, w, "hosts", "empty host key")
			return
		}
		found = true
		hl := p.decodeVars(hv, hw, "vars", path+"."+host)
		h := p.hostsByName[host]
		if h == nil {
			h = &hostEntry{name: host, key: k, vars: hl}
			p.hostsByName[host] = h
			p.hostOrder = append(p.hostOrder, h)
		} else if len(hl) > 0 {
			// Listed again: Ansible sets each variable again, the later wins.
			h.vars = maps.Clone(h.vars)
			maps.Copy(h.vars, hl)
		}
		if g != nil && !contains(h.groups, g.name) {
			h.groups = append(h.groups, g.name)
			g.hosts = append(g.hosts, host)
		}
	})
	return found
}

// resolveGroups computes depth, priority, ancestors and hasHosts of every
// group; a group that is its own ancestor is an error (Ansible refuses it).
func (p *parser) resolveGroups() bool {
	ok := true
	var visit func(g *group) bool
	visit = func(g *group) bool {
		switch g.state {
		case 2:
			return true
		case 1:
			p.errf(nodeLine(g.key), where{}, "all.children."+g.name, "group %s is its own ancestor", g.name)
			return false
		}
		g.state = 1
		g.depth = 1
		seen := map[string]bool{}
		for _, pn := range g.parents {
			pg := p.groupsByName[pn]
			if !visit(pg) {
				return false
			}
			if pg.depth+1 > g.depth {
				g.depth = pg.depth + 1
			}
			for _, a := range append([]string{pn}, pg.ancestors...) {
				if !seen[a] {
					seen[a] = true
					g.ancestors = append(g.ancestors, a)
				}
			}
		}
		if e, set := g.vars["ansible_group_priority"]; set {
			if n, isInt := asInt(e.val); isInt {
				g.priority = n
			}
		}
		g.state = 2
		return true
	}
	for _, g := range p.groupOrder {
		if !visit(g) {
			ok = false
			break
		}
	}
	if !ok {
		return false
	}
	// A group with hosts makes all its ancestors have hosts.
	for _, g := range p.groupOrder {
		if g.hasHosts {
			for _, a := range g.ancestors {
				p.groupsByName[a].hasHosts = true
			}
		}
	}
	return true
}

// hostLayers returns the layers of a host in Ansible's precedence order:
// base (defaults, all.vars), its groups sorted by depth, priority and name,
// then its own vars with inventory_hostname.
func (p *parser) hostLayers(h *hostEntry, base []layer) []layer {
	seen := map[string]bool{}
	var gs []*group
	for _, gn := range h.groups {
		g := p.groupsByName[gn]
		for _, n := range append([]string{gn}, g.ancestors...) {
			if !seen[n] {
				seen[n] = true
				gs = append(gs, p.groupsByName[n])
			}
		}
	}
	sort.Slice(gs, func(i, j int) bool {
		a, b := gs[i], gs[j]
		if a.depth != b.depth {
			return a.depth < b.depth
		}
		if a.priority != b.priority {
			return a.priority < b.priority
		}
		return a.name < b.name
	})
	layers := make([]layer, 0, len(base)+len(gs)+1)
	layers = append(layers, base...)
	for _, g := range gs {
		layers = append(layers, g.vars)
	}
	hl := maps.Clone(h.vars) // may be shared through an alias
	if hl == nil {
		hl = layer{}
	}
	// inventory_hostname is Ansible's magic variable: always the host key.
	hl["inventory_hostname"] = varEntry{val: h.name, json: h.name, node: h.key}
	return append(layers, hl)
}

// pgHost is a host with pg_cluster, and its merged variables.
type pgHost struct {
	h  *hostEntry
	mv layer
}

// identityVars are a member's own identity: not part of the cluster's vars.
var identityVars = map[string]bool{"pg_seq": true, "pg_role": true, "inventory_hostname": true, "pg_instance": true}

// buildClusters merges every host's variables and groups the hosts with a
// pg_cluster into clusters.
func (p *parser) buildClusters(defaults, allVars layer) {
	if !p.resolveGroups() {
		return
	}
	base := []layer{defaults, allVars}
	byName := map[string][]pgHost{}
	var order []string
	reported := map[*yaml.Node]bool{}
	for _, h := range p.hostOrder {
		mv := merged(p.hostLayers(h, base))
		e, ok := mv["pg_cluster"]
		if !ok || e.val == nil {
			continue // not a PostgreSQL host (infra, etcd, minio, ...)
		}
		name, isStr := e.val.(string)
		if !isStr || name == "" || !validName.MatchString(name) {
			if e.node == nil || !reported[e.node] {
				reported[e.node] = true
				field := "pg_cluster"
				if e.src != "" {
					field = e.src + ".pg_cluster"
				}
				p.errf(nodeLine(e.node), where{}, field, "invalid cluster name %s (want letters, digits, '-', '_', '.')", describe(e.val))
			}
			continue
		}
		if _, seen := byName[name]; !seen {
			order = append(order, name)
		}
		byName[name] = append(byName[name], pgHost{h, mv})
	}
	for _, g := range p.groupOrder {
		if _, set := g.vars["pg_cluster"]; set && !g.hasHosts {
			name, _ := g.vars["pg_cluster"].val.(string)
			p.errf(nodeLine(g.key), where{cluster: name}, "hosts", "cluster has no hosts")
		}
	}
	for _, name := range order {
		p.cluster(name, byName[name])
	}
	p.checkScopes()
	p.exportGroups()
}

// exportGroups keeps the group tree for Inventory.GroupHosts and lists
// every host in Inventory.Hosts.
func (p *parser) exportGroups() {
	for _, h := range p.hostOrder {
		p.inv.Hosts = append(p.inv.Hosts, h.name)
	}
	p.inv.groups = make(map[string]groupInfo, len(p.groupOrder))
	for _, g := range p.groupOrder {
		p.inv.groups[g.name] = groupInfo{hosts: g.hosts, children: g.children}
	}
}

// groupInfo is one group's own hosts and child groups.
type groupInfo struct {
	hosts, children []string
}

// GroupHosts returns the hosts of an inventory group as Ansible's
// groups[name] lists them: the group's own hosts, then its descendants',
// each once (e.g. groups[pg_service_provider]); nil for an unknown group.
func (inv *Inventory) GroupHosts(name string) []string {
	if _, ok := inv.groups[name]; !ok {
		return nil
	}
	seenGroup := map[string]bool{}
	seenHost := map[string]bool{}
	out := []string{}
	queue := []string{name}
	for len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		if seenGroup[g] {
			continue
		}
		seenGroup[g] = true
		gi := inv.groups[g]
		for _, h := range gi.hosts {
			if !seenHost[h] {
				seenHost[h] = true
				out = append(out, h)
			}
		}
		queue = append(queue, gi.children...)
	}
	return out
}

// citus reads pg_mode, and for Citus pg_shard and pg_group: Patroni's scope
// and group (Pigsty's patroni template: scope pg_shard, citus.group pg_group).
func (p *parser) citus(c *Cluster, cv layer, w where) {
	c.Mode, _ = p.str(cv, "pg_mode", w, "pgsql")
	c.Scope, c.DCSKey = c.Name, c.Name
	if c.Mode != "citus" {
		return
	}
	c.Citus = true
	shard, ok := p.str(cv, "pg_shard", w, "")
	if ok && (shard == "" || !validName.MatchString(shard)) {
		p.errf(cv.line("pg_shard"), w, "pg_shard", "invalid shard name %q: pg_mode citus needs pg_shard (letters, digits, '-', '_', '.'), Patroni's scope", shard)
	}
	e, set := cv["pg_group"]
	g, isInt := asInt(e.val)
	if !set || e.val == nil || !isInt || g < 0 {
		p.errf(cv.line("pg_group"), w, "pg_group", "pg_mode citus needs pg_group, a non-negative integer (Patroni's citus group), got %s", describe(e.val))
	}
	c.Shard, c.Group = shard, g
	c.Scope = shard
	c.DCSKey = shard + "/" + strconv.Itoa(g)
}

// checkScopes rejects two clusters that Patroni would run under the same
// keys: one scope (or Citus shard and group) in one namespace.
func (p *parser) checkScopes() {
	seen := map[string]string{}
	for _, c := range p.inv.Clusters {
		k := c.Namespace + "/" + c.DCSKey
		if prev, dup := seen[k]; dup {
			what := "pg_shard " + c.Shard + " and pg_group " + strconv.Itoa(c.Group)
			p.errf(0, where{cluster: c.Name}, "pg_group", "%s in namespace %s are also cluster %s's: Patroni would mix both clusters' keys", what, c.Namespace, prev)
			continue
		}
		seen[k] = c.Name
	}
}

// cluster validates one cluster's members and builds it.
func (p *parser) cluster(name string, hosts []pgHost) {
	nErrs := len(p.errs)
	w := where{cluster: name}
	first := hosts[0].mv
	// Cluster settings must agree on every member.
	for _, key := range clusterScoped {
		fe := first[key]
		for _, ph := range hosts[1:] {
			if e := ph.mv[key]; !sameVar(fe, e) {
				p.errf(nodeLine(e.node), where{cluster: name, host: ph.h.name}, key,
					"is a cluster setting: every member needs the same value (host %s has another)", hosts[0].h.name)
				break
			}
		}
	}
	if len(p.errs) > nErrs {
		return
	}
	cv := first
	c := &Cluster{Name: name}
	ns, _ := p.str(cv, "pg_namespace", w, defaultNamespace)
	// Patroni builds keys as /<namespace>/<scope>/..., collapsing slashes.
	c.Namespace = strings.TrimRight("/"+strings.Trim(ns, "/"), "/")
	c.ServiceProvider, _ = p.str(cv, "pg_service_provider", w, "")
	p.citus(c, cv, w)
	if e, set := cv["pg_default_service_dest"]; set && e.val != nil {
		if d, ok := destText(e.val); !ok || d == defaultDest {
			p.errf(nodeLine(e.node), w, "pg_default_service_dest", "unknown destination %s (want postgres, pgbouncer or a port number)", describe(e.val))
		}
	}
	c.Services, c.Warnings = p.services(cv, w)
	if d, isStr := cv["pg_default_service_dest"].val.(string); isStr && isPortText(d) {
		for _, sd := range c.Services {
			if sd.Dest == defaultDest {
				c.Warnings = append(c.Warnings, quotedPortWarning("pg_default_service_dest", d, "services with dest default"))
				break
			}
		}
	}
	for _, sd := range c.Services {
		sd.FullName = name + "-" + sd.Name
	}

	seqs := map[int]string{}
	primary := ""
	for _, ph := range hosts {
		hw := where{cluster: name, host: ph.h.name}
		m := p.member(ph.mv, hw, name, nodeLine(ph.h.key))
		if m == nil {
			continue
		}
		if prev, dup := seqs[m.Seq]; dup {
			p.errf(ph.mv.line("pg_seq"), hw, "pg_seq", "duplicate pg_seq %d (also host %s)", m.Seq, prev)
			continue
		}
		seqs[m.Seq] = ph.h.name
		if m.Role == "primary" {
			if primary != "" {
				p.errf(ph.mv.line("pg_role"), hw, "pg_role", "second primary (host %s is already primary)", primary)
				continue
			}
			primary = ph.h.name
		}
		c.Members = append(c.Members, m)
	}
	if !p.delegated(c) {
		p.checkNodePorts(c, w)
	}
	c.Vars = clusterVars(hosts)
	if len(p.errs) == nErrs {
		p.inv.Clusters = append(p.inv.Clusters, c)
		p.cvs[c] = cv
	}
}

// clusterVars are the variables every member has with the same value,
// without the members' identities: what a member Patroni reports and the
// inventory lacks is assumed to have.
func clusterVars(hosts []pgHost) map[string]any {
	out := make(map[string]any, len(hosts[0].mv))
next:
	for k, e := range hosts[0].mv {
		if identityVars[k] {
			continue
		}
		for _, ph := range hosts[1:] {
			if !sameVar(e, ph.mv[k]) {
				continue next
			}
		}
		out[k] = e.json
	}
	return out
}

// sameVar reports whether two merged entries hold the same value.
func sameVar(a, b varEntry) bool {
	if a.node != nil && a.node == b.node {
		return true // the same line of the file
	}
	return reflect.DeepEqual(a.json, b.json)
}

package topology

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/pgsvc/pgsvc/pkg/haproxyname"
)

// LookupHost resolves inventory host names that are not IP addresses (an
// unresolvable host is rejected at load). Tests replace it.
var LookupHost = func(host string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return net.DefaultResolver.LookupHost(ctx, host)
}

// validate checks what reaches HAProxy from the loaded clusters, with the
// rules of package haproxyname (the same ones the DCS decoder and the
// renderers apply): cluster, member, service and section names, host
// addresses, options, health checks; section names unique across clusters;
// a host in two clusters. Warnings (a selector field no member has, a host
// shared by two clusters on different ports) go to Cluster.Warnings.
func (p *parser) validate() {
	sections := map[string]string{} // section name -> "cluster c, service s"
	for _, c := range p.inv.Clusters {
		line := p.clusterLine(c.Name)
		w := where{cluster: c.Name}
		if err := haproxyname.Name(c.Name); err != nil {
			p.errf(line, w, "pg_cluster", "cluster name: %v", err)
			continue
		}
		for _, s := range c.Services {
			if err := haproxyname.Name(s.Name); err != nil {
				p.errf(s.Line, w, s.Source+".name", "service name: %v", err)
				continue
			}
			section := c.Name + "-" + s.Name
			if prev, dup := sections[section]; dup {
				p.errf(s.Line, w, s.Source+".name", "HAProxy section %q is also %s: rename one of them", section, prev)
			}
			sections[section] = fmt.Sprintf("cluster %s, service %s", c.Name, s.Name)
			if err := haproxyname.Word(s.Check); err != nil {
				p.errf(s.Line, w, s.Source+".check", "service %q: check %v", s.Name, err)
			}
			if s.Options != "" {
				if err := haproxyname.ServerOptions(s.Options); err != nil {
					p.errf(s.Line, w, s.Source+".options", "service %q: %v", s.Name, err)
				}
			}
		}
		for _, m := range c.Members {
			hw := where{cluster: c.Name, host: m.Host}
			hline := line
			h := p.hostsByName[m.Host]
			if h != nil && h.key != nil {
				hline = h.key.Line
			}
			if err := haproxyname.Resolvable(m.Host, LookupHost); err != nil {
				p.errf(hline, hw, "hosts", "host key: %v (want an IP address or a resolvable host name)", err)
				continue
			}
			if err := haproxyname.Identifier(m.Name); err != nil {
				p.errf(hline, hw, "pg_seq", "member name: %v", err)
			}
			if h != nil {
				for _, other := range p.otherClusters(h, c.Name) {
					c.Warnings = append(c.Warnings, fmt.Sprintf("host %s is also listed in group %s of cluster %s: by Ansible precedence it is a member of %s only", m.Host, other[0], other[1], c.Name))
				}
			}
		}
		c.Warnings = append(c.Warnings, selectorFieldWarnings(c)...)
	}
}

// otherClusters lists [group, cluster] for each group of h (or above it)
// whose vars name a cluster other than cluster: a host listed in two
// clusters' groups belongs to one of them only.
func (p *parser) otherClusters(h *hostEntry, cluster string) [][2]string {
	var out [][2]string
	seen := map[string]bool{}
	for _, name := range h.groups {
		g := p.groupsByName[name]
		if g == nil {
			continue
		}
		for _, gn := range append([]string{name}, g.ancestors...) {
			if seen[gn] {
				continue
			}
			seen[gn] = true
			if gg := p.groupsByName[gn]; gg != nil {
				if other, ok := gg.vars["pg_cluster"].val.(string); ok && other != cluster {
					out = append(out, [2]string{gn, other})
				}
			}
		}
	}
	return out
}

// clusterLine is the line where pg_cluster names the cluster (0 if unknown).
func (p *parser) clusterLine(name string) int {
	for _, g := range p.groupOrder {
		if e, ok := g.vars["pg_cluster"]; ok && e.val == name {
			return nodeLine(e.node)
		}
	}
	return 0
}

// selectorFieldWarnings warns about selector fields no member document has
// (a misspelled field is null for every member: the selector silently
// matches nothing, or everything once negated).
func selectorFieldWarnings(c *Cluster) []string {
	known := map[string]bool{}
	for _, m := range merge(c, nil, MergeOptions{}).Members {
		for k := range m.Vars {
			known[k] = true
		}
	}
	var out []string
	for _, s := range c.Services {
		for _, f := range []struct{ what, expr string }{{"selector", s.Selector}, {"backup", s.Backup}} {
			for _, name := range selectorFields(f.expr) {
				if !known[name] {
					out = append(out, fmt.Sprintf("service %s: %s %s uses field %q, which no member has (misspelled?)", s.Name, f.what, f.expr, name))
				}
			}
		}
	}
	return out
}

// selectorFields returns the top-level field names a selector reads: bare
// identifiers that are not function names, not sub-fields (after '.') and
// not inside literals or raw strings. A heuristic for warnings only.
func selectorFields(expr string) []string {
	seen := map[string]bool{}
	var out []string
	prev := byte(0) // last significant character before the identifier
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '\'' || c == '"' || c == '`':
			j := skipQuoted(expr, i, c)
			if c == '"' && prev != '.' && j-1 > i+1 {
				name := expr[i+1 : j-1]
				if !seen[name] && !strings.Contains(name, "\\") {
					seen[name] = true
					out = append(out, name)
				}
			}
			i, prev = j, c
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			j := i
			for j < len(expr) && (expr[j] == '_' || expr[j] >= 'a' && expr[j] <= 'z' || expr[j] >= 'A' && expr[j] <= 'Z' || expr[j] >= '0' && expr[j] <= '9') {
				j++
			}
			k := j
			for k < len(expr) && expr[k] == ' ' {
				k++
			}
			name := expr[i:j]
			isFunc := k < len(expr) && expr[k] == '('
			if prev != '.' && !isFunc && !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
			i, prev = j, 'a'
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		default:
			i, prev = i+1, c
		}
	}
	sort.Strings(out)
	return out
}

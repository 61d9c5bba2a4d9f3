package topology

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// serviceKeys are the fields of a service definition Pigsty's service.cfg
// template reads; anything else is a typo that Pigsty would silently ignore.
var serviceKeys = map[string]bool{
	"name": true, "port": true, "ip": true, "selector": true, "backup": true,
	"dest": true, "check": true, "maxconn": true, "balance": true, "options": true,
}

// balanceAlgos are HAProxy algorithms that make sense for a TCP service
// (uri, url_param, hdr and rdp-cookie need HTTP or RDP payloads).
var balanceAlgos = map[string]bool{
	"roundrobin": true, "leastconn": true, "static-rr": true, "first": true, "source": true, "random": true,
}

// destText returns a service destination as text: default, postgres,
// pgbouncer or a port number 1..65535 (written as a YAML int or string).
func destText(v any) (string, bool) {
	if n, ok := asInt(v); ok {
		return strconv.Itoa(n), n >= 1 && n <= 65535
	}
	s, ok := v.(string)
	if !ok {
		return "", false
	}
	switch s {
	case "default", "postgres", "pgbouncer":
		return s, true
	}
	n, err := strconv.Atoi(s)
	return s, err == nil && n >= 1 && n <= 65535
}

// services validates pg_default_services + pg_services of a cluster and
// compiles their selectors. A definition named like an earlier one replaces
// it, as in Pigsty: service_local.yml (and service_remote.yml) render each
// item of pg_default_services + pg_services in turn into the file
// <pg_cluster>-<name>.cfg, so a later item overwrites an earlier item's file.
// The replacement takes the earlier one's place in the list (the file, and so
// HAProxy's reading order, is the same), and each replacement is returned as
// a warning naming both definitions. Ports are checked over the surviving
// definitions only: two of them on one port is an error (HAProxy could not
// bind both).
func (p *parser) services(cv layer, w where) ([]*ServiceDef, []string) {
	var out []*ServiceDef
	var warnings []string
	var inOrder []*ServiceDef // every valid definition, as listed
	names := map[string]int{} // name -> index in out
	quotedDest := map[*ServiceDef]bool{}
	differs := map[*ServiceDef]string{}
	for _, key := range []string{"pg_default_services", "pg_services"} {
		e := cv[key]
		if e.val == nil {
			continue
		}
		list, ok := e.val.([]any)
		if !ok {
			p.errf(nodeLine(e.node), w, key, "must be a list of service definitions, got %s", describe(e.val))
			continue
		}
		var items []*yaml.Node
		if n := resolve(e.node); n != nil && n.Kind == yaml.SequenceNode && len(n.Content) == len(list) {
			items = n.Content
		}
		for i, raw := range list {
			var item *yaml.Node
			if items != nil {
				item = resolve(items[i])
			}
			line := nodeLine(item)
			if line == 0 {
				line = nodeLine(e.node)
			}
			sd := p.service(raw, item, line, fmt.Sprintf("%s[%d]", key, i), w)
			if sd == nil {
				continue
			}
			inOrder = append(inOrder, sd)
			if m, ok := raw.(map[string]any); ok {
				if d, isStr := m["dest"].(string); isStr && sd.Dest == d && isPortText(d) {
					quotedDest[sd] = true
				}
				if w := pigstyDiffers(sd, m); w != "" {
					differs[sd] = w
				}
			}
			if at, dup := names[sd.Name]; dup {
				prev := out[at]
				warnings = append(warnings, fmt.Sprintf("service %s: %s replaces %s (Pigsty renders both into %s-%s.cfg, the later one last: it wins)",
					sd.Name, defWhere(sd), defWhere(prev), w.cluster, sd.Name))
				out[at] = sd
				continue
			}
			names[sd.Name] = len(out)
			out = append(out, sd)
		}
	}
	// Ports over the survivors, in the order they are listed, so that the
	// error names the later definition of the two.
	survives := make(map[*ServiceDef]bool, len(out))
	for _, sd := range out {
		survives[sd] = true
	}
	ports := map[int]*ServiceDef{}
	bad := map[*ServiceDef]bool{}
	for _, sd := range inOrder {
		if !survives[sd] {
			continue
		}
		if prev, dup := ports[sd.Port]; dup {
			p.errf(sd.Line, w, sd.Source+".port", "service %q: port %d already used by service %q (%s)", sd.Name, sd.Port, prev.Name, prev.Source)
			bad[sd] = true
			continue
		}
		ports[sd.Port] = sd
	}
	for _, sd := range out {
		if quotedDest[sd] {
			warnings = append(warnings, quotedPortWarning("service "+sd.Name+": dest", sd.Dest, "this service"))
		}
		if w := differs[sd]; w != "" {
			warnings = append(warnings, w)
		}
	}
	if len(bad) > 0 {
		kept := out[:0:0]
		for _, sd := range out {
			if !bad[sd] {
				kept = append(kept, sd)
			}
		}
		out = kept
	}
	return out, warnings
}

// pigstyDiffers explains, for a definition (m as written) that pgsvc
// reads otherwise than Pigsty's template renders it, the difference:
//   - dest: null is defined for Jinja, neither 'default' nor a number nor a
//     name: the template's else branch, port 5432 (pgsvc: absent, so
//     pg_default_service_dest);
//   - options: "" is defined, so default() keeps it: an empty default-server
//     line, HAProxy's own defaults (no on-marked-down shutdown-sessions, no
//     slowstart, no maxconn) (pgsvc: the default line).
//
// "" when there is none.
func pigstyDiffers(sd *ServiceDef, m map[string]any) string {
	if v, set := m["dest"]; set && v == nil {
		return fmt.Sprintf("service %s: dest is null: Pigsty's template renders port 5432 for it (a null dest is defined, and neither default nor a port), pgsvc pg_default_service_dest; remove it or give a dest so that both agree", sd.Name)
	}
	if o, isStr := m["options"].(string); isStr && strings.TrimSpace(o) == "" {
		return fmt.Sprintf("service %s: options is empty: Pigsty's template writes an empty default-server line for it (HAProxy's defaults: no on-marked-down shutdown-sessions, no slowstart), pgsvc the default line; remove it or give options so that both agree", sd.Name)
	}
	return ""
}

// isPortText reports whether s is a port number written as text.
func isPortText(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 1 && n <= 65535
}

// quotedPortWarning explains a destination port written as a string: Pigsty's
// template sends it to port 5432 (its `is number` test fails, and the text
// is neither postgres nor pgbouncer), pgsvc to the port.
func quotedPortWarning(what, port, services string) string {
	return fmt.Sprintf("%s %q is a string: Pigsty's template renders port 5432 for %s (a quoted port fails its `is number` test), pgsvc port %s; write it unquoted so that both agree",
		what, port, services, port)
}

// defWhere names a definition for messages: its source, and its line when
// it has one (built-in defaults have none).
func defWhere(sd *ServiceDef) string {
	if sd.Line > 0 {
		return fmt.Sprintf("%s (line %d)", sd.Source, sd.Line)
	}
	return sd.Source
}

// fieldLine is the line of key's value inside a service mapping node.
func fieldLine(item *yaml.Node, key string, def int) int {
	if item != nil && item.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(item.Content); i += 2 {
			if item.Content[i].Value == key {
				return item.Content[i+1].Line
			}
		}
	}
	return def
}

func (p *parser) service(raw any, item *yaml.Node, line int, src string, w where) *ServiceDef {
	m, ok := raw.(map[string]any)
	if !ok {
		p.errf(line, w, src, "service definition must be a mapping, got %s", describe(raw))
		return nil
	}
	nErrs := len(p.errs)
	bad := func(key, format string, args ...any) {
		p.errf(fieldLine(item, key, line), w, src+"."+key, format, args...)
	}
	var unknown []string
	for k := range m {
		if !serviceKeys[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		bad(k, "unknown service field (want name, port, ip, selector, backup, dest, check, maxconn, balance or options)")
	}
	// str reads an optional string field; null counts as absent.
	str := func(key, def string) string {
		v, set := m[key]
		if !set || v == nil {
			return def
		}
		s, ok := v.(string)
		if !ok {
			bad(key, "must be a string, got %s", describe(v))
			return def
		}
		return p.intern(s)
	}
	sd := &ServiceDef{Source: p.intern(src), Line: line}
	sd.Name = str("name", "")
	switch {
	case m["name"] == nil:
		bad("name", "missing (every service needs a name)")
	case sd.Name != "" && !validName.MatchString(sd.Name):
		bad("name", "invalid service name %q (want letters, digits, '-', '_', '.')", sd.Name)
	case sd.Name == "":
		if _, isStr := m["name"].(string); isStr {
			bad("name", "must not be empty")
		}
	}
	what := "service " + strconv.Quote(sd.Name) + ": "
	if v, set := m["port"]; !set || v == nil {
		bad("port", "%smissing port", what)
	} else if n, isInt := asInt(v); !isInt || n < 1 || n > 65535 {
		bad("port", "%sport must be an integer between 1 and 65535, got %s", what, describe(v))
	} else {
		sd.Port = n
	}
	sd.IP = str("ip", defaultServiceIP)
	if sd.IP != "*" {
		// No zone: the renderers refuse one (haproxyname.BindAddress), and
		// a zone may hold any character.
		if a, err := netip.ParseAddr(sd.IP); err != nil || a.Zone() != "" {
			bad("ip", "%sip must be * or an IP address without a zone, got %q", what, sd.IP)
		}
	}
	sd.Selector = p.intern(strings.TrimSpace(str("selector", "")))
	if m["selector"] == nil {
		bad("selector", "%smissing selector (use \"[]\" for every member)", what)
	} else if sd.Selector == "" {
		if _, isStr := m["selector"].(string); isStr {
			bad("selector", "%sempty selector (use \"[]\" for every member)", what)
		}
	} else if expr, err := CompileSelector(sd.Selector); err != nil {
		p.add(&Error{File: p.file, Line: fieldLine(item, "selector", line), Cluster: w.cluster, Host: w.host,
			Field: src + ".selector", Msg: fmt.Sprintf("%sselector %q does not compile: %v", what, sd.Selector, err), Err: err})
	} else {
		sd.SelectorExpr = expr
	}
	sd.Backup = p.intern(strings.TrimSpace(str("backup", "")))
	if sd.Backup != "" {
		if expr, err := CompileSelector(sd.Backup); err != nil {
			p.add(&Error{File: p.file, Line: fieldLine(item, "backup", line), Cluster: w.cluster, Host: w.host,
				Field: src + ".backup", Msg: fmt.Sprintf("%sbackup selector %q does not compile: %v", what, sd.Backup, err), Err: err})
		} else {
			sd.BackupExpr = expr
		}
	}
	sd.Dest = defaultDest
	if v, set := m["dest"]; set && v != nil {
		d, ok := destText(v)
		if !ok {
			bad("dest", "%sunknown dest %s (want default, postgres, pgbouncer or a port number)", what, describe(v))
		}
		sd.Dest = p.intern(d)
	}
	sd.Check = str("check", defaultCheck)
	if !strings.HasPrefix(sd.Check, "/") || strings.ContainsAny(sd.Check, " \t\r\n") {
		bad("check", "%scheck must be a Patroni REST path such as /primary, got %q", what, sd.Check)
	}
	sd.Maxconn = defaultMaxconn
	if v, set := m["maxconn"]; set && v != nil {
		if n, isInt := asInt(v); !isInt || n < 1 || n > MaxMaxconn {
			bad("maxconn", "%smaxconn must be an integer between 1 and %d, got %s", what, MaxMaxconn, describe(v))
		} else {
			sd.Maxconn = n
		}
	}
	sd.Balance = str("balance", defaultBalance)
	if !balanceAlgos[sd.Balance] {
		bad("balance", "%sunknown balance %q (want roundrobin, leastconn, static-rr, first, source or random)", what, sd.Balance)
	}
	sd.Options = strings.TrimSpace(str("options", ""))
	if strings.ContainsAny(sd.Options, "\r\n") {
		bad("options", "%soptions must be a single line", what)
	}
	if len(p.errs) > nErrs {
		return nil
	}
	return sd
}

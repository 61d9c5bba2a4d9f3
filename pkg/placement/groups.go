// Package placement decides which HAProxy (which inventory node) carries
// which clusters' services, the way Pigsty's pgsql role does:
//
//   - roles/pgsql/tasks/main.yml runs service_local.yml on every member when
//     pg_service_provider is empty or names no inventory group: each member's
//     own HAProxy gets its cluster's services;
//   - otherwise service_remote.yml runs on the member whose pg_role is
//     primary and delegates to every host of groups[pg_service_provider]:
//     those nodes' HAProxies get the services, the members' own get none.
//
// It depends only on each cluster's member list (host, inventory role, the
// host's pg_service_provider) and on the inventory's Ansible groups.
package placement

import (
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Groups maps an Ansible group name to its hosts, as Ansible's `groups`
// variable does: a group's hosts include those of its child groups, a group
// named in several places is the union of all of them, "all" holds every
// host and "ungrouped" the hosts listed only under all.hosts. Hosts keep the
// order they first appear in.
type Groups map[string][]string

// LoadGroups reads the inventory at path and returns its groups.
func LoadGroups(path string) (Groups, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	g, err := ParseGroups(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return g, nil
}

// maxGroupWork bounds the walk (aliases can turn the tree into a DAG).
const maxGroupWork = 1 << 18

// ParseGroups reads the Ansible groups of a YAML inventory. It only looks at
// the shape (all.hosts, all.children.<group>.{hosts,children}); variables
// are topology's business.
func ParseGroups(data []byte) (Groups, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	w := &groupWalker{direct: map[string][]string{}, kids: map[string][]string{}, work: maxGroupWork}
	if len(doc.Content) == 0 {
		return nil, fmt.Errorf("empty inventory (want a mapping with key all)")
	}
	root := resolve(doc.Content[0])
	all := mapGet(root, "all")
	if all == nil {
		return nil, fmt.Errorf("no top-level key all")
	}
	w.order = append(w.order, "all")
	w.hosts("all", mapGet(all, "hosts"))
	w.children("all", mapGet(all, "children"))
	if w.work <= 0 {
		return nil, fmt.Errorf("inventory too large (aliases expand to more than %d nodes)", maxGroupWork)
	}
	out := Groups{}
	for _, name := range w.order {
		out[name] = w.expand(name, map[string]bool{})
	}
	// "ungrouped": hosts directly under all.hosts that no other group lists.
	grouped := map[string]bool{}
	for name, hs := range out {
		if name == "all" {
			continue
		}
		for _, h := range hs {
			grouped[h] = true
		}
	}
	var ungrouped []string
	for _, h := range w.direct["all"] {
		if !grouped[h] {
			ungrouped = append(ungrouped, h)
		}
	}
	out["ungrouped"] = ungrouped
	return out, nil
}

type groupWalker struct {
	direct map[string][]string // group -> hosts listed under its own hosts:
	kids   map[string][]string // group -> child group names
	order  []string            // group names in first-seen order
	work   int
}

func (w *groupWalker) see(name string) {
	if _, ok := w.direct[name]; !ok {
		w.direct[name] = nil
		w.order = append(w.order, name)
	}
}

func (w *groupWalker) hosts(group string, n *yaml.Node) {
	if n == nil || n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		w.direct[group] = appendNew(w.direct[group], n.Content[i].Value)
	}
}

func (w *groupWalker) children(parent string, n *yaml.Node) {
	if n == nil || n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		w.work -= 1 + len(n.Content)
		if w.work <= 0 {
			return
		}
		name := n.Content[i].Value
		w.see(name)
		w.kids[parent] = appendNew(w.kids[parent], name)
		g := resolve(n.Content[i+1])
		if g == nil || g.Kind != yaml.MappingNode {
			continue
		}
		w.hosts(name, mapGet(g, "hosts"))
		w.children(name, mapGet(g, "children"))
	}
}

// expand returns a group's hosts: its own, then its children's (Ansible
// ignores a cycle; so does this).
func (w *groupWalker) expand(name string, seen map[string]bool) []string {
	if seen[name] {
		return nil
	}
	seen[name] = true
	out := append([]string(nil), w.direct[name]...)
	have := make(map[string]bool, len(out))
	for _, h := range out {
		have[h] = true
	}
	for _, k := range w.kids[name] {
		for _, h := range w.expand(k, seen) {
			if !have[h] {
				have[h] = true
				out = append(out, h)
			}
		}
	}
	return out
}

func appendNew(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// mapGet returns the value of key in mapping n (nil when absent or n is not
// a mapping).
func mapGet(n *yaml.Node, key string) *yaml.Node {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return resolve(n.Content[i+1])
		}
	}
	return nil
}

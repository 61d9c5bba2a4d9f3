package placement

import (
	"fmt"
	"strings"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// Member is what placement needs to know of one cluster member.
type Member struct {
	// Host is the inventory host key (inventory_hostname): the node.
	Host string
	// Primary is true when the inventory says pg_role: primary (Pigsty runs
	// service_remote.yml on that host only).
	Primary bool
	// Provider is the host's merged pg_service_provider ("" = none).
	Provider string
}

// Cluster is one PostgreSQL cluster: its name and members.
type Cluster struct {
	Name    string
	Members []Member
}

// Node is one inventory host whose HAProxy carries services.
type Node struct {
	Host string
	// Clusters whose services this node's HAProxy carries, in inventory order.
	Clusters []string
}

// Result is the placement of every cluster.
type Result struct {
	// Nodes that carry at least one cluster, in the order they first get one.
	Nodes []Node
	// Warnings name clusters placed somewhere an operator may not expect
	// (an unknown provider group, or on no node at all).
	Warnings []string
}

// Node returns the node with that host key, or nil.
func (r *Result) Node(host string) *Node {
	for i := range r.Nodes {
		if r.Nodes[i].Host == host {
			return &r.Nodes[i]
		}
	}
	return nil
}

// Hosts lists the nodes' host keys.
func (r *Result) Hosts() []string {
	out := make([]string, len(r.Nodes))
	for i, n := range r.Nodes {
		out[i] = n.Host
	}
	return out
}

// Place decides which nodes carry which clusters, as Pigsty's pgsql role does
// (see the package comment).
func Place(clusters []Cluster, groups Groups) Result {
	var r Result
	index := map[string]int{}
	add := func(host, cluster string) {
		i, ok := index[host]
		if !ok {
			i = len(r.Nodes)
			index[host] = i
			r.Nodes = append(r.Nodes, Node{Host: host})
		}
		n := &r.Nodes[i]
		for _, c := range n.Clusters {
			if c == cluster {
				return
			}
		}
		n.Clusters = append(n.Clusters, cluster)
	}
	for _, c := range clusters {
		placed := false
		warned := map[string]bool{}
		for _, m := range c.Members {
			hosts, isGroup := groups[m.Provider]
			switch {
			case m.Provider == "" || !isGroup:
				// service_local.yml: this member's own HAProxy.
				if m.Provider != "" && !warned[m.Provider] {
					warned[m.Provider] = true
					r.Warnings = append(r.Warnings, fmt.Sprintf("cluster %s: pg_service_provider %q is not an inventory group, so its services stay on its members' own HAProxies (as Pigsty does)", c.Name, m.Provider))
				}
				add(m.Host, c.Name)
				placed = true
			case m.Primary:
				// service_remote.yml, run by the primary, delegated to
				// every host of the provider group.
				for _, h := range hosts {
					add(h, c.Name)
					placed = true
				}
			}
		}
		if !placed {
			r.Warnings = append(r.Warnings, fmt.Sprintf("cluster %s: its services are on no HAProxy (Pigsty renders delegated services from the member with pg_role primary into a non-empty pg_service_provider group; there is none)", c.Name))
		}
	}
	return r
}

// FromInventory reads the members placement needs from a loaded inventory.
// A host's own pg_service_provider (its merged variables) is used when it has
// one, else the cluster's.
func FromInventory(inv *topology.Inventory) []Cluster {
	out := make([]Cluster, 0, len(inv.Clusters))
	for _, c := range inv.Clusters {
		pc := Cluster{Name: c.Name}
		for _, m := range c.Members {
			provider := c.ServiceProvider
			if v, ok := m.Vars["pg_service_provider"].(string); ok {
				provider = v
			}
			pc.Members = append(pc.Members, Member{Host: m.Host, Primary: m.Role == "primary", Provider: provider})
		}
		out = append(out, pc)
	}
	return out
}

// ForInventory places the clusters of inv, reading its groups from inv.File.
func ForInventory(inv *topology.Inventory) (Result, error) {
	groups, err := LoadGroups(inv.File)
	if err != nil {
		return Result{}, err
	}
	return Place(FromInventory(inv), groups), nil
}

// Check rejects a node whose clusters cannot share its HAProxy: two services
// of different clusters bound to the same port (a "*" bind collides with
// every address). byCluster holds each cluster's services. Clusters that
// never share a node may use the same ports.
func Check(r Result, byCluster map[string][]services.Service) error {
	var problems []string
	for _, n := range r.Nodes {
		if len(n.Clusters) < 2 {
			continue
		}
		type bind struct{ cluster, name, ip string }
		ports := map[int][]bind{}
		for _, c := range n.Clusters {
			for _, s := range byCluster[c] {
				ip := s.IP
				if ip == "" {
					ip = "*"
				}
				for _, o := range ports[s.Port] {
					if o.cluster != c && (o.ip == ip || o.ip == "*" || ip == "*") {
						problems = append(problems, fmt.Sprintf("host %s carries clusters %s and %s: service %s binds %s:%d and service %s binds %s:%d",
							n.Host, o.cluster, c, o.name, o.ip, s.Port, s.Name, ip, s.Port))
						break
					}
				}
				ports[s.Port] = append(ports[s.Port], bind{c, s.Name, ip})
			}
		}
	}
	switch {
	case len(problems) == 0:
		return nil
	case len(problems) > 5:
		problems = append(problems[:5], fmt.Sprintf("and %d more", len(problems)-5))
	}
	return fmt.Errorf("services of clusters placed on the same node collide: %s", strings.Join(problems, "; "))
}

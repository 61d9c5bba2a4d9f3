package main

import (
	"fmt"
	"strings"

	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
	"github.com/pgsvc/pgsvc/pkg/placement"
	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// renderFile is one haproxy.cfg to print: for every HAProxy, or for the
// nodes listed in hosts.
type renderFile struct {
	hosts    []string
	clusters []string
	svcs     []services.Service
}

// renderFiles picks what render prints.
//
//   - --host IP: the clusters Pigsty places on that node (its own cluster's
//     services, and those of clusters delegating to a pg_service_provider
//     group it is in), limited by --cluster when given;
//   - --cluster only: those clusters in one file, as before;
//   - neither: every cluster in one file when they can share one HAProxy;
//     otherwise clusters are checked per node (only clusters Pigsty places on
//     the same node must not collide) and one file is printed per distinct
//     set of clusters, headed by the nodes it is for.
func renderFiles(p *plan.Plan, inv *topology.Inventory, want map[string]bool, host string) ([]renderFile, []string, error) {
	byCluster := map[string][]services.Service{}
	var all []string
	for _, c := range p.Clusters {
		byCluster[c.Name] = c.Services
		if len(want) == 0 || want[c.Name] {
			all = append(all, c.Name)
		}
	}
	collect := func(clusters []string) []services.Service {
		var out []services.Service
		for _, c := range clusters {
			out = append(out, byCluster[c]...)
		}
		return out
	}
	if host == "" {
		svcs := collect(all)
		err := haproxycfg.Check(svcs)
		if err == nil {
			return []renderFile{{clusters: all, svcs: svcs}}, nil, nil
		}
		if len(want) > 0 {
			return nil, nil, fmt.Errorf("%s: %w (pick clusters with --cluster, or a node with --host)", inv.File, err)
		}
	}
	r, err := placement.ForInventory(inv)
	if err != nil {
		return nil, nil, err
	}
	if host != "" {
		n := r.Node(host)
		if n == nil {
			if !inInventory(inv, host) {
				return nil, r.Warnings, fmt.Errorf("%s: --host %s: no such host in the inventory", inv.File, host)
			}
			why := ""
			for _, c := range inv.Clusters {
				if memberName(c, host) != "" {
					why = fmt.Sprintf(" (a member of %s, whose services live on its pg_service_provider group)", c.Name)
				}
			}
			return nil, r.Warnings, fmt.Errorf("%s: --host %s: Pigsty places no cluster's services on this node%s; nodes with services: %s", inv.File, host, why, strings.Join(r.Hosts(), ", "))
		}
		var cs []string
		for _, c := range n.Clusters {
			if len(want) == 0 || want[c] {
				cs = append(cs, c)
			}
		}
		if len(cs) == 0 {
			return nil, r.Warnings, fmt.Errorf("%s: --host %s carries %s, none of --cluster", inv.File, host, strings.Join(n.Clusters, ", "))
		}
		one := placement.Result{Nodes: []placement.Node{{Host: host, Clusters: cs}}}
		if err := placement.Check(one, byCluster); err != nil {
			return nil, r.Warnings, fmt.Errorf("%s: %w", inv.File, err)
		}
		return []renderFile{{hosts: []string{host}, clusters: cs, svcs: collect(cs)}}, r.Warnings, nil
	}
	if err := placement.Check(r, byCluster); err != nil {
		return nil, r.Warnings, fmt.Errorf("%s: %w", inv.File, err)
	}
	var files []renderFile
	index := map[string]int{}
	for _, n := range r.Nodes {
		key := strings.Join(n.Clusters, ",")
		i, ok := index[key]
		if !ok {
			i = len(files)
			index[key] = i
			files = append(files, renderFile{clusters: n.Clusters, svcs: collect(n.Clusters)})
		}
		files[i].hosts = append(files[i].hosts, n.Host)
	}
	return files, r.Warnings, nil
}

// inInventory reports whether host is an inventory host (a member or in a
// group that carries services).
func inInventory(inv *topology.Inventory, host string) bool {
	for _, c := range inv.Clusters {
		for _, m := range c.Members {
			if m.Host == host {
				return true
			}
		}
	}
	groups, err := placement.LoadGroups(inv.File)
	if err != nil {
		return false
	}
	for _, h := range groups["all"] {
		if h == host {
			return true
		}
	}
	return false
}

// header introduces one of several files in render's output.
func (f renderFile) header(i, n int) string {
	return fmt.Sprintf("#=====================================================================\n"+
		"# haproxy.cfg %d of %d: for %s (clusters %s)\n"+
		"# (clusters on different nodes reuse ports: render one node with --host)\n"+
		"#=====================================================================\n",
		i+1, n, strings.Join(f.hosts, ", "), strings.Join(f.clusters, ", "))
}

// memberName is the name of the member of c on host ("" when none).
func memberName(c *topology.Cluster, host string) string {
	for _, m := range c.Members {
		if m.Host == host {
			return m.Name
		}
	}
	return ""
}

package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// State is what a running Env looks like on disk, so that another process
// (democluster down/status) can find and stop exactly its processes.
type State struct {
	Config  Config        `json:"config"`
	Etcd    *proc         `json:"etcd"`
	Members []memberState `json:"members"`
}

type memberState struct {
	Cluster   string `json:"cluster"`
	Name      string `json:"name"`
	Addr      string `json:"addr"`
	Patroni   *proc  `json:"patroni"`
	Pgbouncer *proc  `json:"pgbouncer"`
}

// WriteState writes the Env's configuration and PIDs as JSON to path.
func (e *Env) WriteState(path string) error {
	e.mu.Lock()
	st := State{Config: e.cfg, Etcd: e.etcd}
	for _, m := range e.members {
		st.Members = append(st.Members, memberState{Cluster: m.cluster, Name: m.spec.Name, Addr: m.spec.Addr,
			Patroni: m.patroni, Pgbouncer: m.bouncer})
	}
	b, err := json.MarshalIndent(st, "", "  ")
	e.mu.Unlock()
	if err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	return nil
}

// Attach rebuilds an Env from a state file written by WriteState. The
// processes it names are only signalled while their PID still carries the
// recorded start time, so a stale file never hits a recycled PID.
func Attach(path string, log *zap.Logger) (*Env, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	var st State
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	cfg, err := st.Config.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	e := &Env{cfg: cfg, log: log, etcd: st.Etcd}
	for i, ms := range st.Members {
		if ms.Name == "" || ms.Cluster == "" {
			return nil, fmt.Errorf("state %s: members[%d]: cluster and name are required", path, i)
		}
		e.members = append(e.members, &member{cluster: ms.Cluster, spec: MemberSpec{Name: ms.Name, Addr: ms.Addr},
			paths: pathsFor(cfg.BaseDir, ms.Name), patroni: ms.Patroni, bouncer: ms.Pgbouncer})
	}
	return e, nil
}

// RemoveBaseDir deletes dir, but only if the harness created it (it holds
// the marker file) and no recorded process of it is alive.
func RemoveBaseDir(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil {
		return fmt.Errorf("refusing to remove %s: not created by the harness (no %s): %w", dir, markerFile, err)
	}
	return os.RemoveAll(dir)
}

// WriteInventory writes a Pigsty inventory matching the clusters, shaped
// like config/demo.yml: the first member is the primary, the others
// replicas, and the last member of a multi-member cluster also serves
// offline queries (pg_offline_query, unless NoOfflineQuery); services go
// through pgbouncer.
func (e *Env) WriteInventory(path string) error {
	return WriteInventory(path, e.cfg.Clusters)
}

// WriteInventory writes the Pigsty inventory of clusters to path.
func WriteInventory(path string, clusters []ClusterSpec) error {
	if err := os.WriteFile(path, []byte(InventoryYAML(clusters)), 0o644); err != nil {
		return fmt.Errorf("inventory %s: %w", path, err)
	}
	return nil
}

// InventoryYAML renders the inventory text (see WriteInventory). Hand
// written rather than marshalled so hosts keep their order.
func InventoryYAML(clusters []ClusterSpec) string {
	var b strings.Builder
	b.WriteString("# Pigsty inventory written by pgsvc's integration harness.\n")
	b.WriteString("all:\n  children:\n")
	for _, cl := range clusters {
		fmt.Fprintf(&b, "    %s:\n      hosts:\n", cl.Name)
		for i, m := range cl.Members {
			role := "replica"
			if i == 0 {
				role = "primary"
			}
			extra := ""
			if len(cl.Members) >= 2 && i == len(cl.Members)-1 && !cl.NoOfflineQuery {
				extra = ", pg_offline_query: true"
			}
			fmt.Fprintf(&b, "        %s: { pg_seq: %d, pg_role: %s%s }\n", m.Addr, seqOf(cl.Name, m.Name, i), role, extra)
		}
		fmt.Fprintf(&b, "      vars:\n        pg_cluster: %s\n", cl.Name)
		if cl.ServiceIP != "" {
			// Pigsty's four default services, bound to this cluster's address.
			b.WriteString("        pg_default_services:\n")
			for _, d := range defaultServices {
				fmt.Fprintf(&b, "          - { name: %s, port: %d, ip: %q, dest: %s, check: %s, selector: %q%s }\n",
					d.name, d.port, cl.ServiceIP, d.dest, d.check, d.selector, d.backup)
			}
		}
		if len(cl.Services) > 0 {
			b.WriteString("        pg_services:\n")
			for _, s := range cl.Services {
				fmt.Fprintf(&b, "          - %s\n", s)
			}
		}
	}
	fmt.Fprintf(&b, "  vars:\n    pg_namespace: %s\n    pg_default_service_dest: pgbouncer\n", strings.TrimSuffix(DefaultNamespace, "/"))
	return b.String()
}

// seqOf is the pg_seq of a member: the number in its <cluster>-<seq> name,
// else its 1-based position.
func seqOf(cluster, name string, i int) int {
	if n, err := strconv.Atoi(strings.TrimPrefix(name, cluster+"-")); err == nil && n > 0 && strings.HasPrefix(name, cluster+"-") {
		return n
	}
	return i + 1
}

// defaultServices are Pigsty's pg_default_services, as the seed page lists them.
var defaultServices = []struct {
	name                  string
	port                  int
	dest, check, selector string
	backup                string // ", backup: ..." or ""
}{
	{"primary", 5433, "default", "/primary", "[]", ""},
	{"replica", 5434, "default", "/read-only", "[]", ", backup: \"[? pg_role == `primary` || pg_role == `offline` ]\""},
	{"default", 5436, "postgres", "/primary", "[]", ""},
	{"offline", 5438, "postgres", "/replica", "[? pg_role == `offline` || pg_offline_query ]", ", backup: \"[? pg_role == `replica` && !pg_offline_query]\""},
}

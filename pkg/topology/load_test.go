package topology

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func TestParseRejects(t *testing.T) {
	// Each file under testdata/bad is one rejected case; want is the whole
	// first error, so the test checks file, line, cluster, host and field.
	tests := []struct {
		file string
		want string
	}{
		{"bad-role.yml", `bad-role.yml:6: cluster pg-test, host 10.10.10.12: pg_role: unknown role "leader" (want primary, replica or offline)`},
		{"missing-role.yml", `missing-role.yml:6: cluster pg-test, host 10.10.10.12: pg_role: missing (want primary, replica or offline)`},
		{"two-primaries.yml", `two-primaries.yml:6: cluster pg-test, host 10.10.10.12: pg_role: second primary (host 10.10.10.11 is already primary)`},
		{"dup-seq.yml", `dup-seq.yml:6: cluster pg-test, host 10.10.10.12: pg_seq: duplicate pg_seq 1 (also host 10.10.10.11)`},
		{"missing-seq.yml", `missing-seq.yml:6: cluster pg-test, host 10.10.10.12: pg_seq: missing (each host needs an integer pg_seq)`},
		{"nonint-seq.yml", `nonint-seq.yml:6: cluster pg-test, host 10.10.10.12: pg_seq: must be a non-negative integer, got "two"`},
		{"bad-pg-port.yml", `bad-pg-port.yml:5: cluster pg-test, host 10.10.10.11: pg_port: must be an integer between 1 and 65535, got 0`},
		{"bad-pgbouncer-port.yml", `bad-pgbouncer-port.yml:8: cluster pg-test, host 10.10.10.11: pgbouncer_port: must be an integer between 1 and 65535, got 70000`},
		{"bad-patroni-port.yml", `bad-patroni-port.yml:5: cluster pg-test, host 10.10.10.11: patroni_port: must be an integer between 1 and 65535, got "8008"`},
		{"bad-weight.yml", `bad-weight.yml:6: cluster pg-test, host 10.10.10.12: pg_weight: must be an integer between 0 and 255, got 256`},
		{"host-cluster-var.yml", `host-cluster-var.yml:9: cluster pg-test, host 10.10.10.12: pg_services: is a cluster setting: every member needs the same value (host 10.10.10.11 has another)`},
		// A later definition of a name replaces the earlier one (as Pigsty's
		// conf.d file is overwritten), but the survivors' ports must differ.
		{"dup-service-name-port.yml", `dup-service-name-port.yml:9: cluster pg-test: pg_services[0].port: service "primary": port 5434 already used by service "replica" (pg_default_services[1])`},
		{"dup-service-port.yml", `dup-service-port.yml:9: cluster pg-test: pg_services[0].port: service "standby": port 5434 already used by service "replica" (pg_default_services[1])`},
		{"bad-service-port.yml", `bad-service-port.yml:9: cluster pg-test: pg_services[0].port: service "standby": port must be an integer between 1 and 65535, got 65536`},
		{"service-port-collides.yml", `service-port-collides.yml:9: cluster pg-test, host 10.10.10.11: pg_services[0].port: service "bouncer": port 6432 collides with pgbouncer_port on the member (every member's HAProxy binds the service ports)`},
		{"provider-port-clash.yml", `provider-port-clash.yml:16: cluster pg-b: pg_default_services[0].port: service "primary": port 10013 already used by service "primary" of cluster pg-a on provider group proxy`},
		{"bad-selector.yml", `bad-selector.yml:9: cluster pg-test: pg_services[0].selector: service "standby": selector "[? pg_role ==" does not compile: SyntaxError: Incomplete expression`},
		{"bad-backup.yml", `bad-backup.yml:9: cluster pg-test: pg_services[0].backup: service "standby": backup selector "[? ]" does not compile: SyntaxError: Invalid token: tRbracket`},
		// go-jmespath's compiler panics on an identifier followed by U+0080:
		// reported as a compile error, never a crash.
		{"panic-selector.yml", `panic-selector.yml:9: cluster pg-test: pg_services[0].selector: service "standby": selector "[? pg_offline_query\u0080 ]" does not compile: invalid expression (the JMESPath compiler failed: runtime error: index out of range [2] with length 2)`},
		{"panic-backup.yml", `panic-backup.yml:9: cluster pg-test: pg_services[0].backup: service "standby": backup selector "A\u0080 0" does not compile: invalid expression (the JMESPath compiler failed: runtime error: index out of range [2] with length 2)`},
		// HAProxy reads maxconn into a C int.
		{"bad-maxconn.yml", `bad-maxconn.yml:9: cluster pg-test: pg_services[0].maxconn: service "standby": maxconn must be an integer between 1 and 2147483647, got 2147483648`},
		{"missing-service-name.yml", `missing-service-name.yml:9: cluster pg-test: pg_services[0].name: missing (every service needs a name)`},
		{"missing-service-port.yml", `missing-service-port.yml:9: cluster pg-test: pg_services[0].port: service "standby": missing port`},
		{"missing-selector.yml", `missing-selector.yml:9: cluster pg-test: pg_services[0].selector: service "standby": missing selector (use "[]" for every member)`},
		{"bad-service-item.yml", `bad-service-item.yml:9: cluster pg-test: pg_services[0]: service definition must be a mapping, got "standby"`},
		{"unknown-service-field.yml", `unknown-service-field.yml:9: cluster pg-test: pg_services[0].chek: unknown service field (want name, port, ip, selector, backup, dest, check, maxconn, balance or options)`},
		{"bad-dest.yml", `bad-dest.yml:9: cluster pg-test: pg_services[0].dest: service "standby": unknown dest "pgpool" (want default, postgres, pgbouncer or a port number)`},
		{"bad-default-dest.yml", `bad-default-dest.yml:8: cluster pg-test: pg_default_service_dest: unknown destination "pgpool" (want postgres, pgbouncer or a port number)`},
		{"bad-balance.yml", `bad-balance.yml:9: cluster pg-test: pg_services[0].balance: service "standby": unknown balance "uri" (want roundrobin, leastconn, static-rr, first, source or random)`},
		{"bad-ip.yml", `bad-ip.yml:9: cluster pg-test: pg_services[0].ip: service "standby": ip must be * or an IP address without a zone, got "10.10.10.300"`},
		{"bad-check.yml", `bad-check.yml:9: cluster pg-test: pg_services[0].check: service "standby": check must be a Patroni REST path such as /primary, got "sync"`},
		{"bad-cluster-name.yml", `bad-cluster-name.yml:6: all.children.pg-test.vars.pg_cluster: invalid cluster name "pg test" (want letters, digits, '-', '_', '.')`},
		// Two groups with one pg_cluster are one cluster (membership is by
		// value, as Pigsty selects members): their pg_seq clash.
		{"dup-cluster.yml", `dup-cluster.yml:9: cluster pg-test, host 10.10.10.12: pg_seq: duplicate pg_seq 1 (also host 10.10.10.11)`},
		{"dup-host.yml", `dup-host.yml:6: cluster pg-test: hosts.10.10.10.11: duplicate key (first at line 5)`},
		{"no-hosts.yml", `no-hosts.yml:3: cluster pg-test: hosts: cluster has no hosts`},
		{"unknown-group-key.yml", `unknown-group-key.yml:4: all.children.pg-test.host: unknown key (want hosts, vars or children)`},
		{"malformed.yml", `malformed.yml:5: invalid YAML: did not find expected ',' or '}' (in the collection starting on this line)`},
		{"alias-bomb.yml", `alias-bomb.yml:8: inventory too large (aliases expand to more than 262144 nodes)`},
		{"empty.yml", `empty.yml: empty inventory (want a mapping with key all)`},
		{"no-clusters.yml", `no-clusters.yml: all.children: no PostgreSQL cluster (no host has pg_cluster)`},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.file] = true
		t.Run(strings.TrimSuffix(tt.file, ".yml"), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "bad", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			inv, err := Parse(tt.file, data)
			if inv != nil {
				t.Errorf("Parse returned an inventory along with the error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse error = %v, want an *Error", err)
			}
			if got := e.Error(); got != tt.want {
				t.Errorf("first error:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
	// Every file in testdata/bad must be exercised.
	files, err := filepath.Glob(filepath.Join("testdata", "bad", "*.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("%s has no test case", f)
		}
	}
}

func TestParseCollectsAllErrors(t *testing.T) {
	data := []byte(`all:
  children:
    pg-test:
      hosts:
        10.10.10.11: { pg_seq: 1, pg_role: leader }
        10.10.10.12: { pg_seq: 2, pg_role: replica, pg_weight: -1 }
      vars: { pg_cluster: pg-test }
`)
	_, err := Parse("inv.yml", data)
	want := `inv.yml:5: cluster pg-test, host 10.10.10.11: pg_role: unknown role "leader" (want primary, replica or offline)
inv.yml:6: cluster pg-test, host 10.10.10.12: pg_weight: must be an integer between 0 and 255, got -1`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
}

func TestParseCapsErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("all:\n  children:\n    pg-test:\n      vars: { pg_cluster: pg-test }\n      hosts:\n")
	for i := range 200 {
		fmt.Fprintf(&b, "        10.0.0.%d: { pg_seq: %d, pg_role: leader }\n", i, i)
	}
	_, err := Parse("inv.yml", []byte(b.String()))
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != maxErrors+1 || lines[maxErrors] != "inv.yml: too many errors; stopping the report here" {
		t.Errorf("got %d lines ending %q, want %d errors and a truncation note", len(lines), lines[len(lines)-1], maxErrors)
	}
}

func TestParsePrecedence(t *testing.T) {
	data := []byte(`all:
  children:
    dc1:
      vars: { region: dc1, pg_weight: 50 }
      children:
        pg-test:
          hosts:
            10.10.10.11: { pg_seq: 1, pg_role: primary, pg_port: 15432 }
            10.10.10.12: { pg_seq: 2, pg_role: replica }
          vars:
            pg_cluster: pg-test
            pgbouncer_port: 16432
            pg_namespace: /service/
  vars:
    pg_weight: 10
    pgbouncer_port: 7432
    patroni_port: 18008
    region: global
`)
	inv, err := Parse("inv.yml", data)
	if err != nil {
		t.Fatal(err)
	}
	c := inv.Cluster("pg-test")
	if c == nil {
		t.Fatal("cluster pg-test not found")
	}
	if c.Namespace != "/service" {
		t.Errorf("Namespace = %q, want /service", c.Namespace)
	}
	tests := []struct {
		name                                     string
		m                                        *Member
		pgPort, bouncerPort, patroniPort, weight int
	}{
		// host var > group var > parent group var > all.vars > default
		{"host var wins", c.Member("pg-test-1"), 15432, 16432, 18008, 50},
		{"defaults fill the rest", c.Member("pg-test-2"), 5432, 16432, 18008, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.m == nil {
				t.Fatal("member not found")
			}
			got := [4]int{tt.m.PgPort, tt.m.PgbouncerPort, tt.m.PatroniPort, tt.m.Weight}
			want := [4]int{tt.pgPort, tt.bouncerPort, tt.patroniPort, tt.weight}
			if got != want {
				t.Errorf("pg_port, pgbouncer_port, patroni_port, pg_weight = %v, want %v", got, want)
			}
			if tt.m.Vars["region"] != "dc1" {
				t.Errorf("region = %v, want dc1 (parent group beats all.vars)", tt.m.Vars["region"])
			}
			if tt.m.Vars["inventory_hostname"] != tt.m.Host {
				t.Errorf("inventory_hostname = %v, want %s", tt.m.Vars["inventory_hostname"], tt.m.Host)
			}
			// Vars are JSON-shaped: numbers are float64.
			if _, ok := tt.m.Vars["pg_port"].(float64); !ok {
				t.Errorf("pg_port var is %T, want float64", tt.m.Vars["pg_port"])
			}
		})
	}
}

func TestParseAnchorsAndMergeKeys(t *testing.T) {
	data := []byte(`all:
  children:
    pg-test:
      hosts:
        10.10.10.11: &m1 { pg_seq: 1, pg_role: primary, pg_weight: 7 }
        10.10.10.12: { <<: *m1, pg_seq: 2, pg_role: replica }
      vars: { pg_cluster: pg-test }
`)
	inv, err := Parse("inv.yml", data)
	if err != nil {
		t.Fatal(err)
	}
	m := inv.Clusters[0].Member("pg-test-2")
	if m == nil || m.Weight != 7 || m.Role != "replica" {
		t.Errorf("member 2 = %+v, want weight 7 from the merge key and role replica", m)
	}
}

// summary is the golden view of a loaded inventory.
type summary struct {
	Name            string
	Namespace       string
	ServiceProvider string
	Members         []memberSummary
	Services        []serviceSummary
}

// serviceSummary is a ServiceDef without its compiled expressions.
type serviceSummary struct {
	Name, IP, Selector, Backup, Dest, Check, Balance, Options, Source string
	Port, Maxconn, Line                                               int
}

type memberSummary struct {
	Name, Host, Role                          string
	Seq, Weight, PgPort, BouncerPort, ApiPort int
	OfflineQuery                              any
}

func summarize(inv *Inventory) []summary {
	var out []summary
	for _, c := range inv.Clusters {
		s := summary{Name: c.Name, Namespace: c.Namespace, ServiceProvider: c.ServiceProvider}
		for _, d := range c.Services {
			s.Services = append(s.Services, serviceSummary{d.Name, d.IP, d.Selector, d.Backup, d.Dest, d.Check, d.Balance, d.Options, d.Source, d.Port, d.Maxconn, d.Line})
		}
		for _, m := range c.Members {
			s.Members = append(s.Members, memberSummary{m.Name, m.Host, m.Role, m.Seq, m.Weight, m.PgPort, m.PgbouncerPort, m.PatroniPort, m.Vars["pg_offline_query"]})
		}
		out = append(out, s)
	}
	return out
}

func TestLoadExampleInventories(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		clusters []string
	}{
		{"pigsty", "../../config/pigsty.yml", []string{"pg-meta", "pg-test"}},
		{"demo", "../../config/demo.yml", []string{"pg-test", "pg-duo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, err := Load(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, c := range inv.Clusters {
				names = append(names, c.Name)
			}
			if !reflect.DeepEqual(names, tt.clusters) {
				t.Errorf("clusters = %v, want %v (file order, infra groups ignored)", names, tt.clusters)
			}
			for _, c := range inv.Clusters {
				for _, s := range c.Services {
					if s.SelectorExpr == nil {
						t.Errorf("%s/%s: selector not compiled", c.Name, s.Name)
					}
					if (s.Backup == "") != (s.BackupExpr == nil) {
						t.Errorf("%s/%s: backup %q compiled=%v", c.Name, s.Name, s.Backup, s.BackupExpr != nil)
					}
				}
			}
			var got bytes.Buffer
			enc := json.NewEncoder(&got)
			enc.SetEscapeHTML(false) // keep && in selectors readable
			enc.SetIndent("", "  ")
			if err := enc.Encode(summarize(inv)); err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", tt.name+".golden.json"), got.Bytes())
		})
	}
}

// golden compares got with the file, or rewrites it under -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs (go test -update rewrites it):\n%s", path, got)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file = %v, want an error wrapping os.ErrNotExist", err)
	}
}

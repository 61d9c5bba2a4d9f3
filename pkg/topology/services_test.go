package topology

import (
	"strconv"
	"strings"
	"testing"
)

// svcNames lists a cluster's services as name:port@source.
func svcNames(c *Cluster) string {
	var out []string
	for _, s := range c.Services {
		out = append(out, s.Name+":"+strconv.Itoa(s.Port)+"@"+s.Source)
	}
	return strings.Join(out, " ")
}

// TestServiceOverride: a service named like an earlier one of
// pg_default_services + pg_services replaces it, as Pigsty's service_local.yml
// and service_remote.yml do (each item is rendered into
// <pg_cluster>-<name>.cfg in turn, so the later item's file is the one left).
// The survivor keeps the earlier one's place, a warning names both
// definitions, and ports are checked over the survivors only.
func TestServiceOverride(t *testing.T) {
	for _, tc := range []struct {
		name, services, want string
		warnings             []string
	}{
		{
			name: "override a default",
			services: `
          - { name: primary, port: 5433, selector: "[]", dest: postgres, check: /primary, balance: first }`,
			want: "primary:5433@pg_services[0] replica:5434@pg_default_services[1] default:5436@pg_default_services[2] offline:5438@pg_default_services[3]",
			warnings: []string{
				"service primary: pg_services[0] (line 9) replaces pg_default_services[0] (Pigsty renders both into pg-test-primary.cfg, the later one last: it wins)",
			},
		},
		{
			// The replaced primary's port 5433 is free for another service;
			// checked before the override arrives, it would clash.
			name: "the replaced definition's port is free",
			services: `
          - { name: extra, port: 5433, selector: "[]" }
          - { name: primary, port: 5440, selector: "[]" }`,
			want: "primary:5440@pg_services[1] replica:5434@pg_default_services[1] default:5436@pg_default_services[2] offline:5438@pg_default_services[3] extra:5433@pg_services[0]",
			warnings: []string{
				"service primary: pg_services[1] (line 10) replaces pg_default_services[0] (Pigsty renders both into pg-test-primary.cfg, the later one last: it wins)",
			},
		},
		{
			name: "three definitions: the last wins",
			services: `
          - { name: standby, port: 5435, selector: "[]" }
          - { name: standby, port: 5439, selector: "[]" }
          - { name: standby, port: 5435, selector: "[]", check: /sync }`,
			want: "primary:5433@pg_default_services[0] replica:5434@pg_default_services[1] default:5436@pg_default_services[2] offline:5438@pg_default_services[3] standby:5435@pg_services[2]",
			warnings: []string{
				"service standby: pg_services[1] (line 10) replaces pg_services[0] (line 9) (Pigsty renders both into pg-test-standby.cfg, the later one last: it wins)",
				"service standby: pg_services[2] (line 11) replaces pg_services[1] (line 10) (Pigsty renders both into pg-test-standby.cfg, the later one last: it wins)",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv, err := Parse("inv.yml", []byte(`all:
  children:
    pg-test:
      hosts:
        10.10.10.11: { pg_seq: 1, pg_role: primary }
      vars:
        pg_cluster: pg-test
        pg_services:`+tc.services+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			c := inv.Clusters[0]
			if got := svcNames(c); got != tc.want {
				t.Errorf("services\n got %s\nwant %s", got, tc.want)
			}
			for _, s := range c.Services {
				if s.FullName != "pg-test-"+s.Name {
					t.Errorf("%s: FullName %q", s.Name, s.FullName)
				}
			}
			var got []string
			for _, w := range c.Warnings {
				if strings.Contains(w, "replaces") {
					got = append(got, w)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tc.warnings, "\n") {
				t.Errorf("warnings\n got %q\nwant %q", got, tc.warnings)
			}
		})
	}
}

// TestServiceOverridePortClash: two surviving names on one port stay an
// error (HAProxy would refuse to bind the second), named on the later
// definition, whether or not an override is involved.
func TestServiceOverridePortClash(t *testing.T) {
	for _, tc := range []struct{ services, want string }{
		{`
          - { name: replica, port: 5433, selector: "[]" }`,
			`inv.yml:9: cluster pg-test: pg_services[0].port: service "replica": port 5433 already used by service "primary" (pg_default_services[0])`},
		{`
          - { name: extra, port: 5440, selector: "[]" }
          - { name: primary, port: 5440, selector: "[]" }`,
			`inv.yml:10: cluster pg-test: pg_services[1].port: service "primary": port 5440 already used by service "extra" (pg_services[0])`},
	} {
		_, err := Parse("inv.yml", []byte(`all:
  children:
    pg-test:
      hosts:
        10.10.10.11: { pg_seq: 1, pg_role: primary }
      vars:
        pg_cluster: pg-test
        pg_services:`+tc.services+"\n"))
		if err == nil || err.Error() != tc.want {
			t.Errorf("error\n got %v\nwant %s", err, tc.want)
		}
	}
}

// TestQuotedDestPortWarns: a destination port written as a string is the
// port for pgsvc, but Pigsty's template renders 5432 for it (`'6543' is
// number` is false, and it is neither postgres nor pgbouncer: the else
// branch). Accepted, with a warning saying so; an unquoted port warns not.
func TestQuotedDestPortWarns(t *testing.T) {
	inv, err := Parse("inv.yml", []byte(`all:
  children:
    pg-test:
      hosts:
        10.10.10.11: { pg_seq: 1, pg_role: primary }
      vars:
        pg_cluster: pg-test
        pg_default_service_dest: '6000'
        pg_services:
          - { name: quoted, port: 5440, selector: "[]", dest: '6543' }
          - { name: plain, port: 5441, selector: "[]", dest: 6544 }
          - { name: named, port: 5442, selector: "[]", dest: postgres }
`))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(inv.Clusters[0].Warnings, "\n")
	for _, want := range []string{
		"service quoted: dest \"6543\" is a string: Pigsty's template renders port 5432 for this service (a quoted port fails its `is number` test), pgsvc port 6543; write it unquoted so that both agree",
		"pg_default_service_dest \"6000\" is a string: Pigsty's template renders port 5432 for services with dest default (a quoted port fails its `is number` test), pgsvc port 6000; write it unquoted so that both agree",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no warning %q; warnings:\n%s", want, got)
		}
	}
	if strings.Contains(got, "plain") || strings.Contains(got, "named") {
		t.Errorf("a warning about an unquoted port or a name:\n%s", got)
	}
}

// TestPigstyDiffersWarns: a null dest and an empty options are read as
// absent, while Pigsty's template (default() replaces only what is
// undefined) renders port 5432 and an empty default-server line for them:
// accepted, with a warning naming the difference.
func TestPigstyDiffersWarns(t *testing.T) {
	inv, err := Parse("inv.yml", []byte(`all:
  children:
    pg-test:
      hosts:
        10.10.10.11: { pg_seq: 1, pg_role: primary }
      vars:
        pg_cluster: pg-test
        pg_services:
          - { name: nulldest, port: 5440, selector: "[]", dest: null }
          - { name: noopts, port: 5441, selector: "[]", options: "" }
          - { name: fine, port: 5442, selector: "[]", dest: postgres, options: "inter 1s" }
`))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(inv.Clusters[0].Warnings, "\n")
	for _, want := range []string{
		"service nulldest: dest is null: Pigsty's template renders port 5432 for it (a null dest is defined, and neither default nor a port), pgsvc pg_default_service_dest; remove it or give a dest so that both agree",
		"service noopts: options is empty: Pigsty's template writes an empty default-server line for it (HAProxy's defaults: no on-marked-down shutdown-sessions, no slowstart), pgsvc the default line; remove it or give options so that both agree",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no warning %q; warnings:\n%s", want, got)
		}
	}
	if strings.Contains(got, "service fine") {
		t.Errorf("a warning about a definition Pigsty renders alike:\n%s", got)
	}
}

package topology

import (
	"errors"
	"strings"
	"testing"
)

// fakeLookup resolves only db.example, so no test depends on DNS.
func fakeLookup(t *testing.T) {
	prev := LookupHost
	LookupHost = func(h string) ([]string, error) {
		if h == "db.example" {
			return []string{"10.0.0.1"}, nil
		}
		return nil, errors.New("no such host")
	}
	t.Cleanup(func() { LookupHost = prev })
}

const validateInv = `all:
  children:
    pg-test:
      hosts:
        %s: { pg_seq: 1, pg_role: primary }
      vars: { pg_cluster: pg-test }
`

// TestValidateHostKeys (issue 12 row 2): host keys that would inject
// configuration, or that do not resolve, are rejected at load, naming the
// file, cluster, host and field.
func TestValidateHostKeys(t *testing.T) {
	fakeLookup(t)
	for _, tc := range []struct{ host, want string }{
		{`"127.4.0.99 #"`, `inv.yml:5: cluster pg-test, host 127.4.0.99 #: hosts: host key: address "127.4.0.99 #": not an IP address or a host name (character ' ')`},
		{`"10.0.0.1 10.0.0.2"`, `inv.yml:5: cluster pg-test, host 10.0.0.1 10.0.0.2: hosts: host key:`},
		{`nowhere.invalid`, `inv.yml:5: cluster pg-test, host nowhere.invalid: hosts: host key: host "nowhere.invalid" does not resolve`},
		{`bad_host`, `hosts: host key: address "bad_host"`},
	} {
		_, err := Parse("inv.yml", []byte(strings.ReplaceAll(validateInv, "%s", tc.host)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("host %s: err = %v\nwant it to contain %s", tc.host, err, tc.want)
		}
	}
	for _, ok := range []string{"10.0.0.1", "db.example", `"::1"`} {
		if _, err := Parse("inv.yml", []byte(strings.ReplaceAll(validateInv, "%s", ok))); err != nil {
			t.Errorf("host %s: %v", ok, err)
		}
	}
}

// TestValidateRejects (issue 12 rows 10, 14): what HAProxy could never be
// given is rejected at load, so plan and run refuse it alike.
func TestValidateRejects(t *testing.T) {
	fakeLookup(t)
	long := strings.Repeat("x", 64)
	for _, tc := range []struct{ name, inv, want string }{
		{"long cluster name", `all:
  children:
    g:
      hosts: { 10.0.0.1: { pg_seq: 1, pg_role: primary } }
      vars: { pg_cluster: ` + long + ` }
`, `inv.yml:5: cluster ` + long + `: pg_cluster: cluster name: name of 64 characters (at most 63)`},
		{"section collision", `all:
  children:
    a:
      hosts: { 10.0.0.1: { pg_seq: 1, pg_role: primary } }
      vars:
        pg_cluster: pg-a
        pg_services: [{ name: b-primary, port: 5440, selector: "[]" }]
    b:
      hosts: { 10.0.0.2: { pg_seq: 1, pg_role: primary } }
      vars: { pg_cluster: pg-a-b }
`, `HAProxy section "pg-a-b-primary" is also cluster pg-a, service b-primary`},
		{"bad options", `all:
  children:
    a:
      hosts: { 10.0.0.1: { pg_seq: 1, pg_role: primary } }
      vars:
        pg_cluster: pg-a
        pg_services: [{ name: x, port: 5440, selector: "[]", options: "inter 1s # no check" }]
`, `pg_services[0].options: service "x": options: "#": character '#' not allowed`},
		{"unknown option", `all:
  children:
    a:
      hosts: { 10.0.0.1: { pg_seq: 1, pg_role: primary } }
      vars:
        pg_cluster: pg-a
        pg_services: [{ name: x, port: 5440, selector: "[]", options: "inter 1s frobnicate" }]
`, `options: unsupported server option "frobnicate"`},
		{"check with #", `all:
  children:
    a:
      hosts: { 10.0.0.1: { pg_seq: 1, pg_role: primary } }
      vars:
        pg_cluster: pg-a
        pg_services: [{ name: x, port: 5440, selector: "[]", check: "/primary#x" }]
`, `pg_services[0].check: service "x": check "/primary#x": character '#' not allowed`},
		// strings.Fields splits at U+00A0, HAProxy does not: it read
		// inter "3s" (a warning) and lost the fastinter.
		{"options with a no-break space", `all:
  children:
    a:
      hosts: { 10.0.0.1: { pg_seq: 1, pg_role: primary } }
      vars:
        pg_cluster: pg-a
        pg_services: [{ name: x, port: 5440, selector: "[]", options: "inter 3s\u00a0fastinter 1s" }]
`, `pg_services[0].options: service "x": options: character 'Â' not allowed`},
		// A zone passes netip.ParseAddr but is refused when the service is
		// rendered (haproxyname.BindAddress): at load, with file and line.
		{"zoned bind address", `all:
  children:
    a:
      hosts: { 10.0.0.1: { pg_seq: 1, pg_role: primary } }
      vars:
        pg_cluster: pg-a
        pg_services: [{ name: x, port: 5440, selector: "[]", ip: "fe80::1%eth0" }]
`, `inv.yml:7: cluster pg-a: pg_services[0].ip: service "x": ip must be * or an IP address without a zone, got "fe80::1%eth0"`},
	} {
		_, err := Parse("inv.yml", []byte(tc.inv))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v\nwant it to contain %s", tc.name, err, tc.want)
		}
	}
}

// TestValidateWarns (issue 12 row 14): oddities that may be intended are
// accepted with a warning on the cluster: a selector field no member has, a
// host listed in two clusters' groups (Ansible precedence keeps it in one).
func TestValidateWarns(t *testing.T) {
	fakeLookup(t)
	inv, err := Parse("inv.yml", []byte(`all:
  children:
    a:
      hosts:
        10.0.0.1: { pg_seq: 2, pg_role: replica }
        10.0.0.3: { pg_seq: 1, pg_role: primary }
      vars: { pg_cluster: pg-a }
    b:
      hosts:
        10.0.0.1: {}
        10.0.0.2: { pg_seq: 1, pg_role: primary }
      vars: { pg_cluster: pg-b }
    c:
      hosts: { 10.0.0.4: { pg_seq: 1, pg_role: primary } }
      vars:
        pg_cluster: pg-c
        pg_services: [{ name: x, port: 5440, selector: "[]", backup: "[? pg_rloe == `+"`primary`"+` ]" }]
`))
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, c := range inv.Clusters {
		all = append(all, c.Warnings...)
	}
	got := strings.Join(all, "\n")
	if !strings.Contains(got, `service x: backup [? pg_rloe == `+"`primary`"+` ] uses field "pg_rloe", which no member has`) {
		t.Errorf("no warning about the misspelled field; warnings:\n%s", got)
	}
	if strings.Contains(got, `"pg_role"`) || strings.Contains(got, `"pg_offline_query"`) {
		t.Errorf("warning about a real field; warnings:\n%s", got)
	}
	if !strings.Contains(got, "host 10.0.0.1 is also listed in group") {
		t.Errorf("no warning about the host in two clusters' groups; warnings:\n%s", got)
	}
}

func TestSelectorFields(t *testing.T) {
	for expr, want := range map[string]string{
		"[]": "",
		"[? pg_role == `primary` || pg_role == `offline` ]":              "pg_role",
		"[? patroni_tags.nofailover && starts_with(patroni_state, 'r')]": "patroni_state,patroni_tags",
		`[? "pg-weird" == 'x' && !pg_offline_query]`:                     "pg-weird,pg_offline_query",
	} {
		if got := strings.Join(selectorFields(expr), ","); got != want {
			t.Errorf("selectorFields(%s) = %s, want %s", expr, got, want)
		}
	}
}

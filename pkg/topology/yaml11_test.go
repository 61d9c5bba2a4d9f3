package topology

import (
	"reflect"
	"testing"
)

// TestYAML11Bools: Ansible reads inventories with PyYAML (YAML 1.1), where
// plain yes/no/on/off in the spellings PyYAML takes are booleans; yaml.v3
// reads them as strings, and the string "no" is true to JMESPath: a replica
// with pg_offline_query: no was an offline server (Pigsty's template makes
// it a backup). Quoted or !!str-tagged values, keys and other spellings
// stay strings, as in PyYAML.
func TestYAML11Bools(t *testing.T) {
	inv, err := Parse("inv.yml", []byte(`all:
  vars:
    a_yes: yes
    a_off: OFF
    a_on: On
    a_quoted: "no"
    a_single: 'yes'
    a_tagged: !!str off
    a_y: y
    a_mixed: yEs
    a_list: [ yes, "no", off ]
    a_map: { k: no }
    anchored: &x no
    aliased: *x
  children:
    pg-test:
      hosts:
        10.10.10.11: { pg_seq: 1, pg_role: primary }
        10.10.10.12: { pg_seq: 2, pg_role: replica, pg_offline_query: no }
        10.10.10.13: { pg_seq: 3, pg_role: replica, pg_offline_query: yes }
      vars: { pg_cluster: pg-test }
`))
	if err != nil {
		t.Fatal(err)
	}
	c := inv.Clusters[0]
	want := map[string]any{
		"a_yes": true, "a_off": false, "a_on": true,
		"a_quoted": "no", "a_single": "yes", "a_tagged": "off", "a_y": "y", "a_mixed": "yEs",
		"a_list": []any{true, "no", false}, "a_map": map[string]any{"k": false},
		"anchored": false, "aliased": false,
	}
	for k, w := range want {
		if got := c.Vars[k]; !reflect.DeepEqual(got, w) {
			t.Errorf("%s = %#v, want %#v", k, got, w)
		}
	}
	for _, m := range c.Members {
		got := m.Vars["pg_offline_query"]
		want := m.Seq == 3
		if got != want {
			t.Errorf("%s: pg_offline_query = %#v, want %v", m.Name, got, want)
		}
	}
}

package topology

import "gopkg.in/yaml.v3"

// yaml11BoolWords are the plain scalars Ansible's YAML loader (PyYAML, YAML
// 1.1) reads as booleans beyond true and false; yaml.v3 (YAML 1.2) reads
// them as strings. PyYAML takes exactly these spellings (not y, n or yEs).
var yaml11BoolWords = map[string]string{
	"yes": "true", "Yes": "true", "YES": "true", "on": "true", "On": "true", "ON": "true",
	"no": "false", "No": "false", "NO": "false", "off": "false", "Off": "false", "OFF": "false",
}

// yaml11Bools retags the plain (unquoted, untagged) values among
// yaml11BoolWords as the booleans Ansible reads, so that variables and
// selectors see what Pigsty's template sees: pg_offline_query: no is false
// there, while the string "no" is true to JMESPath (a replica marked no
// became an offline server). Quoted or !!str-tagged values stay strings,
// as in PyYAML. Mapping keys are left alone. Aliases are not followed (their
// anchors are visited where they are defined), so the walk is linear in the
// document.
func yaml11Bools(n *yaml.Node) {
	if n == nil {
		return
	}
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Style == 0 && n.Tag == "!!str" {
			if v, ok := yaml11BoolWords[n.Value]; ok {
				n.Tag, n.Value = "!!bool", v
			}
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			yaml11Bools(n.Content[i])
		}
	default:
		for _, c := range n.Content {
			yaml11Bools(c)
		}
	}
}

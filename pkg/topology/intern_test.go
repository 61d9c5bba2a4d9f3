package topology

import (
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

// TestParseSharesRepeatedTexts: the texts every cluster of a fleet repeats
// (service options, selectors, checks, dests, roles) are kept once: the
// service definitions and the selector documents of different clusters
// hold the very same string, not equal copies.
func TestParseSharesRepeatedTexts(t *testing.T) {
	const opts = "inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100"
	var b strings.Builder
	b.WriteString("all:\n  children:\n")
	for _, c := range []struct{ name, host string }{{"pg-a", "10.0.0.1"}, {"pg-b", "10.0.0.2"}} {
		b.WriteString("    " + c.name + ":\n      hosts:\n        " + c.host + ": { pg_seq: 1, pg_role: primary }\n")
		b.WriteString("      vars:\n        pg_cluster: " + c.name + "\n        pg_default_services:\n")
		b.WriteString("          - { name: replica, port: 5434, dest: default, check: /read-only, selector: \"[]\", backup: \"[? pg_role == `primary` ]\", options: \"" + opts + "\" }\n")
	}
	inv, err := Parse("fleet.yml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	a, c := inv.Clusters[0], inv.Clusters[1]
	same := func(what, x, y string) {
		t.Helper()
		if x != y || unsafe.StringData(x) != unsafe.StringData(y) {
			t.Errorf("%s: %q and %q are not one shared string", what, x, y)
		}
	}
	sa, sc := a.Services[0], c.Services[0]
	same("options", sa.Options, sc.Options)
	same("selector", sa.Selector, sc.Selector)
	same("backup", sa.Backup, sc.Backup)
	same("check", sa.Check, sc.Check)
	same("source", sa.Source, sc.Source)
	same("role", a.Members[0].Role, c.Members[0].Role)
	// The selector documents' copy of the definition: the same string in
	// the same box.
	def := func(m *Member) map[string]any {
		return m.Vars["pg_default_services"].([]any)[0].(map[string]any)
	}
	da, dc := def(a.Members[0]), def(c.Members[0])
	same("options in the member's vars", da["options"].(string), dc["options"].(string))
	same("options in the definition and the vars", sa.Options, da["options"].(string))
	// Distinct texts stay distinct.
	if a.Name == c.Name || sa.FullName == sc.FullName {
		t.Errorf("clusters %q and %q, services %q and %q: want distinct", a.Name, c.Name, sa.FullName, sc.FullName)
	}
}

// TestNormalizeWithoutTable: with no table, normalize converts as before
// and keeps a string value as it is.
func TestNormalizeWithoutTable(t *testing.T) {
	in := map[string]any{"a": 1, "b": "x", "c": []any{int64(2), "y", map[any]any{3: true}}, "d": nil, "e": 1.5}
	got := normalize(in)
	want := map[string]any{"a": float64(1), "b": "x", "c": []any{float64(2), "y", map[string]any{"3": true}}, "d": nil, "e": 1.5}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("normalize = %#v, want %#v", got, want)
	}
	var tb strTable
	got2 := normalizeWith(in, &tb)
	if !reflect.DeepEqual(got2, want) {
		t.Fatalf("normalizeWith = %#v, want %#v", got2, want)
	}
	if len(tb.strs) == 0 || len(tb.boxes) != 2 {
		t.Fatalf("table: %d texts, %d boxes; want some texts and the 2 string values boxed", len(tb.strs), len(tb.boxes))
	}
}

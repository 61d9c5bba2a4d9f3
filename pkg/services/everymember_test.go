package services

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/topology"
)

// TestEveryMemberIsJMESPath: the selectors that take every member (`[]`,
// `[*]`) give, without running, what JMESPath gives over the same
// documents (empty documents included); any other selector, or a document
// that is not an object, is left to JMESPath.
func TestEveryMemberIsJMESPath(t *testing.T) {
	doc := func(role string) map[string]any {
		return map[string]any{"pg_role": role, "pg_instance": "pg-test-" + role}
	}
	lists := [][]map[string]any{
		nil,
		{doc("primary")},
		{doc("primary"), doc("replica"), {}},
		{doc("replica"), doc("offline"), doc("primary"), doc("replica")},
	}
	for _, sel := range []string{"[]", "[*]", " [] ", "\t[*]\n"} {
		expr, err := topology.CompileSelector(sel)
		if err != nil {
			t.Fatalf("compile %q: %v", sel, err)
		}
		for _, l := range lists {
			docs := make([]any, len(l))
			served := make([]*topology.MemberView, len(l))
			for i, d := range l {
				docs[i] = d
				served[i] = &topology.MemberView{Name: "m" + string(rune('0'+i)), Vars: d}
			}
			want, wantOrder, err := match(expr, docs, newDocIndex(served), new([]int))
			if err != nil {
				t.Fatalf("%q over %d members: %v", sel, len(l), err)
			}
			got, order, ok := everyMember(sel, docs, new([]int))
			if !ok || !reflect.DeepEqual(got, want) || len(order) != len(wantOrder) || len(order) > 0 && !reflect.DeepEqual(order, wantOrder) {
				t.Errorf("%q over %d members: everyMember = %v %v, %v; JMESPath %v %v", sel, len(l), got, order, ok, want, wantOrder)
			}
		}
	}
	one := []any{doc("primary")}
	for _, sel := range []string{"[? pg_role == `primary`]", "[0]", "[ ]", ""} {
		if _, _, ok := everyMember(sel, one, new([]int)); ok {
			t.Errorf("everyMember(%q) took every member; want it left to JMESPath", sel)
		}
	}
	if _, _, ok := everyMember("[]", []any{doc("primary"), map[string]any(nil)}, new([]int)); ok {
		t.Errorf("a nil document: want it left to JMESPath")
	}
	if _, _, ok := everyMember("[]", []any{"not a member"}, new([]int)); ok {
		t.Errorf("a string document: want it left to JMESPath")
	}
}

// TestSelectsAllAndCheckPath: the allocation-free forms give what the
// texts' plain definitions give (blanks dropped as strings.Fields drops
// them; the path before any query, without a trailing slash).
func TestSelectsAllAndCheckPath(t *testing.T) {
	plainAll := func(sel string) bool {
		s := strings.Join(strings.Fields(sel), "")
		return s == "" || s == "[]" || s == "[*]"
	}
	for _, sel := range []string{"", " ", "[]", "[*]", " [ ] ", "[ * ]", "\t[\u00a0]\n", "[]]", "[*]]", "[?x]", "[0]",
		"[**]", "*", "[", "]", "[?pg_role=='primary']", "\u2003[\u2003*\u2003]", "[]x", "x[]"} {
		if got, want := selectsAll(sel), plainAll(sel); got != want {
			t.Errorf("selectsAll(%q) = %v, want %v", sel, got, want)
		}
	}
	plainPath := func(check string) string { return strings.TrimSuffix(strings.SplitN(check, "?", 2)[0], "/") }
	for _, c := range []string{"", "/", "/primary", "/primary/", "/read-only?lag=1MB", "/replica/?lag=0", "?x", "/a?b?c", "/health//"} {
		if got, want := checkPath(c), plainPath(c); got != want {
			t.Errorf("checkPath(%q) = %q, want %q", c, got, want)
		}
	}
}

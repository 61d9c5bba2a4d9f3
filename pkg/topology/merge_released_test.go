package topology

import "testing"

func TestReleasedHas(t *testing.T) {
	for _, tc := range []struct {
		list, name string
		want       bool
	}{
		{"", "a", false},
		{"a", "a", true},
		{"a,b", "b", true},
		{"a,b", "a", true},
		{"ab,b", "a", false},
		{"a,b", "", false},
	} {
		if got := releasedHas(tc.list, tc.name); got != tc.want {
			t.Errorf("releasedHas(%q, %q) = %v", tc.list, tc.name, got)
		}
	}
}

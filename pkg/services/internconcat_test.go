package services

import (
	"strings"
	"testing"
	"unsafe"
)

// TestInternConcat: the concatenation, the kept copy when there is one
// (one string for equal reasons), beyond the stack buffer too.
func TestInternConcat(t *testing.T) {
	// (A table other tests filled keeps nothing more: start with room.)
	reasons.Lock()
	reasons.m = map[string]string{}
	reasons.Unlock()
	long := strings.Repeat("x", 300)
	for _, parts := range [][]string{{}, {"a"}, {"inactive twin (", "maint", "): not selected (", "role replica", ")"}, {long, "y"}} {
		want := strings.Join(parts, "")
		a, b := internConcat(parts...), internConcat(parts...)
		if a != want || b != want {
			t.Errorf("internConcat(%q) = %q, %q; want %q", parts, a, b, want)
		}
		if len(want) > 0 && a != "" && b != "" && unsafeData(a) != unsafeData(b) {
			t.Errorf("internConcat(%q): two copies of one reason", parts)
		}
		if c := intern(want); unsafeData(c) != unsafeData(a) && len(want) > 0 {
			t.Errorf("intern(%q) is not the copy internConcat keeps", want)
		}
	}
}

func unsafeData(s string) *byte { return unsafe.StringData(s) }

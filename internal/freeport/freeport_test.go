package freeport

import "testing"

// Get never returns a port twice in one process.
func TestGetNeverTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		p := Get(t)
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}

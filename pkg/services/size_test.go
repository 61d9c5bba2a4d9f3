package services

import (
	"testing"
	"unsafe"
)

// TestServerSize guards the packing of Server's bools (types.go): a
// 1,000-cluster fleet keeps ~70,000 Servers.
func TestServerSize(t *testing.T) {
	if n := unsafe.Sizeof(Server{}); n > 152 {
		t.Errorf("Server is %d bytes, want <= 152 (keep its bools in runs)", n)
	}
}

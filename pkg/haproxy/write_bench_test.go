package haproxy

import (
	"path/filepath"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
)

// BenchmarkWriteConfigOneChange1000: what a runtime apply of one cluster's
// switchover spends on the file at 1,000 clusters: the render cache writes
// the 2.6 MB file (one service changed) to a temporary file, syncs it and
// renames it over the config.
func BenchmarkWriteConfigOneChange1000(b *testing.B) {
	d := NewDirect(Options{ConfigPath: filepath.Join(b.TempDir(), "haproxy.cfg"), StatsSocket: "/run/admin.sock"}, nil)
	a, moved := twinFleet(1000, 1, 20000), twinFleet(1000, 2, 20000)
	if err := d.writeConfig(a); err != nil {
		b.Fatal(err)
	}
	orig := a[500]
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		a[500] = moved[500]
		if i%2 == 1 {
			a[500] = orig
		}
		if err := d.writeConfig(a); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(haproxycfg.Render(a, d.renderOptions()))))
}

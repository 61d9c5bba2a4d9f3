package topology

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/patroni"
)

func BenchmarkParse(b *testing.B) {
	data, err := os.ReadFile("../../config/pigsty.yml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("pigsty.yml", data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMerge(b *testing.B) {
	inv := mustParse(b, mergeInventory)
	c := inv.Cluster("pg-test")
	st := state("pg-test-2", live("pg-test-1", "127.0.0.11", "replica"), live("pg-test-2", "127.0.0.12", "master"), live("pg-test-3", "127.0.0.13", "replica"))
	b.ReportAllocs()
	for b.Loop() {
		Merge(c, st, MergeOptions{})
	}
}

// FuzzParse checks that no input makes Parse panic, and that it returns
// either an inventory or an error, never both or neither.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/bad/*.yml")
	seeds = append(seeds, "../../config/pigsty.yml", "../../config/demo.yml")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := Parse("fuzz.yml", data)
		if (inv == nil) == (err == nil) {
			t.Fatalf("Parse = %v, %v: want exactly one of them", inv, err)
		}
		if inv != nil {
			for _, c := range inv.Clusters {
				Merge(c, &patroni.ClusterState{Leader: "x"}, MergeOptions{LastKnownLeader: "y"})
			}
		}
	})
}

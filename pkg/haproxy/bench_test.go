package haproxy

import (
	"context"
	"testing"
)

// BenchmarkApply measures one Apply against a real HAProxy: a weight-only
// change (stats socket + file rewrite, no reload) and a backup flip (haproxy
// -c, state dump, reload, wait for the new worker).
func BenchmarkApply(b *testing.B) {
	r := startRig(b)
	ctx := context.Background()
	m1 := newMember(b, "pg-b-1", "127.0.0.51", "primary")
	m2 := newMember(b, "pg-b-2", "127.0.0.52", "replica")
	pp, rp := freePort(b, frontIP), freePort(b, frontIP)
	if _, err := r.direct.Apply(ctx, cluster(pp, rp, nil, m1, m2)); err != nil {
		b.Fatal(err)
	}
	b.Run("runtime-only", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			res, err := r.direct.Apply(ctx, cluster(pp, rp, map[string]int{"pg-b-2": 50 + i%2}, m1, m2))
			if err != nil || res.Reloaded {
				b.Fatalf("apply: %+v, %v", res, err)
			}
		}
	})
	b.Run("reload", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if i%2 == 0 {
				m1.setRole("replica")
				m2.setRole("primary")
			} else {
				m1.setRole("primary")
				m2.setRole("replica")
			}
			res, err := r.direct.Apply(ctx, cluster(pp, rp, map[string]int{"pg-b-2": 50 + i%2}, m1, m2))
			if err != nil || !res.Reloaded {
				b.Fatalf("apply: %+v, %v", res, err)
			}
		}
	})
}

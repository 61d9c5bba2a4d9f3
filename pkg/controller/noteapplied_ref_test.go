package controller

import (
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// noteAppliedReference is noteApplied as it was: every transition's
// cluster prefix tested against every change.
func noteAppliedReference(active map[string]*transition, res target.Result, at time.Time) {
	for _, t := range active {
		for _, ch := range res.Changes {
			if !strings.HasPrefix(ch.Backend, t.cluster+"-") {
				continue
			}
			switch {
			case ch.Kind == target.KindForceUp && ch.Server == t.to && t.forcedAt.IsZero():
				t.forcedAt = at
				if !res.ForcedUp.IsZero() {
					t.forcedAt = res.ForcedUp
				}
			case ch.Kind == target.KindForceDown && strings.TrimSuffix(ch.Server, services.BackupTwinSuffix) == t.from &&
				t.fencedAt.IsZero() && !t.offAt.IsZero():
				t.fencedAt = at
				if !res.ForcedDown.IsZero() {
					t.fencedAt = res.ForcedDown
				}
			}
		}
	}
}

// TestNoteAppliedSameAsReference: clusters whose names are prefixes of
// each other (pg, pg-a, pg-a-b), changes of their backends and of others.
func TestNoteAppliedSameAsReference(t *testing.T) {
	r := rand.New(rand.NewSource(9))
	names := []string{"pg", "pg-a", "pg-a-b", "pg-b", "x-pg", "pga"}
	members := []string{"1", "2", "3"}
	for run := 0; run < 500; run++ {
		base := time.Unix(1000, 0)
		mk := func() map[string]*transition {
			m := map[string]*transition{}
			for _, n := range names {
				if r.Intn(3) == 0 {
					continue
				}
				tr := &transition{cluster: n, from: n + "-" + members[r.Intn(3)], to: n + "-" + members[r.Intn(3)]}
				if r.Intn(2) == 0 {
					tr.offAt = base
				}
				if r.Intn(4) == 0 {
					tr.forcedAt = base.Add(time.Second)
				}
				if r.Intn(4) == 0 {
					tr.fencedAt = base.Add(time.Second)
				}
				m[n] = tr
			}
			return m
		}
		seed := r.Int63()
		r = rand.New(rand.NewSource(seed))
		a := mk()
		r = rand.New(rand.NewSource(seed))
		b := mk()
		var res target.Result
		for k := r.Intn(12); k > 0; k-- {
			cl := names[r.Intn(len(names))]
			sv := cl + "-" + members[r.Intn(3)]
			if r.Intn(3) == 0 {
				sv += services.BackupTwinSuffix
			}
			res.Changes = append(res.Changes, target.Change{Kind: []string{target.KindForceUp, target.KindForceDown, target.KindSetState}[r.Intn(3)],
				Backend: cl + []string{"-primary", "-replica", "-default"}[r.Intn(3)], Server: sv})
		}
		if r.Intn(2) == 0 {
			res.ForcedUp = base.Add(2 * time.Second)
		}
		if r.Intn(2) == 0 {
			res.ForcedDown = base.Add(3 * time.Second)
		}
		at := base.Add(4 * time.Second)
		c := &Controller{}
		c.tx.active = a
		c.noteApplied(res, at)
		noteAppliedReference(b, res, at)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("run %d: noteApplied %s, reference %s", run, fmt.Sprint(a), fmt.Sprint(b))
		}
	}
}

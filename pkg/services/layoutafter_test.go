package services

import (
	"fmt"
	"math/rand"
	"reflect"
	"testing"
)

// TestLayOutAfterIsLayOut: LayOutAfter gives LayOut's result whatever the
// earlier layout it is handed (the same service's under other roles,
// another service's, none), and takes the strings that come out the same
// from the same service's: backup twin names, the Track of the backup
// twins and of Pigsty's default service, and the default service's
// reasons of the members whose role did not change.
func TestLayOutAfterIsLayOut(t *testing.T) {
	roles := [][3]string{
		{"primary", "replica", "replica"},
		{"replica", "primary", "replica"},
		{"replica", "replica", "primary"},
		{"primary", "replica", "offline"},
		{"replica", "primary", "offline"},
	}
	build := func(r [3]string) []Service {
		v := view("pg-test", "", seedDefs(t),
			known(1, "10.10.10.11", "primary", r[0], false),
			known(2, "10.10.10.12", "replica", r[1], false),
			known(3, "10.10.10.13", "replica", r[2], r[2] == "offline"))
		in, err := Build(v)
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	shared := map[string]int{}
	for _, ra := range roles {
		a := build(ra)
		la, err := Twins(a)
		if err != nil {
			t.Fatal(err)
		}
		for _, rb := range roles {
			b := build(rb)
			srcs := TrackSources(b)
			for i := range b {
				want, werr := LayOut(b[i], srcs[i])
				for j := -1; j < len(la); j++ {
					var prev *Service
					if j >= 0 {
						prev = &la[j]
					}
					got, gerr := LayOutAfter(b[i], srcs[i], prev)
					if fmt.Sprint(gerr) != fmt.Sprint(werr) || !reflect.DeepEqual(got, want) {
						t.Fatalf("%v -> %v, %s after %d: LayOutAfter differs from LayOut:\n got %+v (%v)\nwant %+v (%v)",
							ra, rb, b[i].Name, j, got, gerr, want, werr)
					}
					if j < 0 || la[j].Name != b[i].Name {
						continue
					}
					for k, sv := range got.Servers {
						p := prevServer(prev, k, sv.Name)
						if p == nil {
							continue
						}
						if sv.Member != "" && sv.Backup && unsafeData(sv.Name) == unsafeData(p.Name) && sv.Name != sv.Member {
							shared["twin name"]++
						}
						if sv.Track != "" && sv.Track == p.Track && unsafeData(sv.Track) == unsafeData(p.Track) {
							shared["track"]++
						}
						if sv.Track != "" && sv.Reason == p.Reason && unsafeData(sv.Reason) == unsafeData(p.Reason) {
							shared["reason"]++
						}
					}
				}
			}
		}
	}
	for _, what := range []string{"twin name", "track", "reason"} {
		if shared[what] == 0 {
			t.Errorf("no %s taken from the earlier layout (%v)", what, shared)
		}
	}
}

// TestLayOutAfterRandom: LayOutAfter of random services after the layout
// of other random services of the same name is LayOut.
func TestLayOutAfterRandom(t *testing.T) {
	r := rand.New(rand.NewSource(11))
	write := func(s Service) Service {
		// Some a write service laid out as Pigsty's, to be tracked.
		s.RoleDependent, s.Candidates, s.Check = false, nil, "/primary"
		s.DefaultServer = "on-marked-down shutdown-sessions"
		for k := range s.Servers {
			s.Servers[k].Backup, s.Servers[k].Disabled, s.Servers[k].Track = false, false, ""
		}
		return s
	}
	for i := 0; i < 3000; i++ {
		a, b := randomService(r, i), randomService(r, i)
		if r.Intn(3) == 0 {
			a, b = write(a), write(b)
		}
		src := write(randomService(r, i+1))
		src.Name, src.Servers = "c-src", append([]Server(nil), b.Servers...)
		for k := range src.Servers {
			src.Servers[k].Backup, src.Servers[k].Disabled, src.Servers[k].Track = false, false, ""
		}
		var srcp *Service
		if r.Intn(2) == 0 {
			srcp = &src
		}
		la, err := LayOut(a, srcp)
		if err != nil {
			continue
		}
		want, werr := LayOut(b, srcp)
		got, gerr := LayOutAfter(b, srcp, &la)
		if fmt.Sprint(gerr) != fmt.Sprint(werr) || !reflect.DeepEqual(got, want) {
			t.Fatalf("case %d: LayOutAfter differs from LayOut:\n got %+v (%v)\nwant %+v (%v)", i, got, gerr, want, werr)
		}
	}
}

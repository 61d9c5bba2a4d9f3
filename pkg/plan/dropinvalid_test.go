package plan

import (
	"fmt"
	"math/rand"
	"reflect"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// dropInvalidServersRef is dropInvalidServers as it was, copying every list:
// the oracle of the lazy copy.
func dropInvalidServersRef(svcs []services.Service) ([]services.Service, []string) {
	var warn []string
	for i := range svcs {
		s := &svcs[i]
		kept := s.Servers[:0:0]
		for j := range s.Servers {
			if err := services.ValidateServer(&s.Servers[j]); err != nil {
				warn = append(warn, fmt.Sprintf("service %s: %v: server skipped", s.Name, err))
				continue
			}
			kept = append(kept, s.Servers[j])
		}
		if len(kept) != len(s.Servers) {
			s.Servers = kept
		}
	}
	return svcs, warn
}

// TestDropInvalidServersSameAsReference: on random services with a few bad
// servers anywhere in their lists, the lazy copy gives what the copying one
// did, and a list with nothing to drop is handed on as it is (not copied).
func TestDropInvalidServersSameAsReference(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	for round := 0; round < 2000; round++ {
		var a, b []services.Service
		for i := rng.Intn(5); i > 0; i-- {
			var svs []services.Server
			for j := rng.Intn(6); j > 0; j-- {
				sv := services.Server{Name: fmt.Sprintf("m-%d", j), Address: "127.0.0.1", Port: 5432, CheckPort: 8008, Weight: 100}
				switch rng.Intn(8) {
				case 0:
					sv.Port = 0
				case 1:
					sv.Name = "bad name"
				case 2:
					sv.Weight = 300
				}
				svs = append(svs, sv)
			}
			a = append(a, services.Service{Name: fmt.Sprintf("s-%d", i), Servers: svs})
			b = append(b, services.Service{Name: fmt.Sprintf("s-%d", i), Servers: append([]services.Server(nil), svs...)})
		}
		before := make([][]services.Server, len(a))
		for i := range a {
			before[i] = a[i].Servers
		}
		gotS, gotW := dropInvalidServers(a)
		wantS, wantW := dropInvalidServersRef(b)
		if !reflect.DeepEqual(gotS, wantS) || !reflect.DeepEqual(gotW, wantW) {
			t.Fatalf("round %d: got %+v %q, want %+v %q", round, gotS, gotW, wantS, wantW)
		}
		for i := range gotS {
			same := len(before[i]) == len(gotS[i].Servers) && (len(before[i]) == 0 || &before[i][0] == &gotS[i].Servers[0])
			if same != (len(before[i]) == len(wantS[i].Servers)) {
				t.Fatalf("round %d, service %d: list kept %v, but %d -> %d servers", round, i, same, len(before[i]), len(wantS[i].Servers))
			}
		}
	}
}

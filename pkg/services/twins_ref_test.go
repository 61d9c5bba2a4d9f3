package services

import (
	"fmt"
	"math/rand"
	"reflect"
	"testing"
)

// TestTwinsSameAsReference compares Twins with the map-based version it
// replaced on random services: members normal, backup, absent, unconfirmed,
// primary or not (write services activate the primary only), listed twice,
// servers that are no candidates.
func TestTwinsSameAsReference(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	for i := 0; i < 3000; i++ {
		in := []Service{randomService(r, i), randomService(r, i+1)}
		got, gerr := Twins(in)
		want, werr := referenceTwins(in)
		if fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Fatalf("case %d: error %v, reference %v", i, gerr, werr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("case %d: Twins differs from the reference:\n got %+v\nwant %+v", i, got, want)
		}
		if again, err := Twins(got); gerr == nil && (err != nil || !reflect.DeepEqual(again, got)) {
			t.Fatalf("case %d: Twins of a layout changed it (%v)", i, err)
		}
	}
}

func randomService(r *rand.Rand, i int) Service {
	check := []string{"/primary", "/replica", "/read-only"}[r.Intn(3)]
	s := Service{Cluster: "c", Name: fmt.Sprintf("c-s%d", i), Check: check, RoleDependent: r.Intn(5) > 0}
	n := r.Intn(5)
	for m := 0; m < n; m++ {
		name := fmt.Sprintf("c-%d", r.Intn(4))
		if r.Intn(12) == 0 {
			name = "c-1" + BackupTwinSuffix
		}
		c := Server{Name: name, Address: "10.0.0.1", Port: 6432, Weight: 100, Reason: "r" + name, Unconfirmed: r.Intn(4) == 0, Primary: r.Intn(3) == 0}
		s.Candidates = append(s.Candidates, c)
		if r.Intn(3) > 0 {
			sv := c
			sv.Unconfirmed = false
			sv.Backup, sv.ForceUp, sv.ForceDown, sv.HoldDown = r.Intn(2) == 0, r.Intn(4) == 0, r.Intn(4) == 0, r.Intn(6) == 0
			sv.Weight, sv.Selected = r.Intn(3)*50, r.Intn(2) == 0
			s.Servers = append(s.Servers, sv)
		}
	}
	if r.Intn(6) == 0 {
		s.Servers = append(s.Servers, Server{Name: "c-extra", Address: "10.0.0.9", Port: 6432})
	}
	return s
}

func referenceTwins(in []Service) ([]Service, error) {
	out := make([]Service, 0, len(in))
	for _, s := range in {
		if !s.RoleDependent || len(s.Candidates) == 0 {
			out = append(out, s)
			continue
		}
		pig := make(map[string]Server, len(s.Servers))
		for _, sv := range s.Servers {
			pig[sv.Name] = sv
		}
		names := make(map[string]bool, len(s.Candidates))
		for _, c := range s.Candidates {
			names[c.Name] = true
		}
		t := s
		t.Layout = LayoutTwins
		t.Candidates = nil // a layout keeps no candidates (the twins are)
		t.Servers = make([]Server, 0, 2*len(s.Candidates))
		inactive := InactiveState(s)
		for _, c := range s.Candidates {
			bname := c.Name + BackupTwinSuffix
			if names[bname] {
				return nil, fmt.Errorf("service %s: member %s and the backup twin of member %s have the same name", s.Name, bname, c.Name)
			}
			p, in := pig[c.Name]
			delete(pig, c.Name)
			for _, backup := range []bool{false, true} {
				tw := c
				tw.Member, tw.Backup, tw.Selected = c.Name, backup, !backup
				if backup {
					tw.Name = bname
				}
				switch {
				case in && p.Backup == backup && !c.Unconfirmed && (c.Primary || !WriteCheck(s.Check)):
					tw.Weight, tw.ForceUp, tw.ForceDown, tw.HoldDown, tw.Reason, tw.Selected = p.Weight, p.ForceUp, p.ForceDown, p.HoldDown, "active twin: "+p.Reason, p.Selected
				case in && p.Backup == backup && !c.Unconfirmed:
					tw.Disabled, tw.ForceUp, tw.ForceDown, tw.HoldDown = true, false, false, false
					tw.Reason = fmt.Sprintf("inactive twin (%s): not the primary, and the check passes on the primary only; Pigsty's layout: %s", inactive, p.Reason)
				case in && p.Backup == backup:
					tw.Disabled, tw.ForceUp, tw.ForceDown, tw.HoldDown = true, false, false, false
					tw.Reason = fmt.Sprintf("inactive twin (%s): the DCS does not report the member running; Pigsty's layout: %s", inactive, p.Reason)
				case in:
					tw.Disabled, tw.ForceUp, tw.ForceDown, tw.HoldDown = true, false, false, false
					tw.Reason = fmt.Sprintf("inactive twin (%s): the member is %s", inactive, map[bool]string{true: "a backup server", false: "a normal server"}[p.Backup])
				default:
					tw.Disabled, tw.ForceUp, tw.ForceDown, tw.HoldDown = true, false, false, false
					tw.Reason = fmt.Sprintf("inactive twin (%s): not selected (%s)", inactive, c.Reason)
				}
				t.Servers = append(t.Servers, tw)
			}
		}
		// Servers Pigsty's layout has that are no candidates (none today)
		// are kept as they are.
		for _, sv := range s.Servers {
			if _, left := pig[sv.Name]; left {
				t.Servers = append(t.Servers, sv)
			}
		}
		out = append(out, t)
	}
	return out, nil
}

package target

import (
	"fmt"
	"math/rand"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// TestDiffSameAsReference compares Diff with the version before it stopped
// copying and sorting every service's servers, on random current and
// desired states (unsorted and repeated server names, servers only one side
// has, every field that Diff compares).
func TestDiffSameAsReference(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	for i := 0; i < 5000; i++ {
		var desired []services.Service
		current := map[string]*Backend{}
		for k := 0; k < 3; k++ {
			d := services.Service{Name: fmt.Sprintf("s%d", k), IP: "*", Port: 5000 + k}
			if r.Intn(2) == 0 {
				d.Layout = services.LayoutTwins
			}
			cur := &Backend{Name: d.Name, HasFrontend: r.Intn(6) > 0, Servers: map[string]services.Server{}}
			if r.Intn(3) == 0 {
				st := SettingsOf(d)
				cur.Settings = &st
			}
			for n := r.Intn(6); n > 0; n-- {
				w := randomServer(r)
				d.Servers = append(d.Servers, w)
				if r.Intn(4) > 0 {
					c := w
					c.Backup, c.Down, c.HoldDown = c.Backup != (r.Intn(5) == 0), r.Intn(2) == 0, r.Intn(3) == 0
					c.Admin = []string{"", "ready", "drain", "maint"}[r.Intn(4)]
					if r.Intn(5) == 0 {
						c.Weight++
					}
					cur.Servers[c.Name] = c
				}
			}
			if r.Intn(3) == 0 {
				sort.Slice(d.Servers, func(i, j int) bool { return d.Servers[i].Name < d.Servers[j].Name })
			}
			for n := r.Intn(3); n > 0; n-- {
				c := randomServer(r)
				if _, ok := cur.Servers[c.Name]; !ok {
					cur.Servers[c.Name] = c
				}
			}
			desired = append(desired, d)
			if r.Intn(8) > 0 {
				current[d.Name] = cur
			}
		}
		got, want := Diff(current, desired), referenceDiff(current, desired)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("case %d: Diff differs from the reference:\n got %+v\nwant %+v", i, got, want)
		}
	}
}

func randomServer(r *rand.Rand) services.Server {
	return services.Server{Name: fmt.Sprintf("m%d", r.Intn(7)), Address: "10.0.0.1", Port: 6432, CheckPort: 8008,
		Weight: 100, Backup: r.Intn(2) == 0, ForceUp: r.Intn(4) == 0, ForceDown: r.Intn(4) == 0,
		HoldDown: r.Intn(4) == 0, Disabled: r.Intn(3) == 0}
}

func referenceDiff(current map[string]*Backend, desired []services.Service) []Change {
	var out []Change
	for _, d := range desired {
		cur := current[d.Name]
		if cur == nil || !cur.HasFrontend {
			detail := fmt.Sprintf("bind %s:%d, %d servers", d.IP, d.Port, len(d.Servers))
			if cur != nil {
				detail = "frontend missing; " + detail
			}
			out = append(out, Change{Kind: KindCreateService, Backend: d.Name, Detail: detail})
			if cur == nil {
				continue
			}
		}
		if cur.Settings != nil {
			if want := SettingsOf(d); *cur.Settings != want {
				out = append(out, Change{Kind: KindUpdateService, Backend: d.Name, Detail: settingsDelta(*cur.Settings, want)})
			}
		}
		out = append(out, refDiffServers(d.Name, cur.Servers, d.Servers, d.Layout == services.LayoutTwins)...)
		if d.Layout == services.LayoutTwins {
			out = append(out, refDiffAdmin(d, cur.Servers)...)
		}
	}
	return out
}
func refDiffServers(backend string, cur map[string]services.Server, want []services.Server, twins bool) []Change {
	var out []Change
	seen := make(map[string]bool, len(want))
	sorted := append([]services.Server(nil), want...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, w := range sorted {
		seen[w.Name] = true
		c, ok := cur[w.Name]
		if !ok {
			out = append(out, Change{Kind: KindAddServer, Backend: backend, Server: w.Name,
				Detail: fmt.Sprintf("%s:%d%s check port %d weight %d%s", w.Address, w.Port, sslDetail(w), w.CheckPort, w.Weight, backupWord(w.Backup))})
			continue
		}
		var parts []string
		if c.Address != w.Address || c.Port != w.Port {
			parts = append(parts, fmt.Sprintf("address %s:%d -> %s:%d", c.Address, c.Port, w.Address, w.Port))
		}
		if c.CheckPort != w.CheckPort {
			parts = append(parts, fmt.Sprintf("check port %d -> %d", c.CheckPort, w.CheckPort))
		}
		if c.CheckSSL != w.CheckSSL || c.CAFile != w.CAFile {
			parts = append(parts, fmt.Sprintf("check-ssl %s -> %s", sslWord(c), sslWord(w)))
		}
		if c.Backup != w.Backup {
			parts = append(parts, fmt.Sprintf("backup %t -> %t", c.Backup, w.Backup))
		}
		if len(parts) > 0 {
			if c.Weight != w.Weight {
				parts = append(parts, fmt.Sprintf("weight %d -> %d", c.Weight, w.Weight))
			}
			out = append(out, Change{Kind: KindUpdateServer, Backend: backend, Server: w.Name, Detail: strings.Join(parts, ", ")})
		} else if c.Weight != w.Weight {
			out = append(out, Change{Kind: KindSetWeight, Backend: backend, Server: w.Name,
				Detail: fmt.Sprintf("weight %d -> %d", c.Weight, w.Weight), Runtime: true})
		}
		// The fence: a server HAProxy does not have DOWN. A server in
		// maintenance is left alone, except an active twin (it flips
		// ready in this apply, and leaving maint brings it UP at once:
		// targets force it DOWN again right after the flip).
		// HoldDown: again at every apply (its checks are rising; a forced
		// DOWN resets them), unless current says it was asked for already
		// (desired compared with desired).
		if w.ForceDown && !w.Disabled && (!c.Down || w.HoldDown && !c.HoldDown) && (c.Admin != "maint" || twins) {
			detail := "health UP -> DOWN, sessions cut: the old primary, fenced from writes"
			if w.HoldDown {
				detail = "health DOWN, held: the new leader, not read-write yet"
			}
			out = append(out, Change{Kind: KindForceDown, Backend: backend, Server: w.Name, Detail: detail, Runtime: true, Held: w.HoldDown})
		}
		if w.ForceUp && c.Down {
			out = append(out, Change{Kind: KindForceUp, Backend: backend, Server: w.Name,
				Detail: "health DOWN -> UP: the new primary, per Patroni", Runtime: true})
		}
	}
	var gone []string
	for name := range cur {
		if !seen[name] {
			gone = append(gone, name)
		}
	}
	sort.Strings(gone)
	for _, name := range gone {
		out = append(out, Change{Kind: KindRemoveServer, Backend: backend, Server: name, Detail: "no longer selected"})
	}
	return out
}
func refDiffAdmin(d services.Service, cur map[string]services.Server) []Change {
	var out []Change
	sorted := append([]services.Server(nil), d.Servers...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, w := range sorted {
		c, ok := cur[w.Name]
		if !ok || c.Admin == "" {
			continue
		}
		inactive := c.Admin == "drain" || c.Admin == "maint"
		if inactive == w.Disabled {
			continue
		}
		want := services.AdminWord(d, w)
		out = append(out, Change{Kind: KindSetState, Backend: d.Name, Server: w.Name,
			Detail: fmt.Sprintf("%s -> %s", c.Admin, want), Runtime: true})
	}
	return out
}

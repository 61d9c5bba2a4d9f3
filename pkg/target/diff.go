package target

import (
	"fmt"
	"sort"
	"strings"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// Backend is what an HAProxy currently has for one service name.
type Backend struct {
	Name string
	// HasFrontend is false when only the backend exists.
	HasFrontend bool
	// Settings is nil when the driver did not read them (then they are not compared).
	Settings *Settings
	// Servers by name (Reason is unused).
	Servers map[string]services.Server
}

// Settings are the service-level fields of a frontend+backend pair.
type Settings struct {
	IP            string
	Port          int
	Check         string
	Balance       string
	Maxconn       int
	DefaultServer string
}

// SettingsOf returns the service-level fields of a desired service.
func SettingsOf(s services.Service) Settings {
	return Settings{IP: s.IP, Port: s.Port, Check: s.Check, Balance: s.Balance, Maxconn: s.Maxconn, DefaultServer: s.DefaultServer}
}

// Diff returns the changes that turn current into desired, for the services
// named in desired only (sections the controller does not own are never
// touched). Changes come grouped per service in desired's order, servers by
// name. Pure.
func Diff(current map[string]*Backend, desired []services.Service) []Change {
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
		out = append(out, diffServers(d.Name, cur.Servers, d.Servers, d.Layout == services.LayoutTwins)...)
		if d.Layout == services.LayoutTwins {
			out = append(out, diffAdmin(d, cur.Servers)...)
		}
	}
	return out
}

func diffServers(backend string, cur map[string]services.Server, want []services.Server, twins bool) []Change {
	var out []Change
	sorted, unique := byServerName(want)
	found := 0 // servers of want that cur has
	for _, w := range sorted {
		c, ok := cur[w.Name]
		if ok {
			found++
		}
		if !ok {
			out = append(out, Change{Kind: KindAddServer, Backend: backend, Server: w.Name,
				Detail: fmt.Sprintf("%s:%d%s weight %d%s", w.Address, w.Port, checkDetail(w), w.Weight, backupWord(w.Backup))})
			continue
		}
		var parts []string
		if c.Address != w.Address || c.Port != w.Port {
			parts = append(parts, fmt.Sprintf("address %s:%d -> %s:%d", c.Address, c.Port, w.Address, w.Port))
		}
		if c.Track != w.Track {
			// A tracking server has no check of its own: the track says it.
			parts = append(parts, fmt.Sprintf("%s ->%s", strings.TrimSpace(checkDetail(c)), checkDetail(w)))
		} else {
			if c.CheckPort != w.CheckPort {
				parts = append(parts, fmt.Sprintf("check port %d -> %d", c.CheckPort, w.CheckPort))
			}
			if c.CheckSSL != w.CheckSSL || c.CAFile != w.CAFile {
				parts = append(parts, fmt.Sprintf("check-ssl %s -> %s", sslWord(c), sslWord(w)))
			}
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
	if unique && found == len(cur) {
		return out // cur has no server that want lacks
	}
	seen := make(map[string]bool, len(want))
	for _, w := range want {
		seen[w.Name] = true
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

// byServerName returns servers sorted by name, and whether no name repeats.
// Desired lists come sorted (member order, each member's twins together):
// then they are returned as they are, not copied (every apply diffs 4,000
// services at 1,000 clusters).
func byServerName(servers []services.Server) ([]services.Server, bool) {
	strict := true
	for i := 1; i < len(servers); i++ {
		if servers[i-1].Name >= servers[i].Name {
			strict = false
			break
		}
	}
	if strict {
		return servers, true
	}
	sorted := append([]services.Server(nil), servers...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for i := 1; i < len(sorted); i++ {
		if sorted[i-1].Name == sorted[i].Name {
			return sorted, false
		}
	}
	return sorted, true
}

func sslDetail(s services.Server) string {
	if !s.CheckSSL {
		return ""
	}
	return " check-ssl ca-file " + s.CAFile
}

// checkDetail is how a server is checked: its own check, or the server
// it tracks.
func checkDetail(s services.Server) string {
	if s.Track != "" {
		return " track " + s.Track
	}
	return fmt.Sprintf("%s check port %d", sslDetail(s), s.CheckPort)
}

func sslWord(s services.Server) string {
	if !s.CheckSSL {
		return "off"
	}
	return "ca-file " + s.CAFile
}

func backupWord(b bool) string {
	if b {
		return " backup"
	}
	return ""
}

func settingsDelta(cur, want Settings) string {
	var parts []string
	if cur.IP != want.IP || cur.Port != want.Port {
		parts = append(parts, fmt.Sprintf("bind %s:%d -> %s:%d", cur.IP, cur.Port, want.IP, want.Port))
	}
	if cur.Check != want.Check {
		parts = append(parts, fmt.Sprintf("check %s -> %s", cur.Check, want.Check))
	}
	if cur.Balance != want.Balance {
		parts = append(parts, fmt.Sprintf("balance %s -> %s", cur.Balance, want.Balance))
	}
	if cur.Maxconn != want.Maxconn {
		parts = append(parts, fmt.Sprintf("maxconn %d -> %d", cur.Maxconn, want.Maxconn))
	}
	if cur.DefaultServer != want.DefaultServer {
		parts = append(parts, fmt.Sprintf("default-server %q -> %q", cur.DefaultServer, want.DefaultServer))
	}
	return strings.Join(parts, ", ")
}

// WantsHealth reports whether s has a server whose live health decides a
// change (ForceUp or ForceDown): targets read live health for such
// services only.
func WantsHealth(s services.Service) bool {
	for _, sv := range s.Servers {
		if sv.ForceUp || sv.ForceDown {
			return true
		}
	}
	return false
}

// SplitForce separates the force_down changes, the force_up changes and
// the rest, keeping their order.
func SplitForce(changes []Change) (down, up, rest []Change) {
	for _, c := range changes {
		switch c.Kind {
		case KindForceDown:
			down = append(down, c)
		case KindForceUp:
			up = append(up, c)
		default:
			rest = append(rest, c)
		}
	}
	return down, up, rest
}

// HealthOnly reports whether every change forces a server's health (the
// write fence, a held new leader, a force-up): nothing a config file holds.
func HealthOnly(changes []Change) bool {
	for _, c := range changes {
		if c.Kind != KindForceDown && c.Kind != KindForceUp {
			return false
		}
	}
	return true
}

// RuntimeOnly reports whether every change can be applied without a reload.
func RuntimeOnly(changes []Change) bool {
	for _, c := range changes {
		if !c.Runtime {
			return false
		}
	}
	return len(changes) > 0
}

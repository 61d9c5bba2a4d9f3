package haproxy

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// ParseOwnConfig reads back a config file that haproxycfg.Render wrote: the
// frontend+backend pairs as services, in file order. It understands exactly
// the lines Render writes; other lines are ignored, so a hand edit outside
// those lines is lost at the next write. It is used for the service-level
// settings (bind, check, balance, maxconn, default-server) that `show stat`
// does not show, and to keep sections the current desired set does not name.
func ParseOwnConfig(text string) ([]services.Service, error) {
	var (
		order   []string
		byName  = map[string]*services.Service{}
		section string
		name    string
	)
	get := func(n string) *services.Service {
		s := byName[n]
		if s == nil {
			s = &services.Service{Name: n}
			byName[n] = s
			order = append(order, n)
		}
		return s
	}
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		bad := func(what string) error {
			return fmt.Errorf("line %d (%s %s): %s: %q", i+1, section, name, what, line)
		}
		if raw[0] != ' ' && raw[0] != '\t' {
			section, name = f[0], ""
			if len(f) > 1 {
				name = f[1]
			}
			if section == "frontend" || section == "backend" {
				if name == "" {
					return nil, bad("section without a name")
				}
				get(name)
			}
			continue
		}
		if section != "frontend" && section != "backend" {
			continue
		}
		s := get(name)
		switch {
		case section == "frontend" && f[0] == "bind" && len(f) >= 2:
			host, port, err := net.SplitHostPort(f[1])
			if err != nil {
				return nil, bad("bad bind address")
			}
			if host == "*" {
				host = ""
			}
			s.IP = host
			if s.Port, err = strconv.Atoi(port); err != nil {
				return nil, bad("bad bind port")
			}
			if s.IP == "" {
				s.IP = "*"
			}
		case section == "frontend" && f[0] == "maxconn" && len(f) == 2:
			v, err := strconv.Atoi(f[1])
			if err != nil {
				return nil, bad("bad maxconn")
			}
			s.Maxconn = v
		case section == "backend" && f[0] == "balance" && len(f) >= 2:
			s.Balance = f[1]
		case section == "backend" && len(f) >= 6 && f[0] == "http-check" && f[1] == "send" && f[4] == "uri":
			s.Check = f[5]
		case section == "backend" && f[0] == "default-server":
			s.DefaultServer = strings.Join(f[1:], " ")
		case section == "backend" && f[0] == "server":
			sv, err := parseServerLine(f)
			if err != nil {
				return nil, bad(err.Error())
			}
			s.Servers = append(s.Servers, sv)
		}
	}
	out := make([]services.Service, 0, len(order))
	for _, n := range order {
		out = append(out, *byName[n])
	}
	return out, nil
}

// parseServerLine reads "server NAME ADDR:PORT [check-ssl ca-file F] check port P weight W [backup]"
// or, for a server tracking another, "server NAME ADDR:PORT track BACKEND/SERVER weight W".
func parseServerLine(f []string) (services.Server, error) {
	if len(f) < 3 {
		return services.Server{}, fmt.Errorf("server line too short")
	}
	host, port, err := net.SplitHostPort(f[2])
	if err != nil {
		return services.Server{}, fmt.Errorf("bad server address")
	}
	sv := services.Server{Name: f[1], Address: host, Selected: true}
	if sv.Port, err = strconv.Atoi(port); err != nil {
		return sv, fmt.Errorf("bad server port")
	}
	for i := 3; i < len(f); i++ {
		switch f[i] {
		case "port", "weight":
			if i+1 >= len(f) {
				return sv, fmt.Errorf("%s without a value", f[i])
			}
			v, err := strconv.Atoi(f[i+1])
			if err != nil {
				return sv, fmt.Errorf("bad %s %q", f[i], f[i+1])
			}
			if f[i] == "port" {
				sv.CheckPort = v
			} else {
				sv.Weight = v
			}
			i++
		case "backup":
			sv.Backup = true
			sv.Selected = false
		case "disabled":
			sv.Disabled = true
		case "check-ssl":
			sv.CheckSSL = true
		case "track":
			if i+1 >= len(f) {
				return sv, fmt.Errorf("track without a value")
			}
			sv.Track = f[i+1]
			i++
		case "ca-file":
			if i+1 >= len(f) {
				return sv, fmt.Errorf("ca-file without a value")
			}
			sv.CAFile = f[i+1]
			i++
		}
	}
	return sv, nil
}

// Package haproxycfg renders desired services as HAProxy configuration text:
// a complete haproxy.cfg of frontend+backend pairs that the Data Plane API can
// manage, and Pigsty's `listen` form for comparison with Pigsty's own output.
// Everything here is pure.
package haproxycfg

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// DefaultMaxconn is the global maxconn when Options.Maxconn is 0. Pigsty uses
// 65535, which makes HAProxy refuse to start where the open-file limit is
// lower (20000 on the lab machines); 8000 starts there.
const DefaultMaxconn = 8000

// Options are the global settings of a rendered haproxy.cfg.
type Options struct {
	// StatsSocket is the admin UNIX socket ("" = none). The Data Plane API
	// needs one at level admin for its runtime calls.
	StatsSocket string
	// ServerStateFile enables keeping server states across reloads: HAProxy
	// loads it at start-up so servers don't restart as UP 1/3 INI and take
	// writes they should not ("" = none).
	ServerStateFile string
	// Maxconn is the global maxconn (0 = DefaultMaxconn).
	Maxconn int
	// NoStrictLimits lets HAProxy start with a warning instead of failing
	// when it cannot raise its file limit to what maxconn needs.
	NoStrictLimits bool
}

// Render returns a complete haproxy.cfg serving svcs, in the given order, as
// frontend+backend pairs named after each service (the Data Plane API cannot
// manage `listen` sections). Timeouts follow Pigsty's haproxy template.
func Render(svcs []services.Service, opts Options) []byte {
	head := Head(len(svcs), opts)
	size := len(head)
	for i := range svcs {
		size += sectionSize(&svcs[i])
	}
	out := make([]byte, 0, size)
	out = append(out, head...)
	for i := range svcs {
		out = appendSection(out, &svcs[i])
	}
	return out
}

// Head is the start of a rendered file of n services: the comments, the
// global and the defaults sections (what Render writes before the first
// service).
func Head(n int, opts Options) []byte {
	var b strings.Builder
	maxconn := opts.Maxconn
	if maxconn <= 0 {
		maxconn = DefaultMaxconn
	}
	b.WriteString("# haproxy.cfg rendered by pgsvc (controller render)\n")
	fmt.Fprintf(&b, "# %d services\n\n", n)
	rule(&b, "global settings")
	b.WriteString("global\n")
	fmt.Fprintf(&b, "    maxconn %d\n", maxconn)
	if opts.StatsSocket != "" {
		// expose-fd listeners lets a reload hand listening sockets over
		// without a gap in accepting connections.
		fmt.Fprintf(&b, "    stats socket %s mode 600 level admin expose-fd listeners\n", opts.StatsSocket)
	}
	if opts.ServerStateFile != "" {
		fmt.Fprintf(&b, "    server-state-file %s\n", opts.ServerStateFile)
	}
	if opts.NoStrictLimits {
		b.WriteString("    no strict-limits\n")
	}
	b.WriteString("\n")
	rule(&b, "default settings")
	b.WriteString("defaults\n")
	b.WriteString("    mode tcp\n")
	b.WriteString("    retries 3\n")
	b.WriteString("    timeout queue 3s\n")
	b.WriteString("    timeout connect 3s\n")
	// Database sessions are long-lived: Pigsty's haproxy_client_timeout and
	// haproxy_server_timeout default to 24h.
	b.WriteString("    timeout client 24h\n")
	b.WriteString("    timeout server 24h\n")
	b.WriteString("    timeout check 3s\n")
	if opts.ServerStateFile != "" {
		b.WriteString("    load-server-state-from-file global\n")
	}
	return []byte(b.String())
}

func rule(b *strings.Builder, title string) {
	b.WriteString("#---------------------------------------------------------------------\n")
	fmt.Fprintf(b, "# %s\n", title)
	b.WriteString("#---------------------------------------------------------------------\n")
}

// Header is Pigsty's comment block above a service: where it listens, the
// addresses of the members the selector chose and of the backup servers.
// host is the HAProxy node's address as Pigsty prints it; "" uses the bind
// address.
func Header(s services.Service, host string) string {
	if host == "" {
		host = s.IP
	}
	var inst, backups []string
	for _, sv := range s.Servers {
		if sv.Selected {
			inst = append(inst, sv.Address)
		}
		if sv.Backup && s.BackupAddrs == nil {
			backups = append(backups, sv.Address)
		}
	}
	if s.BackupAddrs != nil {
		backups = s.BackupAddrs
	}
	var b strings.Builder
	b.WriteString("#---------------------------------------------------------------------\n")
	fmt.Fprintf(&b, "# service: %s @ %s:%d\n", s.Name, host, s.Port)
	b.WriteString("#---------------------------------------------------------------------\n")
	b.WriteString(strings.TrimRight("# service instances "+strings.Join(inst, ", "), " ") + "\n")
	b.WriteString(strings.TrimRight("# service backups   "+strings.Join(backups, ", "), " ") + "\n")
	return b.String()
}

// Bind returns the bind address of a service: "*:5433", "127.0.0.10:5433".
func Bind(s services.Service) string {
	ip := s.IP
	if ip == "" {
		ip = "*"
	}
	if strings.Contains(ip, ":") && !strings.HasPrefix(ip, "[") {
		ip = "[" + ip + "]" // IPv6 needs brackets to keep the port apart
	}
	return ip + ":" + strconv.Itoa(s.Port)
}

// checks writes the balance, health-check and default-server lines shared by
// the backend and the listen forms.
func checks(b *strings.Builder, s services.Service) {
	fmt.Fprintf(b, "    balance %s\n", orDefault(s.Balance, "roundrobin"))
	b.WriteString("    option httpchk\n")
	b.WriteString("    option http-keep-alive\n")
	fmt.Fprintf(b, "    http-check send meth OPTIONS uri %s\n", orDefault(s.Check, "/"))
	b.WriteString("    http-check expect status 200\n")
	fmt.Fprintf(b, "    default-server %s\n", orDefault(s.DefaultServer, services.DefaultServerOptions))
}

// ServerLine is one server as HAProxy reads it, without indentation:
// "server pg-test-1 10.10.10.11:6432 check port 8008 weight 100 backup", with
// "check-ssl ca-file FILE" before "check" when Patroni speaks TLS (as
// Pigsty's template writes it), and "track B/S" instead of its own check
// for a tracking server (Server.Track).
func ServerLine(sv services.Server) string {
	addr := sv.Address
	if strings.Contains(addr, ":") && !strings.HasPrefix(addr, "[") {
		addr = "[" + addr + "]"
	}
	var check string
	if sv.Track != "" {
		check = " track " + sv.Track
	} else {
		if sv.CheckSSL {
			check = " check-ssl"
			if sv.CAFile != "" {
				check += " ca-file " + sv.CAFile
			}
		}
		check += fmt.Sprintf(" check port %d", sv.CheckPort)
	}
	l := fmt.Sprintf("server %s %s:%d%s weight %d", sv.Name, addr, sv.Port, check, sv.Weight)
	if sv.Backup {
		l += " backup"
	}
	if sv.Disabled {
		l += " disabled"
	}
	return l
}

// RenderListen returns the service in Pigsty's `listen` form, exactly as the
// Pigsty documentation shows it (without the comment header: see Header).
// HAProxy accepts it, but the Data Plane API cannot manage it; use Render for
// configs the controller maintains.
func RenderListen(s services.Service) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen %s\n", s.Name)
	fmt.Fprintf(&b, "    bind %s\n", Bind(s))
	b.WriteString("    mode tcp\n")
	fmt.Fprintf(&b, "    maxconn %d\n", s.Maxconn)
	checks(&b, s)
	b.WriteString("    # servers\n")
	for _, sv := range s.Servers {
		fmt.Fprintf(&b, "    %s\n", ServerLine(sv))
	}
	return b.String()
}

// Check reports services that cannot share one HAProxy: duplicate section
// names and two services bound to the same port (a "*" bind collides with
// every address on that port).
func Check(svcs []services.Service) error {
	// Every name, address, port and option word first: nothing unvalidated
	// is ever written into a config.
	if err := services.Validate(svcs); err != nil {
		return err
	}
	names := map[string]bool{}
	type bind struct {
		ip   string
		name string
	}
	ports := map[int][]bind{}
	var problems []string
	for _, s := range svcs {
		if names[s.Name] {
			problems = append(problems, fmt.Sprintf("service %s: defined twice", s.Name))
		}
		names[s.Name] = true
		ip := orDefault(s.IP, "*")
		for _, o := range ports[s.Port] {
			if o.ip == ip || o.ip == "*" || ip == "*" {
				problems = append(problems, fmt.Sprintf("service %s: bind %s collides with service %s (%s:%d)", s.Name, Bind(s), o.name, o.ip, s.Port))
				break
			}
		}
		ports[s.Port] = append(ports[s.Port], bind{ip, s.Name})
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("services cannot share one haproxy: %s", strings.Join(problems, "; "))
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

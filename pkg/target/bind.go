package target

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// BindProblem tries, for an instant, to listen where service s binds, on
// this machine. A reload whose new frontend cannot bind fails as a whole and
// HAProxy's master does not say which one; this names it. Only "address in
// use" and "address not available" count (anything else, e.g. a privileged
// port the controller's user may not bind but HAProxy may, is left to the
// reload): it returns "cluster C, service S: bind ADDR cannot listen: ...",
// or "" when s can bind.
func BindProblem(s services.Service) string {
	ip := s.IP
	if ip == "" || ip == "*" {
		ip = "0.0.0.0"
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(s.Port))
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		return ""
	}
	if errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL) {
		return fmt.Sprintf("cluster %s, service %s: bind %s cannot listen: %v", s.Cluster, s.Name, addr, err)
	}
	return ""
}

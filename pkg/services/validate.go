package services

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/pgsvc/pgsvc/pkg/haproxyname"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// ErrSelectorShape matches (errors.Is) a selector that returned something
// other than a list of the cluster's members: wrong whatever the data, so
// inventories with one are rejected at load. Evaluation errors (a function
// given a null live field) depend on the data and are not.
var ErrSelectorShape = errors.New("selector does not return a list of members")

type shapeError struct{ error }

func (e shapeError) Is(target error) bool { return target == ErrSelectorShape }
func (e shapeError) Unwrap() error        { return e.error }

// Validate is the last check before services reach HAProxy: every section
// and server name an HAProxy identifier, every address an IP or host name,
// every port 1-65535, every word of the health check, balance and
// default-server line a known, plain token, and no section or server twice.
// Renderers and both drivers call it before writing anything, whatever
// checked the input before (inventory load, DCS decode).
func Validate(svcs []Service) error {
	var errs []error
	names := make(map[string]bool, len(svcs))
	for i := range svcs {
		s := &svcs[i]
		if err := ValidateService(s); err != nil {
			errs = append(errs, err)
			continue
		}
		if names[s.Name] {
			errs = append(errs, fmt.Errorf("%s: defined twice (one section name for two services)", describeService(s)))
		}
		names[s.Name] = true
	}
	return errors.Join(errs...)
}

// ValidateService checks one service and its servers (see Validate).
func ValidateService(s *Service) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s: %s", describeService(s), fmt.Sprintf(format, a...))
	}
	if err := haproxyname.Identifier(s.Name); err != nil {
		return bad("section %v", err)
	}
	if err := haproxyname.BindAddress(s.IP); err != nil {
		return bad("%v", err)
	}
	if err := haproxyname.Port(s.Port); err != nil {
		return bad("bind %v", err)
	}
	if s.Check != "" {
		if err := haproxyname.Word(s.Check); err != nil || !strings.HasPrefix(s.Check, "/") {
			return bad("health check %q: want a path such as /primary", s.Check)
		}
	}
	if s.Balance != "" {
		if err := haproxyname.Word(s.Balance); err != nil {
			return bad("balance: %v", err)
		}
	}
	if s.Maxconn < 0 {
		return bad("maxconn %d is negative", s.Maxconn)
	}
	if s.Maxconn > topology.MaxMaxconn {
		return bad("maxconn %d is above %d (HAProxy reads it into a C int)", s.Maxconn, topology.MaxMaxconn)
	}
	if err := serverOptions(s.DefaultServer); err != nil {
		return bad("%v", err)
	}
	for j := range s.Servers {
		if err := ValidateServer(&s.Servers[j]); err != nil {
			return bad("%v", err)
		}
		// A service has a handful of servers: a scan allocates nothing
		// (every apply validates 4,000 services at 1,000 clusters).
		for k := 0; k < j; k++ {
			if s.Servers[k].Name == s.Servers[j].Name {
				return bad("server %s listed twice", s.Servers[j].Name)
			}
		}
	}
	return nil
}

// goodOptions remembers default-server lines found valid: a fleet has a few
// distinct ones, and every apply validates each of its services' line
// (splitting it into words allocates). Bounded; only valid lines are kept.
var goodOptions = struct {
	sync.Mutex
	lines map[string]struct{}
}{lines: map[string]struct{}{}}

const maxGoodOptions = 256

// serverOptions is haproxyname.ServerOptions, remembered for valid lines.
func serverOptions(line string) error {
	goodOptions.Lock()
	_, ok := goodOptions.lines[line]
	goodOptions.Unlock()
	if ok {
		return nil
	}
	if err := haproxyname.ServerOptions(line); err != nil {
		return err
	}
	goodOptions.Lock()
	if len(goodOptions.lines) < maxGoodOptions {
		goodOptions.lines[line] = struct{}{}
	}
	goodOptions.Unlock()
	return nil
}

// ValidateServer checks one server line: an identifier, an address, a port,
// a health-check port, a CA file of one word and a weight HAProxy accepts
// (0-256).
func ValidateServer(sv *Server) error {
	if err := haproxyname.Identifier(sv.Name); err != nil {
		return fmt.Errorf("server %v", err)
	}
	if err := haproxyname.Address(sv.Address); err != nil {
		return fmt.Errorf("server %s: %v", sv.Name, err)
	}
	if err := haproxyname.Port(sv.Port); err != nil {
		return fmt.Errorf("server %s: %v", sv.Name, err)
	}
	if sv.CheckPort != 0 {
		if err := haproxyname.Port(sv.CheckPort); err != nil {
			return fmt.Errorf("server %s: check %v", sv.Name, err)
		}
	}
	if sv.CAFile != "" {
		// Written as `ca-file <path>` on the server line.
		if err := haproxyname.Word(sv.CAFile); err != nil {
			return fmt.Errorf("server %s: ca-file %v", sv.Name, err)
		}
	}
	if sv.Track != "" {
		b, srv, ok := strings.Cut(sv.Track, "/")
		if !ok || haproxyname.Identifier(b) != nil || haproxyname.Identifier(srv) != nil {
			return fmt.Errorf("server %s: track %q is not backend/server", sv.Name, sv.Track)
		}
	}
	if sv.Weight < 0 || sv.Weight > 256 {
		return fmt.Errorf("server %s: weight %d out of range (0-256)", sv.Name, sv.Weight)
	}
	return nil
}

func describeService(s *Service) string {
	name := s.Name
	if err := haproxyname.Identifier(name); err != nil {
		name = fmt.Sprintf("%q", name)
		if len(name) > 90 {
			name = name[:90] + "...\""
		}
	}
	if s.Cluster != "" {
		return "cluster " + s.Cluster + ": service " + name
	}
	return "service " + name
}

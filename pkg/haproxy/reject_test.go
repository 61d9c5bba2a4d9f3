package haproxy

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

func TestNameSections(t *testing.T) {
	cfg := []byte("global\n    maxconn 10\ndefaults\n    mode tcp\nfrontend pg-x-primary\n    bind 127.0.0.1:5433\n    default_backend pg-x-primary\n\nbackend pg-x-primary\n    server a 127.0.0.1:5432 bogus 1\n")
	err := errors.New(`new config rejected by haproxy -c (nothing changed): exit status 1: [ALERT]    (1) : config : parsing [/tmp/.haproxy.cfg.123.tmp:10] : 'server a' unknown keyword 'bogus'.`)
	got := nameSections(err, cfg).Error()
	if !strings.HasSuffix(got, "(in backend pg-x-primary)") {
		t.Errorf("got %q, want the section named", got)
	}
	if !errors.Is(nameSections(err, cfg), err) {
		t.Error("the original error is not wrapped")
	}
	if nameSections(errors.New("no line"), cfg).Error() != "no line" {
		t.Error("an error without a line changed")
	}
}

func TestProbeBinds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port
	svc := services.Service{Cluster: "pg-x", Name: "pg-x-primary", IP: "127.0.0.1", Port: taken}
	err = probeBinds([]services.Service{svc}, map[string]*target.Backend{})
	if err == nil || !strings.Contains(err.Error(), "cluster pg-x, service pg-x-primary") {
		t.Fatalf("probe of a taken address: %v", err)
	}
	// HAProxy itself holds it (same bind in the running config): not probed.
	st := target.SettingsOf(svc)
	cur := map[string]*target.Backend{"pg-x-primary": {Name: "pg-x-primary", HasFrontend: true, Settings: &st}}
	if err := probeBinds([]services.Service{svc}, cur); err != nil {
		t.Errorf("an address the running HAProxy holds was probed: %v", err)
	}
	free := services.Service{Cluster: "pg-x", Name: "pg-x-replica", IP: "127.0.0.1", Port: freeTCPPort(t)}
	if err := probeBinds([]services.Service{free}, map[string]*target.Backend{}); err != nil {
		t.Errorf("a free address: %v", err)
	}
}

func freeTCPPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

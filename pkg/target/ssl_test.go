package target

import (
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// TestDiffCheckSSL: turning Patroni TLS on (patroni_ssl_enabled) changes how
// every server is checked: an update_server (reload), never runtime-only.
func TestDiffCheckSSL(t *testing.T) {
	plain := services.Server{Name: "pg-test-1", Address: "10.0.0.1", Port: 5432, CheckPort: 8008, Weight: 100}
	tls := plain
	tls.CheckSSL, tls.CAFile = true, "/pg/cert/ca.crt"
	cur := map[string]*Backend{"pg-test-primary": {Name: "pg-test-primary", HasFrontend: true,
		Servers: map[string]services.Server{"pg-test-1": plain}}}
	want := []services.Service{{Name: "pg-test-primary", Servers: []services.Server{tls}}}
	changes := diffServers("pg-test-primary", cur["pg-test-primary"].Servers, want[0].Servers, false)
	if len(changes) != 1 || changes[0].Kind != KindUpdateServer || changes[0].Detail != "check-ssl off -> ca-file /pg/cert/ca.crt" || changes[0].Runtime {
		t.Fatalf("changes %+v, want one update_server turning check-ssl on", changes)
	}
	if got := diffServers("b", map[string]services.Server{"pg-test-1": tls}, []services.Server{tls}, false); len(got) != 0 {
		t.Errorf("same TLS check: changes %+v, want none", got)
	}
	add := diffServers("b", nil, []services.Server{tls}, false)
	if len(add) != 1 || add[0].Detail != "10.0.0.1:5432 check-ssl ca-file /pg/cert/ca.crt check port 8008 weight 100" {
		t.Errorf("add %+v", add)
	}
}

// TestDiffTrack: a server that starts (or stops) tracking another changes
// how it is checked: an update_server (the file), never runtime-only.
func TestDiffTrack(t *testing.T) {
	plain := services.Server{Name: "pg-test-1", Address: "10.0.0.1", Port: 5432, CheckPort: 8008, Weight: 100}
	tracker := plain
	tracker.CheckPort, tracker.Track = 0, "pg-test-primary/pg-test-1"
	changes := diffServers("pg-test-default", map[string]services.Server{"pg-test-1": plain}, []services.Server{tracker}, false)
	if len(changes) != 1 || changes[0].Kind != KindUpdateServer || changes[0].Detail != "check port 8008 -> track pg-test-primary/pg-test-1" || changes[0].Runtime {
		t.Fatalf("changes %+v, want one update_server to a tracker", changes)
	}
	back := diffServers("pg-test-default", map[string]services.Server{"pg-test-1": tracker}, []services.Server{plain}, false)
	if len(back) != 1 || back[0].Kind != KindUpdateServer || back[0].Detail != "track pg-test-primary/pg-test-1 -> check port 8008" {
		t.Fatalf("changes %+v, want one update_server to a checking server", back)
	}
	if got := diffServers("b", map[string]services.Server{"pg-test-1": tracker}, []services.Server{tracker}, false); len(got) != 0 {
		t.Errorf("same tracker: changes %+v, want none", got)
	}
	add := diffServers("b", nil, []services.Server{tracker}, false)
	if len(add) != 1 || add[0].Detail != "10.0.0.1:5432 track pg-test-primary/pg-test-1 weight 100" {
		t.Errorf("add %+v", add)
	}
}

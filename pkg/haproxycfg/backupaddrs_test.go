package haproxycfg

import (
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// TestHeaderBackupAddrs: the "# service backups" comment lists
// Service.BackupAddrs (the backup selector's order, as Pigsty's template
// prints it) when set, in Header and in Render alike; the backup servers
// otherwise.
func TestHeaderBackupAddrs(t *testing.T) {
	s := services.Service{Name: "pg-test-x", Service: "x", IP: "*", Port: 5440, Check: "/", Dest: "postgres", DestPort: 5432,
		Balance: "roundrobin", Maxconn: 5000, DefaultServer: services.DefaultServerOptions,
		Servers: []services.Server{
			{Name: "pg-test-3", Address: "10.10.10.13", Port: 5432, CheckPort: 8008, Weight: 100, Selected: true, Backup: true},
			{Name: "pg-test-2", Address: "10.10.10.12", Port: 5432, CheckPort: 8008, Weight: 100, Selected: true, Backup: true},
			{Name: "pg-test-1", Address: "10.10.10.11", Port: 5432, CheckPort: 8008, Weight: 100, Backup: true},
		}}
	const servers = "# service backups   10.10.10.13, 10.10.10.12, 10.10.10.11\n"
	if h := Header(s, ""); !strings.Contains(h, servers) {
		t.Errorf("Header without BackupAddrs:\n%s", h)
	}
	s.BackupAddrs = []string{"10.10.10.12", "10.10.10.11", "10.10.10.13"}
	const want = "# service backups   10.10.10.12, 10.10.10.11, 10.10.10.13\n"
	if h := Header(s, ""); !strings.Contains(h, want) {
		t.Errorf("Header with BackupAddrs:\n%s", h)
	}
	if r := string(Render([]services.Service{s}, Options{})); !strings.Contains(r, want) {
		t.Errorf("Render with BackupAddrs:\n%s", r)
	}
	s.BackupAddrs = []string{}
	if h := Header(s, ""); !strings.Contains(h, "# service backups\n") {
		t.Errorf("Header with empty BackupAddrs:\n%s", h)
	}
}

package dataplaneapi

import (
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// TestServerModelCheckSSL: patroni_ssl_enabled becomes the API's check-ssl
// and ssl_cafile (which it writes as "check-ssl ca-file FILE"), and reads back.
func TestServerModelCheckSSL(t *testing.T) {
	want := services.Server{Name: "pg-test-1", Address: "10.0.0.1", Port: 6432, CheckPort: 8008, Weight: 100,
		CheckSSL: true, CAFile: "/pg/cert/ca.crt"}
	m := serverModel(want, nil)
	if m.CheckSsl != "enabled" || m.SslCafile != "/pg/cert/ca.crt" {
		t.Fatalf("model check-ssl %q ca %q", m.CheckSsl, m.SslCafile)
	}
	if got := recOf(m).view(100); got.CheckSSL != true || got.CAFile != want.CAFile {
		t.Errorf("read back %+v", got)
	}
	plain := want
	plain.CheckSSL, plain.CAFile = false, ""
	m = serverModel(plain, m)
	if m.CheckSsl != "" || m.SslCafile != "" {
		t.Errorf("turning TLS off left check-ssl %q ca %q", m.CheckSsl, m.SslCafile)
	}
}

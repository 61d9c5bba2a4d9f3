package haproxy

import (
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// TestServerLineSSLRoundTrip: the direct driver reads back how its own file
// checks a server (the runtime does not show check-ssl).
func TestServerLineSSLRoundTrip(t *testing.T) {
	sv := services.Server{Name: "pg-test-1", Address: "10.0.0.1", Port: 6432, CheckPort: 8008, Weight: 100, Backup: true,
		CheckSSL: true, CAFile: "/pg/cert/ca.crt"}
	line := haproxycfg.ServerLine(sv)
	if line != "server pg-test-1 10.0.0.1:6432 check-ssl ca-file /pg/cert/ca.crt check port 8008 weight 100 backup" {
		t.Fatalf("line %q", line)
	}
	got, err := parseServerLine(strings.Fields(line))
	if err != nil {
		t.Fatal(err)
	}
	if !got.CheckSSL || got.CAFile != sv.CAFile || got.CheckPort != 8008 || !got.Backup || got.Weight != 100 {
		t.Errorf("parsed %+v", got)
	}
	if _, err := parseServerLine(strings.Fields("server a 10.0.0.1:1 check-ssl ca-file")); err == nil {
		t.Error("ca-file without a value accepted")
	}
}

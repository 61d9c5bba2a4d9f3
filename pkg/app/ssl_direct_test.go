package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/haproxy"
	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// sslInventory is pg-test with patroni_ssl_enabled on 127.0.1.41-44, its
// services on 127.0.1.40. pg-test-3 and pg-test-4 are the members whose REST
// API must fail a TLS check (plain HTTP; a certificate from another CA).
const sslInventory = `
all:
  children:
    pg-test:
      hosts:
        127.0.1.41: { pg_seq: 1, pg_role: primary }
        127.0.1.42: { pg_seq: 2, pg_role: replica }
        127.0.1.43: { pg_seq: 3, pg_role: replica }
        127.0.1.44: { pg_seq: 4, pg_role: replica }
      vars:
        pg_cluster: pg-test
        patroni_ssl_enabled: true
        pg_port: %d
        pgbouncer_port: %d
        patroni_port: %d
        pg_default_services:
          - { name: primary, port: %d, ip: 127.0.1.40, dest: default, check: /primary, selector: "[]", options: "%s" }
          - { name: replica, port: %d, ip: 127.0.1.40, dest: default, check: /read-only, selector: "[]", backup: "[? pg_role == ` + "`primary`" + ` ]", options: "%s" }
`

var sslHosts = []string{"127.0.1.41", "127.0.1.42", "127.0.1.43", "127.0.1.44"}

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// serverCert issues a server certificate for the given IP addresses.
func (ca *testCA) serverCert(t *testing.T, ips ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "patroni"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}
}

// startRESTMember is startFakeMember with the REST API served by handler,
// over TLS with cert unless cert is nil (plain HTTP).
func startRESTMember(t *testing.T, name, addr string, pgPort, bouncerPort, restPort int, handler http.Handler, cert *tls.Certificate) {
	t.Helper()
	rest := listen(t, fmt.Sprintf("%s:%d", addr, restPort))
	if cert != nil {
		rest = tls.NewListener(rest, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
	}
	// HAProxy's failing TLS checks would fill the log with handshake errors.
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.Serve(rest) }()
	t.Cleanup(func() { srv.Close() })
	for _, p := range []int{pgPort, bouncerPort} {
		ln := listen(t, fmt.Sprintf("%s:%d", addr, p))
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte(name + "\n"))
				c.Close()
			}
		}()
	}
}

// TestPatroniSSLCheckThroughHAProxy (issue 8 item 4): with
// patroni_ssl_enabled in the inventory, a real HAProxy 2.6 driven by the
// direct driver through real etcd checks Patroni's REST API over TLS
// against the CA file: the leader behind a certificate of that CA goes UP
// by its check (L7OK), a TLS replica answers 503 (L7STS), and members that
// answer 200 to every check but over plain HTTP or with a certificate of
// another CA fail at the TLS layer (L6) and stay DOWN. A switchover written
// into etcd moves the primary service, again by the TLS check.
func TestPatroniSSLCheckThroughHAProxy(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not installed: this test runs in CI, where .ci/run installs Debian's haproxy 2.6")
	}
	dir := t.TempDir()
	ca, rogue := newTestCA(t, "pgsvc test CA"), newTestCA(t, "another CA")
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	// Machines running tests have no /pg/cert/ca.crt: point the inventory's
	// CA at the throwaway one (pkg/app tests do not run in parallel).
	old := topology.PatroniCAFile
	topology.PatroniCAFile = caFile
	t.Cleanup(func() { topology.PatroniCAFile = old })

	good, bad := ca.serverCert(t, sslHosts...), rogue.serverCert(t, sslHosts...)
	always200 := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	pgPort, bouncerPort, restPort := freePort(t), freePort(t), freePort(t)
	primaryPort, replicaPort := freePort(t), freePort(t)
	m1 := &fakeMember{name: "pg-test-1", role: "primary"}
	m2 := &fakeMember{name: "pg-test-2", role: "replica"}
	startRESTMember(t, "pg-test-1", sslHosts[0], pgPort, bouncerPort, restPort, m1, &good)
	startRESTMember(t, "pg-test-2", sslHosts[1], pgPort, bouncerPort, restPort, m2, &good)
	startRESTMember(t, "pg-test-3", sslHosts[2], pgPort, bouncerPort, restPort, always200, nil)
	startRESTMember(t, "pg-test-4", sslHosts[3], pgPort, bouncerPort, restPort, always200, &bad)

	// The stand-ins are what they claim: TLS with the CA, plain, other CA.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	probe := func(scheme, host, path string) (int, error) {
		req, _ := http.NewRequest(http.MethodOptions, fmt.Sprintf("%s://%s:%d%s", scheme, host, restPort, path), nil)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := probe("https", sslHosts[0], "/primary"); err != nil || code != 200 {
		t.Fatalf("TLS stand-in pg-test-1 OPTIONS /primary: %d %v", code, err)
	}
	if code, err := probe("https", sslHosts[1], "/primary"); err != nil || code != 503 {
		t.Fatalf("TLS stand-in pg-test-2 OPTIONS /primary: %d %v", code, err)
	}
	if code, err := probe("http", sslHosts[2], "/primary"); err != nil || code != 200 {
		t.Fatalf("plain stand-in pg-test-3 OPTIONS /primary: %d %v", code, err)
	}
	if _, err := probe("https", sslHosts[3], "/primary"); err == nil {
		t.Fatal("pg-test-4's certificate of another CA verified against the test CA")
	}

	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	etcdtest.PutPatroni(t, cli, "pg-test", sslHosts, "pg-test-1", 1)

	text := fmt.Sprintf(sslInventory, pgPort, bouncerPort, restPort, primaryPort, fastChecks, replicaPort, fastChecks)
	inv, d, rt := startDirectHAProxy(t, dir, bin, text, 20*time.Second)

	cfg := &config.Config{Inventory: inv, Listen: "127.0.0.1:0", Etcd: config.Etcd{Endpoints: []string{srv.ClientURL}}, Direct: []config.Direct{d}}
	cfg.Controller.Debounce.Duration = 5 * time.Millisecond
	addr := startServe(t, cfg)
	// live returns "name:UP/DOWN:check_status" per server of one backend.
	live := func(backend string) string {
		rows, err := rt.ShowStat(context.Background())
		if err != nil {
			return "error: " + err.Error()
		}
		var out []string
		for _, r := range rows {
			if r.Proxy == backend && r.Type == haproxy.TypeServer {
				state := "DOWN"
				if r.Up() {
					state = "UP"
				}
				cs := r.CheckStatus
				if strings.HasPrefix(cs, "L6") {
					cs = "L6" // L6RSP or L6TOUT: the TLS handshake failed
				}
				out = append(out, fmt.Sprintf("%s:%s:%s", r.Name, state, cs))
			}
		}
		return strings.Join(out, ",")
	}
	defer func() {
		if t.Failed() {
			t.Logf("live primary: %s", live("pg-test-primary"))
			t.Logf("live replica: %s", live("pg-test-replica"))
			rows, _ := rt.ShowStat(context.Background())
			for _, r := range rows {
				if r.Type == haproxy.TypeServer {
					t.Logf("%s/%s %s %s %q", r.Proxy, r.Name, r.Status, r.CheckStatus, r.CheckDesc)
				}
			}
		}
	}()

	const wantPrimary = "pg-test-1:UP:L7OK,pg-test-2:DOWN:L7STS,pg-test-3:DOWN:L6,pg-test-4:DOWN:L6"
	eventually(t, "primary service: the leader UP by its TLS check, the others DOWN", func() bool {
		return live("pg-test-primary") == wantPrimary
	})
	eventually(t, "replica service: TLS members UP, plain and other-CA members DOWN", func() bool {
		return live("pg-test-replica") == "pg-test-1:UP:L7OK,pg-test-2:UP:L7OK,pg-test-3:DOWN:L6,pg-test-4:DOWN:L6"
	})
	if rows, err := rt.ShowStat(context.Background()); err == nil {
		for _, r := range rows {
			if r.Proxy == "pg-test-primary" && r.Type == haproxy.TypeServer {
				t.Logf("%s: %s %s %q", r.Name, r.Status, r.CheckStatus, r.CheckDesc)
			}
		}
	}
	primary := fmt.Sprintf("127.0.1.40:%d", primaryPort)
	eventually(t, "writes reach pg-test-1", func() bool { return whoAnswers(primary) == "pg-test-1" })
	eventually(t, "target in sync", func() bool { return getStatus(t, addr).Ready })

	// The file the driver wrote checks over TLS with the CA, and HAProxy accepts it.
	conf, err := os.ReadFile(d.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range sslHosts {
		want := fmt.Sprintf("server pg-test-%d %s:%d check-ssl ca-file %s check port %d ", i+1, h, bouncerPort, caFile, restPort)
		if !strings.Contains(string(conf), want) {
			t.Errorf("rendered file lacks %q:\n%s", want, conf)
		}
	}
	if out, err := exec.Command(bin, "-c", "-f", d.ConfigPath).CombinedOutput(); err != nil {
		t.Errorf("haproxy -c on the rendered file: %v\n%s", err, out)
	}
	state, err := rt.ShowServersState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(state, "pg-test-primary") {
		t.Errorf("show servers state lacks the primary backend:\n%s", state)
	}

	// The controller's transition prober, given the CA (patroni_ca_file),
	// reaches the same TLS REST APIs over https and rejects the others.
	prober, warn := patroni.NewProber(patroni.ProberOptions{CAFile: caFile, Timeout: 2 * time.Second})
	if warn != "" {
		t.Errorf("prober with the test CA: %s", warn)
	}
	for i, want := range []int{200, 503, 0, 0} {
		apiURL := fmt.Sprintf("https://%s:%d/patroni", sslHosts[i], restPort)
		if r := prober.Probe(context.Background(), apiURL); r.Code != want || (want == 0) != (r.Err != "") {
			t.Errorf("prober %s: code %d error %q, want code %d", apiURL, r.Code, r.Err, want)
		}
	}

	// Switchover pg-test-1 -> pg-test-2, as Patroni does it. The controller
	// may force the new leader UP for its promote window; the check status
	// (L7OK, L7STS) is HAProxy's own TLS check.
	m1.setRole("replica")
	m2.setRole("primary")
	etcdtest.PutPatroni(t, cli, "pg-test", sslHosts, "pg-test-2", 2)
	eventually(t, "primary service follows the switchover by the TLS check", func() bool {
		return live("pg-test-primary") == "pg-test-1:DOWN:L7STS,pg-test-2:UP:L7OK,pg-test-3:DOWN:L6,pg-test-4:DOWN:L6"
	})
	eventually(t, "writes reach pg-test-2", func() bool { return whoAnswers(primary) == "pg-test-2" })
}

package dataplaneapi

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/haproxytech/client-native/v5/models"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/internal/cfgtext"
	"github.com/pgsvc/pgsvc/pkg/services"
)

func TestParseSnapshot(t *testing.T) {
	b, err := os.ReadFile("testdata/raw/canonical.cfg")
	if err != nil {
		t.Fatal(err)
	}
	sn := parseSnapshot(string(b)+`
backend hand-made
  mode tcp
  balance leastconn
  option httpchk GET /health
  http-check expect ! status 500
  default-server inter 2s weight 50 init-addr last,none
  server s1 10.0.0.1:5432 check cookie s1 weight 10 backup
  server s2 10.0.0.2:5432 check port 8008
`, 7)
	if !sn.statePreserved || sn.version != 7 {
		t.Fatalf("statePreserved %v version %d", sn.statePreserved, sn.version)
	}
	fe, bind := sn.fe["pg-test-primary"].toModel(), sn.bind["pg-test-primary"].toModel()
	if fe == nil || fe.Mode != "tcp" || fe.Maxconn == nil || *fe.Maxconn != 5000 || fe.DefaultBackend != "pg-test-primary" || fe.From != "unnamed_defaults_1" {
		t.Fatalf("frontend %+v", fe)
	}
	if bind == nil || bind.Name != "pg-test-primary" || bind.Address != "127.0.0.10" || bind.Port == nil || *bind.Port != 5433 {
		t.Fatalf("bind %+v", bind)
	}
	be := sn.be["pg-test-primary"].toModel()
	if be == nil || be.AdvCheck != "httpchk" || be.HTTPConnectionMode != "http-keep-alive" || *be.Balance.Algorithm != "roundrobin" {
		t.Fatalf("backend %+v", be)
	}
	if got := checkOf(be.AdvCheck, sn.checks["pg-test-primary"]); got != "/primary" {
		t.Fatalf("check %q", got)
	}
	s := sn.model("pg-test-primary", "pg-test-2")
	if s == nil || s.Address != "127.0.0.12" || *s.Port != 6432 || *s.HealthCheckPort != 8008 || *s.Weight != 100 || s.Check != "enabled" {
		t.Fatalf("server %+v", s)
	}
	if len(sn.partial) != 1 || !sn.partial["hand-made/s1"] {
		t.Fatalf("partial %v: want only hand-made/s1 (cookie is not a known option)", sn.partial)
	}
	s1 := sn.model("hand-made", "s1")
	if s1 == nil || *s1.Weight != 10 || s1.Backup != "enabled" {
		t.Fatalf("known options of a partial server not read: %+v", s1)
	}
	if got := checkOf("httpchk", sn.checks["hand-made"]); got == "/health" || got == "" {
		t.Fatalf("hand-made check %q must not look like the controller's", got)
	}
	if ds := sn.be["hand-made"].ds; ds == nil || *ds.Weight != 50 || *ds.Inter != 2000 {
		t.Fatalf("default-server %+v", ds)
	}
	if noState := parseSnapshot("global\n  daemon\ndefaults\n  mode tcp\n", 1); noState.statePreserved {
		t.Fatal("state preserved without a state file")
	}
}

// TestServerRecordsAreTheModels: the compact server records a snapshot keeps
// give the diff the same view, and writes the same base, as the whole
// parsed models did; a record of a model the controller wrote rebuilds
// that model.
func TestServerRecordsAreTheModels(t *testing.T) {
	var text string
	for _, f := range []string{"testdata/raw/canonical.cfg"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text += string(b)
	}
	text += `
backend hand-made
  default-server inter 2s weight 50
  server s1 10.0.0.1:5432 check cookie s1 weight 10 backup
  server s2 10.0.0.2:5432 check port 8008 check-ssl ca-file /etc/pki/ca.crt
  server s3 10.0.0.3 no-check port 8008 weight 0 disabled
  server s4 [::1]:6432 check port 8008 no-backup maxconn 30 slowstart 30s
`
	sn := parseSnapshot(text, 1)
	n := 0
	for be, recs := range sn.servers {
		for name, r := range recs {
			n++
			m, _ := cfgtext.ParseServerLine(strings.Fields(name + " " + cfgtext.JoinHostPort(r.address, r.port) + " " + r.opts))
			m.Port = nil
			if r.port != 0 {
				m.Port = &r.port
			}
			got := r.toModel()
			if !reflect.DeepEqual(*got, m) && !sn.partial[be+"/"+name] {
				t.Errorf("%s/%s: model %+v, parsed line %+v", be, name, *got, m)
			}
			for _, dw := range []int{100, 50, 0} {
				if v, want := r.view(dw), serverOf(got, dw); !reflect.DeepEqual(v, want) {
					t.Errorf("%s/%s (default weight %d): view %+v, the model's %+v", be, name, dw, v, want)
				}
			}
			back := recOf(got).toModel()
			if !reflect.DeepEqual(back, got) {
				t.Errorf("%s/%s: record of the model rebuilds %+v, want %+v", be, name, *back, *got)
			}
		}
	}
	if n < 5 {
		t.Fatalf("%d servers read", n)
	}
}

// TestDefaultServerMemo: a default-server text is parsed once per memo
// (strict for the inventory's, lenient for a file's), its error is kept with
// it, and the memo stays bounded.
func TestDefaultServerMemo(t *testing.T) {
	m := &dsMemo{}
	a := m.get("inter 3s weight 100", true)
	if a.err != nil || a.canon == "" || m.get("inter 3s weight 100", true) != a {
		t.Fatalf("entry %+v not reused", a)
	}
	if e := m.get("inter 3s cookie x", true); e.err == nil {
		t.Fatal("strict parse accepted an unknown option")
	}
	if e := (&dsMemo{}).get("inter 3s cookie x", false); e.err != nil || e.canon != m.get("inter 3s", true).canon {
		t.Fatalf("lenient parse: %+v", e)
	}
	for i := 0; i < dsMemoMax+10; i++ {
		m.get(fmt.Sprintf("weight %d", i), true)
	}
	if len(m.m) > dsMemoMax {
		t.Fatalf("memo holds %d texts, bound %d", len(m.m), dsMemoMax)
	}
	if _, err := defaultServerOf(services.Service{Name: "svc", DefaultServer: "inter 3s cookie x"}); err == nil || !strings.Contains(err.Error(), "service svc: default_server") {
		t.Fatalf("error %v does not name the service and field", err)
	}
}

// serverOf is the diff's view of a whole server model, as the driver built
// it before snapshots kept compact records: the reference srvRec.view is
// checked against.
func serverOf(m *models.Server, defWeight int) services.Server {
	s := services.Server{Name: m.Name, Address: m.Address, Weight: defWeight, Backup: m.Backup == "enabled",
		CheckSSL: m.CheckSsl == "enabled"}
	if s.CheckSSL {
		s.CAFile = m.SslCafile
	}
	if m.Port != nil {
		s.Port = int(*m.Port)
	}
	if m.HealthCheckPort != nil && m.Check == "enabled" {
		s.CheckPort = int(*m.HealthCheckPort)
	}
	if m.Weight != nil {
		s.Weight = int(*m.Weight)
	}
	return s
}

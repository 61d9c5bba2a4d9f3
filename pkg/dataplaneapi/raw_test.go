package dataplaneapi_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/services"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestReplaceSections replaces the desired sections of a canonical file as
// the real API writes it and keeps every other byte.
func TestReplaceSections(t *testing.T) {
	in, err := os.ReadFile("testdata/raw/canonical.cfg")
	if err != nil {
		t.Fatal(err)
	}
	desired := cluster("pg-test", 0, 3, 2)[:2] // primary + replica exist, switch leader to pg-test-2
	desired = append(desired, services.Service{Name: "pg-new-primary", IP: "127.0.0.20", Port: 5433, Check: "/primary",
		Maxconn: 100, Servers: []services.Server{{Name: "pg-new-1", Address: "127.0.0.21", Port: 6432, CheckPort: 8008, Weight: 100}}})
	out, err := dataplaneapi.ReplaceSections(string(in), desired, nil)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "raw", "canonical.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if out != string(want) {
		t.Errorf("output differs from %s (rerun with -update after checking):\n%s", golden, out)
	}
	// Sections not desired are byte-identical.
	for _, keep := range []string{"backend pg-test-default from unnamed_defaults_1\n  mode tcp", "# _md5hash=", "userlist ops\n  user admin insecure-password x"} {
		if !strings.Contains(out, keep) {
			t.Errorf("lost %q", keep)
		}
	}
}

func TestReplaceSectionsRefusesListen(t *testing.T) {
	text := "global\n  daemon\n\nlisten pg-test-primary\n  bind *:5433\n"
	_, err := dataplaneapi.ReplaceSections(text, cluster("pg-test", 0, 3, 1)[:1], nil)
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("err = %v, want a listen error", err)
	}
}

package dataplaneapi_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
)

// haproxyBin is HAProxy 2.6 as Debian 12 installs it.
const haproxyBin = "/usr/sbin/haproxy"

// TestRenderedConfigPassesHAProxyCheck runs the real "haproxy -c" over what
// the raw path posts, so the rendering is checked by HAProxy itself and not
// only by the double that shares its parser.
func TestRenderedConfigPassesHAProxyCheck(t *testing.T) {
	if _, err := os.Stat(haproxyBin); err != nil {
		t.Skipf("no %s here (apt-get install haproxy); this check runs on the project's Debian machines and CI", haproxyBin)
	}
	dir := t.TempDir()
	base := "global\n    maxconn 2000\n    server-state-file " + filepath.Join(dir, "state") +
		"\n\ndefaults\n    mode tcp\n    load-server-state-from-file global\n    timeout connect 1s\n    timeout client 1m\n    timeout server 1m\n" + foreign
	desired := cluster("pg-test", 0, 3, 2)
	desired = append(desired, cluster("pg-two", 1, 2, 1)...)
	desired[0].IP = "127.0.0.10"
	out, err := dataplaneapi.ReplaceSections(base, desired, nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if b, err := exec.CommandContext(ctx, haproxyBin, "-c", "-f", p).CombinedOutput(); err != nil {
			t.Fatalf("haproxy -c %s: %v\n%s\n--- config ---\n%s", name, err, b, text)
		}
	}
	check("raw.cfg", out)
	// The double's canonical rendering after a transaction must be valid too.
	f := newFixture(t, dpapitest.WithConfig(base))
	f.apply(t, desired)
	check("canonical.cfg", f.srv.RawConfig())
}

package haproxycfg

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/services"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const seedOptions = services.DefaultServerOptions

func srv(name, addr string, port int, selected, backup bool) services.Server {
	return services.Server{Name: name, Address: addr, Port: port, CheckPort: 8008, Weight: 100, Selected: selected, Backup: backup}
}

func svc(cluster, name string, port int, check string, servers ...services.Server) services.Service {
	return services.Service{Cluster: cluster, Name: cluster + "-" + name, Service: name, IP: "*", Port: port, Check: check,
		Balance: "roundrobin", Maxconn: 5000, DefaultServer: seedOptions, Servers: servers}
}

// seedServices is the seed page's 3-member pg-test (hosts listed 1, 3, 2;
// pg-test-3 has pg_offline_query) as services.Build produces it.
func seedServices() []services.Service {
	pool := func(b1, b3, b2 bool) []services.Server {
		return []services.Server{srv("pg-test-1", "10.10.10.11", 6432, true, b1), srv("pg-test-3", "10.10.10.13", 6432, true, b3), srv("pg-test-2", "10.10.10.12", 6432, true, b2)}
	}
	return []services.Service{
		svc("pg-test", "primary", 5433, "/primary", pool(false, false, false)...),
		svc("pg-test", "replica", 5434, "/read-only", pool(true, false, false)...),
		svc("pg-test", "default", 5436, "/primary",
			srv("pg-test-1", "10.10.10.11", 5432, true, false), srv("pg-test-3", "10.10.10.13", 5432, true, false), srv("pg-test-2", "10.10.10.12", 5432, true, false)),
		svc("pg-test", "offline", 5438, "/replica", srv("pg-test-3", "10.10.10.13", 5432, true, false), srv("pg-test-2", "10.10.10.12", 5432, false, true)),
		svc("pg-test", "standby", 5435, "/sync", pool(true, false, false)...),
	}
}

// stripAnnotations removes the explanations the seed page writes after '#'
// on configuration lines (and after a second '#' on comment lines), and
// trailing blanks, so the seed's examples compare line by line.
func stripAnnotations(text string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		t := strings.TrimSpace(l)
		indent := l[:len(l)-len(strings.TrimLeft(l, " "))]
		if strings.HasPrefix(t, "#") {
			if i := strings.Index(t[1:], " #"); i >= 0 {
				t = strings.TrimRight(t[:i+1], " :")
			}
		} else if i := strings.Index(t, "#"); i >= 0 {
			t = strings.TrimSpace(t[:i])
		}
		out = append(out, indent+t)
	}
	return out
}

func TestRenderListenReproducesSeed(t *testing.T) {
	for _, s := range seedServices() {
		t.Run(s.Name, func(t *testing.T) {
			seed, err := os.ReadFile(filepath.Join("testdata", "seed-"+s.Name+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			got := RenderListen(s)
			if strings.HasPrefix(string(seed), "#") {
				// Only the standby example shows Pigsty's header, rendered
				// on the HAProxy of 10.10.10.11.
				got = Header(s, "10.10.10.11") + got
			}
			want := stripAnnotations(string(seed))
			gotLines := strings.Split(strings.TrimRight(got, "\n"), "\n")
			if len(gotLines) != len(want) {
				t.Fatalf("got %d lines, seed has %d:\n%s", len(gotLines), len(want), got)
			}
			for i := range want {
				if gotLines[i] != want[i] {
					t.Errorf("line %d:\n got %q\nseed %q", i+1, gotLines[i], want[i])
				}
			}
		})
	}
}

func multiCluster() []services.Service {
	svcs := seedServices()[:4]
	meta := []services.Service{
		svc("pg-meta", "primary", 6533, "/primary", srv("pg-meta-1", "127.0.0.21", 6432, true, false)),
		svc("pg-meta", "replica", 6534, "/read-only", srv("pg-meta-1", "127.0.0.21", 6432, true, true)),
		svc("pg-meta", "empty", 6599, "/replica"),
	}
	meta[0].IP = "127.0.0.10"
	meta[1].Balance, meta[1].Maxconn, meta[1].DefaultServer = "leastconn", 100, "inter 1s rise 2 fall 2"
	return append(svcs, meta...)
}

func TestRenderGolden(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"multi-cluster", Options{StatsSocket: "/run/haproxy/admin.sock", ServerStateFile: "/var/lib/haproxy/server-state"}},
		{"minimal", Options{Maxconn: 2000, NoStrictLimits: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Render(multiCluster(), tc.opts)
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Render differs from %s (go test -update to accept):\n%s", golden, got)
			}
		})
	}
}

func TestRenderAcceptedByHAProxy(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/haproxy"); err2 != nil {
			t.Skip("haproxy binary not installed (apt-get install haproxy); CI installs it and runs this test")
		}
		bin = "/usr/sbin/haproxy"
	}
	dir := t.TempDir()
	// A state file as `show servers state` writes it when empty (format
	// version 1), so HAProxy has no reason to warn about a missing file.
	if err := os.WriteFile(filepath.Join(dir, "state"), []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts Options
	}{
		{"all options", Options{StatsSocket: filepath.Join(dir, "admin.sock"), ServerStateFile: filepath.Join(dir, "state"), Maxconn: 4000, NoStrictLimits: true}},
		{"defaults", Options{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".cfg")
			if err := os.WriteFile(cfg, Render(multiCluster(), tc.opts), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "-c", "-f", cfg).CombinedOutput()
			if err != nil {
				t.Fatalf("haproxy -c rejected the config: %v\n%s", err, out)
			}
			if strings.Contains(string(out), "[WARNING]") {
				t.Errorf("haproxy -c warned:\n%s", out)
			}
		})
	}
}

func TestBindAndServerLine(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"any address", Bind(services.Service{IP: "*", Port: 5433}), "*:5433"},
		{"empty ip means any", Bind(services.Service{Port: 5433}), "*:5433"},
		{"ipv4", Bind(services.Service{IP: "127.0.0.10", Port: 5434}), "127.0.0.10:5434"},
		{"ipv6", Bind(services.Service{IP: "::1", Port: 5434}), "[::1]:5434"},
		{"server", ServerLine(services.Server{Name: "a-1", Address: "127.0.0.11", Port: 6432, CheckPort: 8008, Weight: 0}), "server a-1 127.0.0.11:6432 check port 8008 weight 0"},
		{"backup server", ServerLine(services.Server{Name: "a-1", Address: "::1", Port: 6432, CheckPort: 8008, Weight: 50, Backup: true}), "server a-1 [::1]:6432 check port 8008 weight 50 backup"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	a := svc("a", "primary", 5433, "/primary")
	b := svc("b", "primary", 5433, "/primary")
	bOther := b
	bOther.Port = 6433
	aLocal, bLocal := a, b
	aLocal.IP, bLocal.IP = "127.0.0.10", "127.0.0.20"
	tests := []struct {
		name string
		svcs []services.Service
		want string // "" = no error
	}{
		{"distinct ports", []services.Service{a, bOther}, ""},
		{"distinct addresses", []services.Service{aLocal, bLocal}, ""},
		{"same port on any address", []services.Service{a, b}, "service b-primary: bind *:5433 collides with service a-primary"},
		{"any address vs one address", []services.Service{aLocal, b}, "collides with service a-primary"},
		{"duplicate name", []services.Service{a, a}, "service a-primary: defined twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.svcs)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

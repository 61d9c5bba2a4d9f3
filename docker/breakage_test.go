package docker

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// copyStack copies docker-compose.yml and docker/ into a temporary root so a
// case can break a file without touching the repository. The controller is
// still built from the real repository root (its context is the whole module).
func copyStack(t *testing.T) *stack {
	t.Helper()
	real := loadStack(t)
	tmp := t.TempDir()
	err := filepath.WalkDir(filepath.Join(real.root, "docker"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(real.root, p)
		dst := filepath.Join(tmp, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(real.file)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(tmp, "docker-compose.yml")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := loadCompose(file)
	if err != nil {
		t.Fatal(err)
	}
	c.Services[controllerService].Build.Context = real.root
	return &stack{root: tmp, file: file, c: c}
}

// edit replaces old by new in a file of the copied stack; a missing old
// fails the test, so a case never passes because its breakage did nothing.
func edit(t *testing.T, s *stack, rel, old, new string) {
	t.Helper()
	p := s.path(rel)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s does not contain %q", rel, old)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(data), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestChecksCatchBreakage breaks the stack one way per case and expects the
// named check to say so: the checks of TestStack are not vacuous.
func TestChecksCatchBreakage(t *testing.T) {
	cases := []struct {
		name  string
		check func(*stack) error
		brk   func(t *testing.T, s *stack)
		want  string
	}{
		{"port published on every address", checkPublishedPorts, func(t *testing.T, s *stack) {
			s.c.Services["haproxy"].Ports[0].HostIP = ""
		}, "must bind 127.0.0.1"},
		{"two services publish one host port", checkPublishedPorts, func(t *testing.T, s *stack) {
			s.c.Services[controllerService].Ports[0].Published = "5433"
		}, "already published by"},
		{"depends_on an undefined service", checkDependsOn, func(t *testing.T, s *stack) {
			s.c.Services["pg-test-2"].DependsOn = append(s.c.Services["pg-test-2"].DependsOn, dependency{Service: "pg-test-9", Condition: "service_started"})
		}, `"pg-test-9" is not a service`},
		{"service_healthy on a service without healthcheck", checkDependsOn, func(t *testing.T, s *stack) {
			s.c.Services["haproxy"].Healthcheck = nil
		}, "has no healthcheck"},
		{"missing bind source", checkMounts, func(t *testing.T, s *stack) {
			s.c.Services[controllerService].Volumes[0].Source = "./docker/controller/missing.yml"
		}, "does not exist"},
		{"undeclared named volume", checkMounts, func(t *testing.T, s *stack) {
			delete(s.c.Volumes, "etcd-data")
		}, "is not declared"},
		{"missing build context", checkBuilds, func(t *testing.T, s *stack) {
			s.c.Services["haproxy"].Build.Context = "docker/missing"
		}, "not a directory"},
		{"missing env file", checkEnvFiles, func(t *testing.T, s *stack) {
			s.c.Services["etcd"].EnvFile = stringList{"docker/missing.env"}
		}, "does not exist"},
		{"address outside the subnet", checkNetwork, func(t *testing.T, s *stack) {
			s.c.Services["haproxy"].Networks["pgsvc"].IPv4Address = "10.90.0.20"
		}, "outside the network's fixed subnet"},
		{"member address differs from the inventory", checkInventory, func(t *testing.T, s *stack) {
			s.c.Services["pg-test-2"].Networks["pgsvc"].IPv4Address = "10.89.0.42"
		}, "member pg-test-2 is 10.89.0.12"},
		{"replica does not wait for the primary", checkPrimaryStartsFirst, func(t *testing.T, s *stack) {
			s.c.Services["pg-test-3"].DependsOn = s.c.Services["pg-test-3"].DependsOn[:1]
		}, "services.pg-test-3: must depend on pg-test-1"},
		{"etcd serves another port", checkEtcdEndpoints, func(t *testing.T, s *stack) {
			cmd := s.c.Services["etcd"].Command
			for i, a := range cmd {
				cmd[i] = strings.Replace(a, "0.0.0.0:2379", "0.0.0.0:2389", 1)
			}
		}, "serves clients on port 2389"},
		{"service port not published", checkServicePortsPublished, func(t *testing.T, s *stack) {
			s.c.Services["haproxy"].Ports = s.c.Services["haproxy"].Ports[1:]
		}, "binds port 5433, which is not published"},
		{"COPY source missing", checkCopySources, func(t *testing.T, s *stack) {
			if err := os.Remove(s.path("docker/haproxy/reload.sh")); err != nil {
				t.Fatal(err)
			}
		}, `source "reload.sh" does not exist`},
		{"API listens on another port", checkDataplaneAPI, func(t *testing.T, s *stack) {
			edit(t, s, "docker/haproxy/dataplaneapi.yml", "port: 5555", "port: 5556")
		}, "listens on 5556"},
		{"API password differs", checkDataplaneAPI, func(t *testing.T, s *stack) {
			edit(t, s, "docker/haproxy/dataplaneapi.yml", "password: pgsvc-demo", "password: other")
		}, "are not a user of"},
		{"default reload strategy", checkDataplaneAPI, func(t *testing.T, s *stack) {
			edit(t, s, "docker/haproxy/dataplaneapi.yml", "reload_strategy: custom", "reload_strategy: systemd")
		}, "needs custom"},
		{"reload script without state dump", checkReloadHazard, func(t *testing.T, s *stack) {
			edit(t, s, "docker/haproxy/reload.sh", `echo "show servers state"`, `echo "show info"`)
		}, "never dumps"},
		{"no load-server-state-from-file", checkReloadHazard, func(t *testing.T, s *stack) {
			edit(t, s, "docker/haproxy/haproxy.cfg", "    load-server-state-from-file global\n", "")
		}, "load-server-state-from-file global"},
		{"state file path differs from the script's", checkReloadHazard, func(t *testing.T, s *stack) {
			edit(t, s, "docker/haproxy/haproxy.cfg", "server-state-file /var/lib/haproxy/server-state", "server-state-file /var/lib/haproxy/state")
		}, "does not use server-state-file /var/lib/haproxy/state"},
		{"wrong Patroni namespace", checkPatroni, func(t *testing.T, s *stack) {
			edit(t, s, "docker/member/patroni/pg-test-2.yml", "namespace: /pg/", "namespace: /service/")
		}, `namespace "/service/"`},
		{"Patroni advertises another address", checkPatroni, func(t *testing.T, s *stack) {
			edit(t, s, "docker/member/patroni/pg-test-3.yml", "connect_address: 10.89.0.13:5432", "connect_address: 10.89.0.31:5432")
		}, "postgresql.connect_address"},
		{"pgbouncer on another port", checkPgbouncer, func(t *testing.T, s *stack) {
			edit(t, s, "docker/member/pgbouncer.ini", "listen_port = 6432", "listen_port = 6433")
		}, "listen_port \"6433\""},
		{"invalid haproxy.cfg", checkHAProxyCfgValid, func(t *testing.T, s *stack) {
			if _, err := exec.LookPath("haproxy"); err != nil {
				t.Skip("haproxy is not installed here; CI installs it (scripts/install-deps.sh) and runs this case")
			}
			edit(t, s, "docker/haproxy/haproxy.cfg", "    maxconn 8000\n", "    maxconn 8000\n    no-such-keyword on\n")
		}, "haproxy -c -f"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := copyStack(t)
			if err := c.check(s); err != nil {
				t.Fatalf("the copied stack fails before the breakage: %v", err)
			}
			c.brk(t, s)
			err := c.check(s)
			if err == nil {
				t.Fatalf("check passed; want an error containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q\ndoes not contain %q", err, c.want)
			}
		})
	}
}

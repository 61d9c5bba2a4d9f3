package harness

import (
	"github.com/pgsvc/pgsvc/pkg/topology"

	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from golden (run with -update after checking):\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{BaseDir: "/base"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.EtcdClient != DefaultEtcdClient || c.EtcdPeer != DefaultEtcdPeer {
		t.Errorf("etcd = %s/%s", c.EtcdClient, c.EtcdPeer)
	}
	if len(c.Clusters) != 1 || c.Clusters[0].Name != "pg-test" || len(c.Clusters[0].Members) != 3 {
		t.Fatalf("clusters = %+v, want the default pg-test", c.Clusters)
	}
	if cl := c.Clusters[0]; cl.TTL != 30 || cl.LoopWait != 10 || cl.RetryTimeout != 10 {
		t.Errorf("timings = %d/%d/%d, want Patroni's 30/10/10", cl.TTL, cl.LoopWait, cl.RetryTimeout)
	}
}

func TestConfigRejects(t *testing.T) {
	short := TestCluster()
	short.TTL, short.LoopWait, short.RetryTimeout = 10, 5, 3
	dupAddr := TestCluster()
	dupAddr.Members[2].Addr = dupAddr.Members[0].Addr
	notLoop := DuoCluster()
	notLoop.Members[1].Addr = "10.10.10.12"
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no base dir", Config{}, "BaseDir is required"},
		{"etcd not loopback", Config{BaseDir: "/b", EtcdClient: "10.0.0.1:2379"}, "EtcdClient"},
		{"etcd client equals peer", Config{BaseDir: "/b", EtcdClient: "127.0.0.1:2379", EtcdPeer: "127.0.0.1:2379"}, "both"},
		{"timings", Config{BaseDir: "/b", Clusters: []ClusterSpec{short}}, "loop_wait + 2*retry_timeout <= ttl"},
		{"duplicate addr", Config{BaseDir: "/b", Clusters: []ClusterSpec{dupAddr}}, "already used by pg-test-1"},
		{"non-loopback member", Config{BaseDir: "/b", Clusters: []ClusterSpec{notLoop}}, `member pg-duo-2: addr "10.10.10.12"`},
		{"duplicate cluster", Config{BaseDir: "/b", Clusters: []ClusterSpec{TestCluster(), TestCluster()}}, `duplicate name "pg-test"`},
		{"no members", Config{BaseDir: "/b", Clusters: []ClusterSpec{{Name: "x"}}}, "cluster x: no members"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.withDefaults()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestRenderGolden(t *testing.T) {
	fast := TestCluster()
	fast.TTL, fast.LoopWait, fast.RetryTimeout = 10, 2, 3
	cfg, err := Config{BaseDir: "/base", Clusters: []ClusterSpec{fast, DuoCluster()}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("patroni pg-test-2", func(t *testing.T) {
		b, err := patroniConfig(cfg, cfg.Clusters[0], cfg.Clusters[0].Members[1], "/base/pg-test-post-bootstrap.sh")
		if err != nil {
			t.Fatal(err)
		}
		golden(t, "patroni-pg-test-2.yml.golden", b)
	})
	t.Run("pgbouncer pg-duo-1", func(t *testing.T) {
		golden(t, "pgbouncer-pg-duo-1.ini.golden", []byte(pgbouncerConfig(cfg.BaseDir, cfg.Clusters[1].Members[0])))
	})
	t.Run("post bootstrap", func(t *testing.T) {
		golden(t, "post-bootstrap.sh.golden", []byte(postBootstrapScript()))
	})
	t.Run("inventory", func(t *testing.T) {
		golden(t, "inventory.yml.golden", []byte(InventoryYAML(cfg.Clusters)))
	})
}

func TestSeqOf(t *testing.T) {
	for _, tc := range []struct {
		cluster, name string
		i, want       int
	}{
		{"pg-test", "pg-test-3", 0, 3},
		{"pg-test", "other-7", 1, 2},
		{"pg-test", "pg-test-x", 4, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := seqOf(tc.cluster, tc.name, tc.i); got != tc.want {
				t.Errorf("seqOf = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestProcStatOwnPID(t *testing.T) {
	st, state, err := procStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st == 0 || state == 'Z' {
		t.Errorf("start time %d, state %c", st, state)
	}
	p := &proc{Name: "self", PID: os.Getpid(), StartTime: st}
	if !p.alive() {
		t.Error("own process not alive")
	}
	p.StartTime++ // as if the PID had been recycled
	if p.alive() {
		t.Error("recycled PID (other start time) reported alive")
	}
}

func TestPostmasterProcIgnoresStrangers(t *testing.T) {
	dir := t.TempDir()
	t.Run("no pid file", func(t *testing.T) {
		if pm, err := postmasterProc("m", dir); pm != nil || err != nil {
			t.Fatalf("got %v, %v; want nothing", pm, err)
		}
	})
	t.Run("pid of a process that is not our postgres", func(t *testing.T) {
		// Our own PID is alive but is not a postgres of this data dir.
		pidFile := strconv.Itoa(os.Getpid()) + "\n" + dir + "\n"
		if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(pidFile), 0o600); err != nil {
			t.Fatal(err)
		}
		if pm, err := postmasterProc("m", dir); pm != nil || err != nil {
			t.Fatalf("got %v, %v; want nothing", pm, err)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte("abc\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := postmasterProc("m", dir); err == nil || !strings.Contains(err.Error(), "bad pid line") {
			t.Fatalf("error = %v, want bad pid line", err)
		}
	})
}

func TestRemoveBaseDirNeedsMarker(t *testing.T) {
	dir := t.TempDir()
	if err := RemoveBaseDir(dir); err == nil || !strings.Contains(err.Error(), "not created by the harness") {
		t.Fatalf("error = %v, want a refusal", err)
	}
	if err := os.WriteFile(filepath.Join(dir, markerFile), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := RemoveBaseDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("dir still there: %v", err)
	}
}

// TestInventoryLoads checks the harness's inventory against the real loader
// and that each cluster's services bind its own address.
func TestInventoryLoads(t *testing.T) {
	inv, err := topology.Parse("inventory.yml", []byte(InventoryYAML([]ClusterSpec{TestCluster(), DuoCluster()})))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"pg-test": "127.0.0.10", "pg-duo": "127.0.0.20"}
	for _, c := range inv.Clusters {
		if len(c.Services) != 4 {
			t.Fatalf("%s: %d services", c.Name, len(c.Services))
		}
		for _, s := range c.Services {
			if s.IP != want[c.Name] {
				t.Errorf("%s-%s binds %q, want %q", c.Name, s.Name, s.IP, want[c.Name])
			}
		}
	}
}

// TestDemoInventoryInSync keeps config/demo.yml what the harness writes.
func TestDemoInventoryInSync(t *testing.T) {
	b, err := os.ReadFile("../../config/demo.yml")
	if err != nil {
		t.Fatal(err)
	}
	want := InventoryYAML([]ClusterSpec{TestCluster(), DuoCluster()})
	if !strings.HasSuffix(string(b), want) {
		t.Errorf("config/demo.yml differs from the harness inventory; regenerate it from integration/harness/testdata/inventory.yml.golden")
	}
}

// TestSyncOptions: SynchronousMode reaches the bootstrap DCS config (and
// only when set), and Services become the cluster's pg_services.
func TestSyncOptions(t *testing.T) {
	cl := TestCluster()
	cl.SynchronousMode = true
	cl.Services = []string{"{ name: sync, port: 5440, ip: \"127.0.0.10\", dest: postgres, check: /sync, selector: \"[? patroni_sync ]\" }"}
	cfg, err := Config{BaseDir: "/base", Clusters: []ClusterSpec{cl}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	b, err := patroniConfig(cfg, cfg.Clusters[0], cfg.Clusters[0].Members[0], "/x.sh")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "synchronous_mode: true") {
		t.Errorf("bootstrap dcs lacks synchronous_mode:\n%s", b)
	}
	b, err = patroniConfig(cfg, TestCluster(), cfg.Clusters[0].Members[0], "/x.sh")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "synchronous_mode") {
		t.Errorf("synchronous_mode set without the option:\n%s", b)
	}
	inv, err := topology.Parse("inventory.yml", []byte(InventoryYAML(cfg.Clusters)))
	if err != nil {
		t.Fatal(err)
	}
	svcs := inv.Clusters[0].Services
	if len(svcs) != 5 {
		t.Fatalf("%d services, want the 4 defaults and sync", len(svcs))
	}
	if s := svcs[4]; s.Name != "sync" || s.Port != 5440 || s.IP != "127.0.0.10" || s.Selector != "[? patroni_sync ]" {
		t.Errorf("pg_services entry read as %+v", *s)
	}
}

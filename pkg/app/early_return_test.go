package app

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/internal/etcdtest"
	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
)

// TestEarlyReturnStopsLeaderCache: Serve failing after the election's
// leader cache started (status address in use) leaves no cache goroutine
// polling the closed etcd client.
func TestEarlyReturnStopsLeaderCache(t *testing.T) {
	srv := etcdtest.Start(t)
	api := dpapitest.NewServer(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	inv := filepath.Join(dir, "pigsty.yml")
	if err := os.WriteFile(inv, []byte(inventory), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Inventory: inv, Listen: busy.Addr().String(), Etcd: config.Etcd{Endpoints: []string{srv.ClientURL}},
		DataPlaneAPI: []config.DataPlaneAPI{{URL: api.URL()}},
		Election:     config.Election{Enabled: true, TTL: 3, Identity: "early"}}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Serve(ctx, cfg, zap.NewNop(), nil); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Serve = %v, want the listen error", err)
	}
	buf := make([]byte, 1<<20)
	if s := string(buf[:runtime.Stack(buf, true)]); strings.Contains(s, "(*leaderCache).run") {
		t.Fatalf("the leader cache still runs after Serve returned:\n%s", s)
	}
}

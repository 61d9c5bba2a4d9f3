package app

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pgsvc/pgsvc/pkg/config"
	"github.com/pgsvc/pgsvc/pkg/controller"
	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// reloadRig is a controller (not running) on the inventory of inventory,
// written to a file, as Serve sets it up for reloadInventory.
func reloadRig(t *testing.T) (*controller.Controller, *config.Config, []string, *observer.ObservedLogs, *zap.Logger) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pigsty.yml")
	if err := os.WriteFile(path, []byte(inventory), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Inventory: path}
	inv, err := plan.LoadInventory(path, topology.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(core)
	return controller.New(inv, nil, controller.Options{Log: log}), cfg, controller.Namespaces(inv), logs, log
}

// panicLoader makes loadInventory panic while fixed is false (until the
// test ends; then it loads as plan.LoadInventory); it counts the panics in
// calls.
func panicLoader(t *testing.T, calls *atomic.Int32, fixed *atomic.Bool) {
	t.Helper()
	saved := loadInventory
	t.Cleanup(func() { loadInventory = saved })
	loadInventory = func(path string, opts topology.ParseOptions) (*topology.Inventory, error) {
		if fixed.Load() {
			return plan.LoadInventory(path, opts)
		}
		calls.Add(1)
		panic("injected: parsing the inventory panicked")
	}
}

// panicLogged reports whether logs has the rejection of a reload that
// panicked, with the panic and its stack.
func panicLogged(logs *observer.ObservedLogs) bool {
	for _, e := range logs.FilterMessageSnippet("panicked").All() {
		f := e.ContextMap()
		if e.Level == zapcore.ErrorLevel && strings.Contains(e.Message, "keeping the running inventory") &&
			f["panic"] == "injected: parsing the inventory panicked" && strings.Contains(f["stack"].(string), "checkReload") {
			return true
		}
	}
	return false
}

// TestInventoryReloadPanicRejected: a reload (SIGHUP) whose parsing panics
// is rejected like a bad file, logged with the panic and its stack; the
// running inventory is kept and the panic does not reach the caller.
func TestInventoryReloadPanicRejected(t *testing.T) {
	ctl, cfg, namespaces, logs, log := reloadRig(t)
	before := ctl.Inventory()
	var calls atomic.Int32
	var fixed atomic.Bool
	panicLoader(t, &calls, &fixed)
	reloadInventory(ctl, cfg, namespaces, "", log)
	if calls.Load() != 1 {
		t.Fatalf("the loader ran %d times, want 1", calls.Load())
	}
	if ctl.Inventory() != before {
		t.Error("the running inventory was replaced")
	}
	if !panicLogged(logs) {
		t.Errorf("no error with the panic and its stack logged: %v", logs.All())
	}
}

// TestWatchInventorySurvivesPanic: watch_inventory's loop outlives a reload
// that panics, and applies the next change of the file.
func TestWatchInventorySurvivesPanic(t *testing.T) {
	ctl, cfg, namespaces, logs, log := reloadRig(t)
	before := ctl.Inventory()
	var calls atomic.Int32
	var fixed atomic.Bool
	panicLoader(t, &calls, &fixed)
	loaded := inventorySum(cfg.Inventory)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchInventory(ctx, ctl, cfg, namespaces, "", loaded, log)
	}()
	defer func() {
		cancel()
		<-done
	}()
	// Within a deadline, not a sleep: the loop polls every InventoryPoll.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(3*InventoryPoll + 5*time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s", what, 3*InventoryPoll+5*time.Second)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// edit rewrites the file by rename: never read half written.
	edit := func(text string) {
		tmp := cfg.Inventory + ".tmp"
		if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfg.Inventory); err != nil {
			t.Fatal(err)
		}
	}
	edit(inventory + "# edited\n")
	waitFor("the changed file reloaded (and the reload panicked)", func() bool { return calls.Load() >= 1 && panicLogged(logs) })
	if ctl.Inventory() != before {
		t.Fatal("the running inventory was replaced by a reload that panicked")
	}

	fixed.Store(true) // the bug is fixed: the next change loads
	edit(inventory + "# edited again\n")
	waitFor("the next change applied by the same watch loop", func() bool { return ctl.Inventory() != before })
	select {
	case <-done:
		t.Fatal("the watch loop ended")
	default:
	}
}

// TestWatchInventorySeesEarlyEdit: an edit made after the running inventory
// was read but before watch_inventory started (Serve connects to etcd and
// builds its targets in between) is reloaded at the watch's first look,
// not missed until the next edit.
func TestWatchInventorySeesEarlyEdit(t *testing.T) {
	ctl, cfg, namespaces, _, log := reloadRig(t)
	before := ctl.Inventory()
	loaded := inventorySum(cfg.Inventory) // as Serve takes it before its load
	if err := os.WriteFile(cfg.Inventory, []byte(inventory+"# edited before the watch\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchInventory(ctx, ctl, cfg, namespaces, "", loaded, log)
	}()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(3*InventoryPoll + 5*time.Second)
	for ctl.Inventory() == before {
		if time.Now().After(deadline) {
			t.Fatal("the edit made before the watch started was never reloaded")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

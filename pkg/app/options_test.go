package app

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/config"
)

// TestEveryControllerSettingIsPassedOn (issue 12 row 13): each field of the
// config's controller section reaches the controller (promote_window was
// parsed and never used).
func TestEveryControllerSettingIsPassedOn(t *testing.T) {
	cfg := config.Default()
	cv := reflect.ValueOf(&cfg.Controller).Elem()
	for i := 0; i < cv.NumField(); i++ {
		switch f := cv.Field(i); f.Interface().(type) {
		case config.Duration:
			f.Set(reflect.ValueOf(config.Duration{Duration: time.Duration(1000 + i)}))
		case int:
			f.SetInt(int64(1000 + i))
		case string:
			f.SetString(strconv.Itoa(1000 + i))
		default:
			t.Fatalf("controller.%s: unhandled type %T", cv.Type().Field(i).Name, f.Interface())
		}
	}
	opts := reflect.ValueOf(ControllerOptions(cfg, zap.NewNop()))
	for i := 0; i < cv.NumField(); i++ {
		name := cv.Type().Field(i).Name
		got := opts.FieldByName(name)
		if !got.IsValid() {
			t.Errorf("controller.Options has no field %s", name)
			continue
		}
		var want int64 = int64(1000 + i)
		var have int64
		switch v := got.Interface().(type) {
		case time.Duration:
			have = int64(v)
		case int:
			have = int64(v)
		case string:
			have, _ = strconv.ParseInt(v, 10, 64)
		}
		if have != want {
			t.Errorf("controller.%s is not passed on: options have %v", name, got.Interface())
		}
	}
	if ControllerOptions(cfg, zap.NewNop()).PromoteWindow != cfg.Controller.PromoteWindow.Duration {
		t.Error("promote_window not passed on")
	}
}

// TestRuntimeRolesOnlyWhenEveryTargetIsTwins: the controller stops holding
// role changes back for a new primary (controller.Options.RuntimeRoles)
// only when no target would reload for them.
func TestRuntimeRolesOnlyWhenEveryTargetIsTwins(t *testing.T) {
	tests := []struct {
		name   string
		direct []string
		api    []string
		want   bool
	}{
		{"no target", nil, nil, false},
		{"direct twins", []string{"twins"}, nil, true},
		{"direct pigsty by default", []string{""}, nil, false},
		{"api twins", nil, []string{"twins"}, true},
		{"all twins", []string{"twins", "twins"}, []string{"twins"}, true},
		{"one pigsty direct", []string{"twins", "pigsty"}, []string{"twins"}, false},
		{"one pigsty api", []string{"twins"}, []string{"twins", ""}, false},
	}
	for _, tt := range tests {
		cfg := config.Default()
		for _, l := range tt.direct {
			cfg.Direct = append(cfg.Direct, config.Direct{Layout: l})
		}
		for _, l := range tt.api {
			cfg.DataPlaneAPI = append(cfg.DataPlaneAPI, config.DataPlaneAPI{Layout: l})
		}
		if got := ControllerOptions(cfg, zap.NewNop()).RuntimeRoles; got != tt.want {
			t.Errorf("%s: RuntimeRoles = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestServeRefusesWhatPlanRejects (issue 12 row 10): run loads the
// inventory with the same check as plan, so it does not start on an
// inventory whose selectors cannot produce services.
func TestServeRefusesWhatPlanRejects(t *testing.T) {
	dir := t.TempDir()
	inv := filepath.Join(dir, "pigsty.yml")
	text := `all:
  children:
    pg-test:
      hosts: { 127.0.1.11: { pg_seq: 1, pg_role: primary } }
      vars:
        pg_cluster: pg-test
        pg_services: [{ name: x, port: 5440, selector: "length(@)" }]
`
	if err := os.WriteFile(inv, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Inventory: inv, Listen: "127.0.0.1:0", Direct: []config.Direct{{ConfigPath: filepath.Join(dir, "h.cfg"),
		StatsSocket: "s", MasterSocket: "m", ServerStateFile: "f"}}}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := Serve(ctx, cfg, zap.NewNop(), nil)
	if err == nil || !strings.Contains(err.Error(), inv) || !strings.Contains(err.Error(), "want a list of members") {
		t.Errorf("Serve = %v, want the inventory rejected", err)
	}
}

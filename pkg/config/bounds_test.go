package config

import (
	"strings"
	"testing"
)

// TestControllerBounds (issue 12 rows 9, 14): settings that would panic,
// spin or time out every apply are rejected at load, naming file and field.
func TestControllerBounds(t *testing.T) {
	base := "inventory: inv.yml\ndirect: [{config_path: a, stats_socket: b, master_socket: c, server_state_file: d}]\n"
	for _, tc := range []struct{ yaml, want string }{
		{"controller: {history_size: -5}", "c.yml: controller.history_size: -5 is out of range (1-100000)"},
		{"controller: {resync_interval: 1ns}", "c.yml: controller.resync_interval: 1ns is too short (at least 1s)"},
		{"controller: {apply_timeout: 1ns}", "c.yml: controller.apply_timeout: 1ns is too short (at least 100ms)"},
	} {
		c, err := Parse("c.yml", []byte(base+tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		c.ApplyDefaults()
		if err := c.Validate(); err == nil || err.Error() != tc.want {
			t.Errorf("%s: err = %v, want %s", tc.yaml, err, tc.want)
		}
	}
	c, err := Parse("c.yml", []byte(base+"controller: {resync_interval: 1s, apply_timeout: 100ms, history_size: 1}"))
	if err != nil {
		t.Fatal(err)
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Errorf("the bounds themselves are refused: %v", err)
	}
	if !strings.Contains(Default().Controller.ResyncInterval.String(), "30s") {
		t.Error("default resync interval changed")
	}
}

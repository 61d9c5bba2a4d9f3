package controller

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pgsvc/pgsvc/pkg/target"
)

// TestChangeFieldsBounded: a log line lists at most logChangesMax changes
// and counts all of them, in total and per kind; a short list is whole.
func TestChangeFieldsBounded(t *testing.T) {
	line := func(changes []target.Change) map[string]any {
		var b strings.Builder
		enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
		core := zapcore.NewCore(enc, zapcore.AddSync(&b), zap.InfoLevel)
		zap.New(core).Info("applied", changeFields("changes", changes)...)
		var m map[string]any
		if err := json.Unmarshal([]byte(b.String()), &m); err != nil {
			t.Fatalf("%v: %s", err, b.String())
		}
		return m
	}
	var many []target.Change
	for i := 0; i < 5000; i++ {
		kind := target.KindSetState
		if i%5 == 0 {
			kind = target.KindForceUp
		}
		many = append(many, target.Change{Kind: kind, Backend: fmt.Sprintf("pg-%04d-replica", i/5), Server: "pg-1", Detail: "ready -> drain"})
	}
	m := line(many)
	if got := len(m["changes"].([]any)); got != logChangesMax {
		t.Errorf("listed %d changes, want %d", got, logChangesMax)
	}
	if m["changes_total"] != float64(5000) || m["changes_omitted"] != float64(5000-logChangesMax) {
		t.Errorf("total %v, omitted %v; want 5000, %d", m["changes_total"], m["changes_omitted"], 5000-logChangesMax)
	}
	if bk := m["changes_by_kind"].(map[string]any); bk["force_up"] != float64(1000) || bk["set_state"] != float64(4000) || len(bk) != 2 {
		t.Errorf("by kind %v, want force_up 1000, set_state 4000", bk)
	}
	m = line(many[:3])
	if got := len(m["changes"].([]any)); got != 3 || m["changes_total"] != float64(3) {
		t.Errorf("short list: listed %d of %v, want all 3", got, m["changes_total"])
	}
	if _, ok := m["changes_omitted"]; ok {
		t.Error("short list: changes_omitted set")
	}
}

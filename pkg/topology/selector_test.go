package topology

import (
	"reflect"
	"testing"
)

func TestCompileSelector(t *testing.T) {
	members := []any{
		map[string]any{"pg_role": "primary", "pg_seq": 1.0, "pg_offline_query": false},
		map[string]any{"pg_role": "replica", "pg_seq": 3.0, "pg_offline_query": true},
		map[string]any{"pg_role": "replica", "pg_seq": 2.0, "pg_offline_query": false},
		map[string]any{"pg_role": "offline", "pg_seq": 4.0},
	}
	tests := []struct {
		name string
		expr string
		want []float64 // pg_seq of the selected members
	}{
		{"all", "[]", []float64{1, 3, 2, 4}},
		{"legacy unquoted literal", "[? pg_role == `primary` || pg_role == `offline` ]", []float64{1, 4}},
		{"pigsty offline selector", "[? pg_role == `offline` || pg_offline_query ]", []float64{3, 4}},
		{"pigsty offline backup", "[? pg_role == `replica` && !pg_offline_query]", []float64{2}},
		{"JSON literal", "[? pg_role == `\"replica\"`]", []float64{3, 2}},
		{"number literal", "[? pg_seq == `3`]", []float64{3}},
		{"raw string with backtick untouched", "[? pg_role == 'a`b']", nil},
		{"raw string", "[? pg_role == 'offline']", []float64{4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expr, err := CompileSelector(tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			res, err := expr.Search(members)
			if err != nil {
				t.Fatal(err)
			}
			var got []float64
			for _, m := range res.([]any) {
				got = append(got, m.(map[string]any)["pg_seq"].(float64))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("selected %v, want %v", got, tt.want)
			}
		})
	}
}

func TestQuoteLegacyLiterals(t *testing.T) {
	tests := []struct{ in, want string }{
		{"[? a == `x`]", "[? a == `\"x\"`]"},
		{"[? a == ` x`]", "[? a == `\"x\"`]"},
		{"[? a == `1`]", "[? a == `1`]"},
		{"[? a == `true`]", "[? a == `true`]"},
		{"[? a == `{\"k\": 1}`]", "[? a == `{\"k\": 1}`]"},
		{"[? \"we`ird\" == `x`]", "[? \"we`ird\" == `\"x\"`]"},
		{"[? a == `unterminated", "[? a == `unterminated"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := quoteLegacyLiterals(tt.in); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// TestCompileSelectorCompilerPanic: go-jmespath v0.4.0's lexer panics (index
// out of range) on an identifier character followed by U+0080. Compiling such
// a selector must return an error, not panic.
func TestCompileSelectorCompilerPanic(t *testing.T) {
	for _, expr := range []string{"A\u0080 0", "[? pg_offline_query\u0080 ]", "[? pg_role\u0080x == `primary` ]"} {
		t.Run(expr, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("CompileSelector(%q) panicked: %v", expr, r)
				}
			}()
			jp, err := CompileSelector(expr)
			if err == nil || jp != nil {
				t.Fatalf("CompileSelector(%q) = %v, %v: want an error", expr, jp, err)
			}
		})
	}
}

// FuzzCompileSelector checks that no selector text makes CompileSelector
// panic, and that it returns exactly one of an expression and an error.
func FuzzCompileSelector(f *testing.F) {
	for _, s := range []string{
		"[]",
		"[? pg_role == `primary` || pg_role == `offline` ]",
		"[? pg_role == `offline` || pg_offline_query ]",
		"[? pg_role == 'a`b']",
		"A\u0080 0", // found by fuzzing: the go-jmespath compiler panicked
		"[? pg_offline_query\u0080 ]",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		jp, err := CompileSelector(expr)
		if (jp == nil) == (err == nil) {
			t.Fatalf("CompileSelector(%q) = %v, %v: want exactly one of them", expr, jp, err)
		}
	})
}

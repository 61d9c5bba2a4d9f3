package topology

import (
	"fmt"
	"time"
)

// normalizeMap converts YAML-decoded values into the shapes encoding/json
// produces (numbers float64, maps with string keys), which is what JMESPath
// compares against: the literal `1` is float64 1, and would not equal an int.
func normalizeMap(m map[string]any) map[string]any {
	return normalizeMapWith(m, nil)
}

func normalize(v any) any { return normalizeWith(v, nil) }

// strTable holds one copy of each text a parse meets (the parser's
// intern): a fleet's groups repeat the same service options, selectors
// and checks 1,000 times. A nil table shares nothing.
type strTable struct {
	strs  map[string]string
	boxes map[string]any // the same texts as values of maps and lists
}

// str returns the table's copy of s.
func (t *strTable) str(s string) string {
	if t == nil {
		return s
	}
	if c, ok := t.strs[s]; ok {
		return c
	}
	if t.strs == nil {
		t.strs = map[string]string{}
	}
	t.strs[s] = s
	return s
}

// box returns s as a value of a map or a list, one for every equal s (a
// string stored in an `any` takes a header of its own).
func (t *strTable) box(s string) any {
	if t == nil {
		return s
	}
	if b, ok := t.boxes[s]; ok {
		return b
	}
	if t.boxes == nil {
		t.boxes = map[string]any{}
	}
	var b any = t.str(s)
	t.boxes[s] = b
	return b
}

func normalizeMapWith(m map[string]any, t *strTable) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[t.str(k)] = normalizeWith(v, t)
	}
	return out
}

// normalizeWith is normalize sharing the texts of the result through t
// (nil: none).
func normalizeWith(v any, t *strTable) any {
	switch x := v.(type) {
	case string:
		if t == nil {
			return v
		}
		return t.box(x)
	case nil, bool, float64:
		return x
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case uint64:
		return float64(x)
	case float32:
		return float64(x)
	case map[string]any:
		return normalizeMapWith(x, t)
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[t.str(fmt.Sprint(k))] = normalizeWith(e, t)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalizeWith(e, t)
		}
		return out
	case time.Time:
		return x.Format(time.RFC3339Nano)
	default:
		return fmt.Sprint(x)
	}
}

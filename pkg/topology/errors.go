package topology

import (
	"fmt"
	"strconv"
	"strings"
)

// Error is one problem found in an inventory. Its message names the file (and
// line when known), the cluster and host it concerns, and the variable or key
// at fault, so an operator can go straight to the offending line:
//
//	inv.yml:12: cluster pg-test, host 10.10.10.12: pg_role: unknown role "leader" (want primary, replica or offline)
//
// Parse returns every Error it finds, joined with errors.Join; use errors.As
// to get the first one.
type Error struct {
	File string
	// Line is the 1-based line of the offending value, 0 when unknown (e.g. a
	// problem with a built-in default or a missing key).
	Line    int
	Cluster string
	Host    string
	// Field is the variable or key at fault, e.g. pg_role or pg_services[0].port.
	Field string
	Msg   string
	// Err is the underlying error, if any (e.g. the YAML or JMESPath parser's).
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Cluster != "" {
		b.WriteString("cluster ")
		b.WriteString(e.Cluster)
		if e.Host != "" {
			b.WriteString(", host ")
			b.WriteString(e.Host)
		}
		b.WriteString(": ")
	} else if e.Host != "" {
		b.WriteString("host ")
		b.WriteString(e.Host)
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the underlying parser error, if any.
func (e *Error) Unwrap() error { return e.Err }

// describe renders a YAML-decoded value for an error message.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(x)
	case map[string]any, map[any]any:
		return "a mapping"
	case []any:
		return "a list"
	default:
		return fmt.Sprint(x)
	}
}

package topology

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/jmespath/go-jmespath"
)

// CompileSelector compiles a Pigsty service selector the way Ansible's
// json_query (Python jmespath) reads it.
//
// Pigsty's own defaults write string literals with elided quotes, e.g.
// [? pg_role == `primary` ]: the literal `primary` is not JSON. Python's
// jmespath accepts that legacy form (it retries the literal as a JSON string);
// go-jmespath rejects it. So a backtick literal that is not valid JSON but is
// once wrapped in quotes is rewritten to the quoted form before compiling;
// everything else is passed through untouched.
//
// A compiled expression is shared: every cluster with the same selector (a
// fleet of Pigsty clusters has the same few) gets the same *JMESPath, which
// go-jmespath documents as safe for concurrent use. Each compiled one
// carries its own interpreter and function table (~6 KB), ~24 MB for 1,000
// clusters' services when not shared.
func CompileSelector(expr string) (*jmespath.JMESPath, error) {
	q := quoteLegacyLiterals(expr)
	compiled.mu.Lock()
	jp, ok := compiled.m[q]
	compiled.mu.Unlock()
	if ok {
		return jp, nil
	}
	jp, err := compile(q)
	if err != nil {
		return nil, err
	}
	compiled.mu.Lock()
	if compiled.m == nil || len(compiled.m) >= maxCompiled {
		compiled.m = map[string]*jmespath.JMESPath{} // bounded: inventories reloaded with ever new selectors
	}
	compiled.m[q] = jp
	compiled.mu.Unlock()
	return jp, nil
}

// compile is jmespath.Compile with its panics turned into errors: go-jmespath
// v0.4.0's lexer indexes past the end of its input on some non-ASCII text
// (an identifier character followed by U+0080, e.g. "A\u0080 0"). A selector
// comes from an inventory an operator edits, and a bad one must be reported
// like any other compile error, not take the process down.
func compile(q string) (jp *jmespath.JMESPath, err error) {
	defer func() {
		if r := recover(); r != nil {
			jp, err = nil, fmt.Errorf("invalid expression (the JMESPath compiler failed: %v)", r)
		}
	}()
	return jmespath.Compile(q)
}

// maxCompiled bounds the shared compiled selectors.
const maxCompiled = 4096

var compiled struct {
	mu sync.Mutex
	m  map[string]*jmespath.JMESPath
}

// quoteLegacyLiterals rewrites `foo` into `"foo"` where needed (see
// CompileSelector). It skips over raw string literals ('...') and quoted
// identifiers ("...") so backticks inside them are left alone.
func quoteLegacyLiterals(expr string) string {
	if !strings.Contains(expr, "`") {
		return expr
	}
	var b strings.Builder
	for i := 0; i < len(expr); {
		c := expr[i]
		switch c {
		case '\'', '"':
			j := skipQuoted(expr, i, c)
			b.WriteString(expr[i:j])
			i = j
		case '`':
			j := i + 1
			for j < len(expr) && expr[j] != '`' {
				if expr[j] == '\\' && j+1 < len(expr) {
					j++
				}
				j++
			}
			if j >= len(expr) { // unterminated: let the compiler report it
				b.WriteString(expr[i:])
				return b.String()
			}
			b.WriteByte('`')
			b.WriteString(fixLiteral(expr[i+1 : j]))
			b.WriteByte('`')
			i = j + 1
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}

// skipQuoted returns the index just past the quoted token starting at i.
func skipQuoted(s string, i int, q byte) int {
	j := i + 1
	for j < len(s) && s[j] != q {
		if s[j] == '\\' && j+1 < len(s) {
			j++
		}
		j++
	}
	if j < len(s) {
		j++
	}
	return j
}

// fixLiteral takes the raw text between backticks (escapes as written) and
// returns it unchanged when it is JSON, or as a JSON string when it only
// becomes JSON once quoted — Python jmespath's legacy fallback.
func fixLiteral(raw string) string {
	lexeme := strings.ReplaceAll(raw, "\\`", "`")
	if json.Valid([]byte(lexeme)) {
		return raw
	}
	quoted := `"` + strings.TrimLeft(lexeme, " \t\r\n") + `"`
	if !json.Valid([]byte(quoted)) {
		return raw
	}
	return strings.ReplaceAll(quoted, "`", "\\`")
}

package topology

import (
	"encoding/json"
	"strings"

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
func CompileSelector(expr string) (*jmespath.JMESPath, error) {
	return jmespath.Compile(quoteLegacyLiterals(expr))
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

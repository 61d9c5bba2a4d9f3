package haproxyname

import (
	"fmt"
	"sort"
	"strings"
)

type optKind int

const (
	optFlag     optKind = iota // keyword alone
	optInt                     // keyword <non-negative integer>
	optDuration                // keyword <integer>[us|ms|s|m|h|d]
	optWord                    // keyword <word>
)

// serverOptions is the vocabulary of a service's `options` (the
// default-server line): what both drivers can apply. The Data Plane API
// driver converts the line into structured fields and knows exactly these
// keywords (pkg/dataplaneapi tests keep the two lists equal).
var serverOptions = map[string]optKind{
	"check": optFlag, "no-check": optFlag, "backup": optFlag, "no-backup": optFlag,
	"disabled": optFlag, "enabled": optFlag, "agent-check": optFlag, "no-agent-check": optFlag,
	"send-proxy": optFlag, "no-send-proxy": optFlag, "send-proxy-v2": optFlag, "no-send-proxy-v2": optFlag,
	"port": optInt, "rise": optInt, "fall": optInt, "error-limit": optInt, "minconn": optInt,
	"maxconn": optInt, "maxqueue": optInt, "weight": optInt, "agent-port": optInt,
	"inter": optDuration, "fastinter": optDuration, "downinter": optDuration, "slowstart": optDuration,
	"agent-inter": optDuration,
	"addr":        optWord, "on-marked-down": optWord, "on-marked-up": optWord, "on-error": optWord, "resolvers": optWord,
}

// ServerOptionKeywords lists the keywords ServerOptions accepts, sorted.
func ServerOptionKeywords() []string {
	out := make([]string, 0, len(serverOptions))
	for k := range serverOptions {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ServerOptions checks a default-server line (a service's `options`): known
// keywords, each with a well-formed value, every word a plain Word.
func ServerOptions(line string) error {
	// The line is written as it is: words must be split where HAProxy
	// splits them. strings.Fields also splits on Unicode spaces (U+00A0,
	// U+0085...), which HAProxy reads as part of a word ("inter
	// 3s<U+00A0>fastinter 1s" is inter "3s" and a warning, the fastinter
	// lost), and on control characters such as \v and \f: only spaces
	// and tabs between printable ASCII words are accepted.
	for i := 0; i < len(line); i++ {
		if c := line[i]; (c < ' ' && c != '\t') || c >= 0x7f {
			return fmt.Errorf("options: character %q not allowed (words are printable ASCII, separated by spaces or tabs)", c)
		}
	}
	words := strings.Fields(line)
	for i := 0; i < len(words); i++ {
		w := words[i]
		kind, ok := serverOptions[w]
		if !ok {
			if err := Word(w); err != nil {
				return fmt.Errorf("options: %w", err)
			}
			return fmt.Errorf("options: unsupported server option %q (want one of %s)", w, strings.Join(ServerOptionKeywords(), ", "))
		}
		if kind == optFlag {
			continue
		}
		if i+1 >= len(words) {
			return fmt.Errorf("options: %s needs a value", w)
		}
		i++
		v := words[i]
		if err := Word(v); err != nil {
			return fmt.Errorf("options: %s: %w", w, err)
		}
		switch kind {
		case optInt:
			if !allDigits(v) || len(v) > 9 {
				return fmt.Errorf("options: %s: %q is not a non-negative integer", w, v)
			}
		case optDuration:
			n := strings.TrimRight(v, "usmhd")
			switch v[len(n):] {
			case "", "us", "ms", "s", "m", "h", "d":
			default:
				return fmt.Errorf("options: %s: %q is not a duration such as 3s", w, v)
			}
			if !allDigits(n) || len(n) > 9 {
				return fmt.Errorf("options: %s: %q is not a duration such as 3s", w, v)
			}
		}
	}
	return nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Package cfgtext converts between HAProxy configuration words (server and
// default-server options, durations) and client-native models. It is shared by
// the Data Plane API client (raw path, default-server lines of services) and
// its test double (which must parse the raw text the client posts).
package cfgtext

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/haproxytech/client-native/v5/models"
)

type kind int

const (
	kFlag     kind = iota // keyword alone sets the field to "enabled"
	kInt                  // keyword <integer>
	kDuration             // keyword <duration>, stored in ms
	kString               // keyword <word>
)

// param describes one server option keyword and where it lives in ServerParams.
type param struct {
	word string
	kind kind
	get  func(p *models.ServerParams) any
	set  func(p *models.ServerParams, v any)
}

func i64(v any) *int64 { n := v.(int64); return &n }

// params lists the options the controller writes and the common ones an
// operator may put into a service's "options" line, in output order.
var params = []param{
	{"check", kFlag, func(p *models.ServerParams) any { return p.Check }, func(p *models.ServerParams, v any) { p.Check = v.(string) }},
	{"port", kInt, func(p *models.ServerParams) any { return p.HealthCheckPort }, func(p *models.ServerParams, v any) { p.HealthCheckPort = i64(v) }},
	{"track", kString, func(p *models.ServerParams) any { return p.Track }, func(p *models.ServerParams, v any) { p.Track = v.(string) }},
	{"addr", kString, func(p *models.ServerParams) any { return p.HealthCheckAddress }, func(p *models.ServerParams, v any) { p.HealthCheckAddress = v.(string) }},
	{"inter", kDuration, func(p *models.ServerParams) any { return p.Inter }, func(p *models.ServerParams, v any) { p.Inter = i64(v) }},
	{"fastinter", kDuration, func(p *models.ServerParams) any { return p.Fastinter }, func(p *models.ServerParams, v any) { p.Fastinter = i64(v) }},
	{"downinter", kDuration, func(p *models.ServerParams) any { return p.Downinter }, func(p *models.ServerParams, v any) { p.Downinter = i64(v) }},
	{"rise", kInt, func(p *models.ServerParams) any { return p.Rise }, func(p *models.ServerParams, v any) { p.Rise = i64(v) }},
	{"fall", kInt, func(p *models.ServerParams) any { return p.Fall }, func(p *models.ServerParams, v any) { p.Fall = i64(v) }},
	{"on-marked-down", kString, func(p *models.ServerParams) any { return p.OnMarkedDown }, func(p *models.ServerParams, v any) { p.OnMarkedDown = v.(string) }},
	{"on-marked-up", kString, func(p *models.ServerParams) any { return p.OnMarkedUp }, func(p *models.ServerParams, v any) { p.OnMarkedUp = v.(string) }},
	{"on-error", kString, func(p *models.ServerParams) any { return p.OnError }, func(p *models.ServerParams, v any) { p.OnError = v.(string) }},
	{"error-limit", kInt, func(p *models.ServerParams) any { return nilIfZero(p.ErrorLimit) }, func(p *models.ServerParams, v any) { p.ErrorLimit = v.(int64) }},
	{"slowstart", kDuration, func(p *models.ServerParams) any { return p.Slowstart }, func(p *models.ServerParams, v any) { p.Slowstart = i64(v) }},
	{"minconn", kInt, func(p *models.ServerParams) any { return p.Minconn }, func(p *models.ServerParams, v any) { p.Minconn = i64(v) }},
	{"maxconn", kInt, func(p *models.ServerParams) any { return p.Maxconn }, func(p *models.ServerParams, v any) { p.Maxconn = i64(v) }},
	{"maxqueue", kInt, func(p *models.ServerParams) any { return p.Maxqueue }, func(p *models.ServerParams, v any) { p.Maxqueue = i64(v) }},
	{"weight", kInt, func(p *models.ServerParams) any { return p.Weight }, func(p *models.ServerParams, v any) { p.Weight = i64(v) }},
	{"agent-check", kFlag, func(p *models.ServerParams) any { return p.AgentCheck }, func(p *models.ServerParams, v any) { p.AgentCheck = v.(string) }},
	{"agent-port", kInt, func(p *models.ServerParams) any { return p.AgentPort }, func(p *models.ServerParams, v any) { p.AgentPort = i64(v) }},
	{"agent-inter", kDuration, func(p *models.ServerParams) any { return p.AgentInter }, func(p *models.ServerParams, v any) { p.AgentInter = i64(v) }},
	{"resolvers", kString, func(p *models.ServerParams) any { return p.Resolvers }, func(p *models.ServerParams, v any) { p.Resolvers = v.(string) }},
	{"send-proxy", kFlag, func(p *models.ServerParams) any { return p.SendProxy }, func(p *models.ServerParams, v any) { p.SendProxy = v.(string) }},
	{"send-proxy-v2", kFlag, func(p *models.ServerParams) any { return p.SendProxyV2 }, func(p *models.ServerParams, v any) { p.SendProxyV2 = v.(string) }},
	{"backup", kFlag, func(p *models.ServerParams) any { return p.Backup }, func(p *models.ServerParams, v any) { p.Backup = v.(string) }},
	{"disabled", kFlag, func(p *models.ServerParams) any { return p.Maintenance }, func(p *models.ServerParams, v any) { p.Maintenance = v.(string) }},
}

func nilIfZero(n int64) *int64 {
	if n == 0 {
		return nil
	}
	return &n
}

var byWord = func() map[string]*param {
	m := make(map[string]*param, len(params))
	for i := range params {
		m[params[i].word] = &params[i]
	}
	return m
}()

// negations maps "no-X" keywords to the flag they clear.
var negations = map[string]string{"no-check": "check", "no-backup": "backup", "enabled": "disabled", "no-agent-check": "agent-check", "no-send-proxy": "send-proxy", "no-send-proxy-v2": "send-proxy-v2"}

// ParseServerParams parses server / default-server option words such as
// "inter 3s fastinter 1s ... weight 100 backup" into ServerParams. Durations
// are stored in milliseconds, as the Data Plane API does.
func ParseServerParams(words []string) (models.ServerParams, error) {
	var p models.ServerParams
	for i := 0; i < len(words); i++ {
		w := words[i]
		if flag, ok := negations[w]; ok {
			byWord[flag].set(&p, "disabled")
			continue
		}
		d, ok := byWord[w]
		if !ok {
			return p, fmt.Errorf("unsupported server option %q", w)
		}
		if d.kind == kFlag {
			d.set(&p, "enabled")
			continue
		}
		if i+1 >= len(words) {
			return p, fmt.Errorf("server option %q needs a value", w)
		}
		i++
		v := words[i]
		switch d.kind {
		case kInt:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return p, fmt.Errorf("server option %s: %q is not an integer", w, v)
			}
			d.set(&p, n)
		case kDuration:
			n, err := ParseDuration(v)
			if err != nil {
				return p, fmt.Errorf("server option %s: %w", w, err)
			}
			d.set(&p, n)
		case kString:
			d.set(&p, v)
		}
	}
	return p, nil
}

// FormatServerParams renders ServerParams as option words in a fixed order;
// fields this package does not know are not rendered.
func FormatServerParams(p models.ServerParams) []string {
	var out []string
	for i := range params {
		d := &params[i]
		switch v := d.get(&p).(type) {
		case string:
			switch {
			case v == "":
			case d.kind == kFlag && v == "enabled":
				out = append(out, d.word)
			case d.kind == kFlag && v == "disabled":
				if neg := negationOf(d.word); neg != "" {
					out = append(out, neg)
				}
			case d.kind != kFlag:
				out = append(out, d.word, v)
			}
		case *int64:
			if v == nil {
				continue
			}
			if d.kind == kDuration {
				out = append(out, d.word, FormatDuration(*v))
			} else {
				out = append(out, d.word, strconv.FormatInt(*v, 10))
			}
		}
	}
	return out
}

func negationOf(word string) string {
	for neg, w := range negations {
		if w == word {
			return neg
		}
	}
	return ""
}

// Canonical returns a comparable form of ServerParams restricted to the
// fields this package knows (so "30s" and "30000" compare equal).
func Canonical(p models.ServerParams) string {
	return strings.Join(FormatServerParams(p), " ")
}

// ParseDuration parses an HAProxy time value ("3s", "500ms", "1m", "30000"
// meaning ms) into milliseconds.
func ParseDuration(s string) (int64, error) {
	units := []struct {
		suffix string
		mul    int64
	}{{"ms", 1}, {"us", 0}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}}
	num, mul := s, int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mul = strings.TrimSuffix(s, u.suffix), u.mul
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad duration %q", s)
	}
	if mul == 0 { // microseconds: round up to whole ms as the API stores ms
		return (n + 999) / 1000, nil
	}
	return n * mul, nil
}

// FormatDuration renders milliseconds in the largest exact unit.
func FormatDuration(ms int64) string {
	switch {
	case ms != 0 && ms%3600000 == 0:
		return strconv.FormatInt(ms/3600000, 10) + "h"
	case ms != 0 && ms%60000 == 0:
		return strconv.FormatInt(ms/60000, 10) + "m"
	case ms != 0 && ms%1000 == 0:
		return strconv.FormatInt(ms/1000, 10) + "s"
	}
	return strconv.FormatInt(ms, 10) + "ms"
}

// SplitHostPort splits "addr:port" (port optional, "*" and IPv6 in brackets
// allowed). A missing port yields 0.
func SplitHostPort(s string) (string, int64, error) {
	i := strings.LastIndex(s, ":")
	if i < 0 || strings.HasSuffix(s, "]") {
		return strings.Trim(s, "[]"), 0, nil
	}
	host := strings.Trim(s[:i], "[]")
	if s[i+1:] == "" {
		return host, 0, nil
	}
	port, err := strconv.ParseInt(s[i+1:], 10, 64)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", s)
	}
	return host, port, nil
}

// JoinHostPort renders an address and port for bind/server lines.
func JoinHostPort(host string, port int64) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port == 0 {
		return host
	}
	return host + ":" + strconv.FormatInt(port, 10)
}

// ServerLine renders a "server" line's words after the keyword.
func ServerLine(s models.Server) []string {
	var port int64
	if s.Port != nil {
		port = *s.Port
	}
	return append([]string{s.Name, JoinHostPort(s.Address, port)}, FormatServerParams(s.ServerParams)...)
}

// ParseServerLine parses the words after the "server" keyword.
func ParseServerLine(words []string) (models.Server, error) {
	if len(words) < 2 {
		return models.Server{}, fmt.Errorf("server line needs a name and an address")
	}
	host, port, err := SplitHostPort(words[1])
	if err != nil {
		return models.Server{}, fmt.Errorf("server %s: %w", words[0], err)
	}
	p, err := ParseServerParams(words[2:])
	if err != nil {
		return models.Server{}, fmt.Errorf("server %s: %w", words[0], err)
	}
	s := models.Server{Name: words[0], Address: host, ServerParams: p}
	if port != 0 {
		s.Port = &port
	}
	return s, nil
}

// ParseServerParamsLenient is ParseServerParams for reading a file someone
// else may have written: a word it does not know is skipped (complete is
// then false), a known option with a bad value too.
func ParseServerParamsLenient(words []string) (p models.ServerParams, complete bool) {
	complete = true
	for i := 0; i < len(words); i++ {
		w := words[i]
		if flag, ok := negations[w]; ok {
			byWord[flag].set(&p, "disabled")
			continue
		}
		d, ok := byWord[w]
		if !ok {
			complete = false
			continue
		}
		if d.kind == kFlag {
			d.set(&p, "enabled")
			continue
		}
		if i+1 >= len(words) {
			complete = false
			break
		}
		i++
		v := words[i]
		switch d.kind {
		case kInt:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				complete = false
				continue
			}
			d.set(&p, n)
		case kDuration:
			n, err := ParseDuration(v)
			if err != nil {
				complete = false
				continue
			}
			d.set(&p, n)
		case kString:
			d.set(&p, v)
		}
	}
	return p, complete
}

package topology

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Pigsty versions: what `default-server` line a service without options
// gets, and how Patroni's REST API is reached, depend on them.
const (
	// VersionAuto decides from the inventory (see ParseOptions).
	VersionAuto = "auto"
	// V3 renders the fixed health-check timing of Pigsty v3's template.
	V3 = "v3"
	// V4 renders the timing of pg_rto's plan (Pigsty v4's template).
	V4 = "v4"
)

// PatroniCAFile is where Pigsty puts its CA on every node; HAProxy checks
// Patroni with it (check-ssl ca-file) when patroni_ssl_enabled is true.
// It is a variable only so that tests can point a real HAProxy at a
// throwaway CA (machines running tests have no /pg/cert); nothing else
// changes it.
var PatroniCAFile = "/pg/cert/ca.crt"

// ParseOptions tune ParseWith.
type ParseOptions struct {
	// PigstyVersion is "", VersionAuto, V3 or V4. Auto decides from the
	// inventory: all.vars.version (Pigsty writes it in every conf) says the
	// major version when set; otherwise a pg_rto that names a mode (fast,
	// norm, safe, wide: v4's; v3's pg_rto is a number of seconds) or a
	// pg_rto_plan anywhere in the inventory means v4; else v3.
	PigstyVersion string
}

// ValidVersion reports whether v is a PigstyVersion setting.
func ValidVersion(v string) bool {
	return v == "" || v == VersionAuto || v == V3 || v == V4
}

// LoadWith reads the inventory at path and parses it with ParseWith.
func LoadWith(path string, opts ParseOptions) (*Inventory, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	return ParseWith(path, data, opts)
}

// pgRtoPlan is Pigsty v4's default pg_rto_plan (roles/pgsql/defaults/main.yml,
// identical from v4.0.0 to v4.5.0): [ttl, loop, retry, start, margin, inter,
// fastinter, downinter, rise, fall] per mode.
func pgRtoPlan() map[string]any {
	return map[string]any{
		"fast": []any{20, 5, 5, 15, 5, "1s", "0.5s", "1s", 3, 3},
		"norm": []any{30, 5, 10, 25, 5, "2s", "1s", "2s", 3, 3},
		"safe": []any{60, 10, 20, 45, 10, "3s", "1.5s", "3s", 3, 3},
		"wide": []any{120, 20, 30, 95, 15, "4s", "2s", "4s", 3, 3},
	}
}

// rtoOptionsTail is what v4's template appends to the plan's timing.
const rtoOptionsTail = " on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100"

var versionRE = regexp.MustCompile(`^[vV]?(\d+)(\.|$)`)

// applyVersion decides the Pigsty version and every cluster's default-server
// line. cvs holds each cluster's merged variables (its first member's).
func (p *parser) applyVersion(opts ParseOptions, allVars layer, cvs map[*Cluster]layer) {
	inv := &p.inv
	switch opts.PigstyVersion {
	case V3, V4:
		inv.PigstyVersion = opts.PigstyVersion
		inv.VersionReason = "pigsty_version: " + opts.PigstyVersion + " (set in the controller)"
	default:
		inv.PigstyVersion, inv.VersionReason = detectVersion(allVars, p.inv.Clusters, cvs)
	}
	for _, c := range inv.Clusters {
		cv := cvs[c]
		c.PatroniSSL = truthy(cv["patroni_ssl_enabled"].val)
		if c.PatroniSSL {
			c.PatroniCAFile = PatroniCAFile
		}
		if inv.PigstyVersion != V4 {
			c.DefaultServer = defaultServerOptions
			continue
		}
		line, err := rtoOptions(cv)
		if err != nil {
			e := cv["pg_rto_plan"]
			if e.src == "" {
				e = cv["pg_rto"]
			}
			p.errf(nodeLine(e.node), where{cluster: c.Name}, "pg_rto_plan", "%v", err)
			continue
		}
		c.DefaultServer = line
	}
}

// detectVersion applies the auto rule (see ParseOptions.PigstyVersion).
func detectVersion(allVars layer, clusters []*Cluster, cvs map[*Cluster]layer) (string, string) {
	if e, ok := allVars["version"]; ok && e.val != nil {
		s := fmt.Sprint(e.val)
		if m := versionRE.FindStringSubmatch(s); m != nil {
			if major, _ := strconv.Atoi(m[1]); major >= 4 {
				return V4, fmt.Sprintf("all.vars.version is %s", s)
			}
			return V3, fmt.Sprintf("all.vars.version is %s", s)
		}
	}
	for _, c := range clusters {
		cv := cvs[c]
		if e := cv["pg_rto"]; e.val != nil {
			if s, isStr := e.val.(string); isStr {
				return V4, fmt.Sprintf("pg_rto is the mode %q (cluster %s)", s, c.Name)
			}
		}
		if e := cv["pg_rto_plan"]; e.val != nil && e.src != "" {
			return V4, fmt.Sprintf("pg_rto_plan is set (%s)", e.src)
		}
	}
	return V3, "no all.vars.version, no pg_rto mode, no pg_rto_plan"
}

// rtoOptions is v4's default-server line: the plan entry of pg_rto (norm
// when pg_rto names no entry), fields 5-9 as inter, fastinter, downinter,
// rise and fall.
func rtoOptions(cv layer) (string, error) {
	planVal := any(pgRtoPlan())
	if e := cv["pg_rto_plan"]; e.val != nil {
		planVal = e.val
	}
	plan, ok := planVal.(map[string]any)
	if !ok {
		return "", fmt.Errorf("must be a mapping of mode -> [ttl, loop, retry, start, margin, inter, fastinter, downinter, rise, fall], got %s", describe(planVal))
	}
	mode := "norm"
	if e := cv["pg_rto"]; e.val != nil {
		if s, isStr := e.val.(string); isStr {
			if _, in := plan[s]; in {
				mode = s
			}
		}
	}
	entry, ok := plan[mode]
	if !ok {
		modes := make([]string, 0, len(plan))
		for k := range plan {
			modes = append(modes, k)
		}
		sort.Strings(modes)
		return "", fmt.Errorf("no entry %q (pg_rto %s falls back to norm; the plan has %s)", mode, describe(cv["pg_rto"].val), strings.Join(modes, ", "))
	}
	list, ok := entry.([]any)
	if !ok || len(list) < 10 {
		return "", fmt.Errorf("%s: want a list of 10 values [ttl, loop, retry, start, margin, inter, fastinter, downinter, rise, fall], got %s", mode, describe(entry))
	}
	names := []string{"inter", "fastinter", "downinter", "rise", "fall"}
	var b strings.Builder
	for i, name := range names {
		v := list[5+i]
		var s string
		var err error
		if i < 3 {
			s, err = haproxyTime(v)
		} else {
			s, err = haproxyCount(v)
		}
		if err != nil {
			return "", fmt.Errorf("%s[%d] (%s): %v", mode, 5+i, name, err)
		}
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(name + " " + s)
	}
	return b.String() + rtoOptionsTail, nil
}

var timeRE = regexp.MustCompile(`^(\d+)(?:\.(\d+))?(us|ms|s|m|h|d)?$`)

// smaller is the next smaller HAProxy time unit and its factor; "" is ms.
var smaller = map[string]struct {
	unit   string
	factor int64
}{"": {"us", 1000}, "ms": {"us", 1000}, "s": {"ms", 1000}, "m": {"s", 60}, "h": {"m", 60}, "d": {"h", 24}}

// haproxyTime renders a plan's time as Pigsty does ('2s' stays 2s, 3 is 3,
// i.e. milliseconds), except that HAProxy takes no fractions: Pigsty's own
// '0.5s' (fast) and '1.5s' (safe) make HAProxy 2.6 refuse the file
// ("unexpected character '.'"), so a fraction is written in the next smaller
// unit (500ms, 1500ms), which is the same time.
func haproxyTime(v any) (string, error) {
	var s string
	switch x := v.(type) {
	case string:
		s = strings.TrimSpace(x)
	case int, int64, uint64:
		s = fmt.Sprint(x)
	case float64:
		s = strconv.FormatFloat(x, 'f', -1, 64)
	default:
		return "", fmt.Errorf("want a time such as 2s or 500ms, got %s", describe(v))
	}
	m := timeRE.FindStringSubmatch(s)
	if m == nil {
		return "", fmt.Errorf("want a time such as 2s or 500ms, got %q", s)
	}
	if m[2] == "" {
		return s, nil
	}
	sm := smaller[m[3]]
	whole, _ := strconv.ParseInt(m[1], 10, 64)
	frac := m[2]
	var fracVal int64
	scale := int64(1)
	for range frac {
		scale *= 10
	}
	fracVal, _ = strconv.ParseInt(frac, 10, 64)
	if len(frac) > 9 || (fracVal*sm.factor)%scale != 0 {
		return "", fmt.Errorf("time %q is not a whole number of %s", s, sm.unit)
	}
	return strconv.FormatInt(whole*sm.factor+fracVal*sm.factor/scale, 10) + sm.unit, nil
}

// haproxyCount renders rise/fall: a positive integer.
func haproxyCount(v any) (string, error) {
	if n, ok := asInt(v); ok && n > 0 {
		return strconv.Itoa(n), nil
	}
	if s, ok := v.(string); ok {
		if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && n > 0 {
			return strconv.Itoa(n), nil
		}
	}
	return "", fmt.Errorf("want a positive integer, got %s", describe(v))
}

// truthy is Ansible's |bool for the values an inventory holds.
func truthy(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "true", "yes", "on", "1", "y", "t":
			return true
		}
	case int:
		return x == 1
	case float64:
		return x == 1
	}
	return false
}

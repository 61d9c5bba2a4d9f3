package haproxy

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

// probeBinds tries to bind, for an instant, the address of every desired
// service that the running HAProxy does not listen on yet (a new service or
// a changed bind). A reload whose new frontend cannot bind fails as a whole
// and HAProxy's master does not say which one; probing first names the
// service (and its cluster) and keeps the rest of the change set going.
// Only "address in use" and "address not available" count: anything else
// (e.g. a privileged port the controller's user may not bind, but HAProxy
// may) is left to the reload.
func probeBinds(desired []services.Service, current map[string]*target.Backend) error {
	held := map[string]bool{} // addresses the running HAProxy listens on
	for _, b := range current {
		if b.HasFrontend && b.Settings != nil {
			held[b.Settings.IP+":"+strconv.Itoa(b.Settings.Port)] = true
		}
	}
	var problems []string
	for _, s := range desired {
		if cur := current[s.Name]; cur != nil && cur.HasFrontend && cur.Settings == nil {
			continue // bind unknown (no file of ours yet): leave it to the reload
		}
		if held[s.IP+":"+strconv.Itoa(s.Port)] {
			continue // HAProxy holds it already
		}
		if p := target.BindProblem(s); p != "" {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("new config not applied (nothing changed): %s", strings.Join(problems, "; "))
	}
	return nil
}

var alertLine = regexp.MustCompile(`\[[^\]\s]+:(\d+)\]`)

// nameSections adds to a `haproxy -c` error the sections its alerts point
// at (HAProxy names the file and line, not the section), so the operator
// and the controller's hold-back report see which service is refused.
func nameSections(err error, cfg []byte) error {
	lines := strings.Split(string(cfg), "\n")
	seen := map[string]bool{}
	var names []string
	for _, m := range alertLine.FindAllStringSubmatch(err.Error(), -1) {
		n, _ := strconv.Atoi(m[1])
		if sec := sectionAt(lines, n); sec != "" && !seen[sec] {
			seen[sec] = true
			names = append(names, sec)
		}
	}
	if len(names) == 0 {
		return err
	}
	sort.Strings(names)
	return fmt.Errorf("%w (in %s)", err, strings.Join(names, ", "))
}

// sectionAt returns "frontend X"/"backend X" enclosing 1-based line n.
func sectionAt(lines []string, n int) string {
	if n < 1 || n > len(lines) {
		return ""
	}
	for i := n - 1; i >= 0; i-- {
		f := strings.Fields(lines[i])
		if len(f) >= 1 && !strings.HasPrefix(lines[i], " ") && !strings.HasPrefix(lines[i], "\t") {
			switch f[0] {
			case "frontend", "backend", "listen":
				if len(f) >= 2 {
					return f[0] + " " + f[1]
				}
			case "global", "defaults", "peers", "resolvers", "userlist", "program", "mailers", "cache":
				return f[0]
			}
		}
	}
	return ""
}

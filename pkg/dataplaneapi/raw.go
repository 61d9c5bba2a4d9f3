package dataplaneapi

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/haproxytech/client-native/v5/models"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/internal/cfgtext"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// sectionKeywords start a section in haproxy.cfg.
var sectionKeywords = map[string]bool{
	"global": true, "defaults": true, "frontend": true, "backend": true, "listen": true,
	"userlist": true, "peers": true, "resolvers": true, "mailers": true, "program": true,
	"http-errors": true, "ring": true, "cache": true, "log-forward": true, "fcgi-app": true,
	"crt-store": true, "traces": true,
}

// block is one section of a configuration file, kept verbatim.
type block struct {
	kind, name string
	from       string // text after the name ("from unnamed_defaults_1"), kept on replace
	lines      []string
}

// splitSections cuts a configuration into a preamble and sections.
func splitSections(text string) (pre []string, blocks []*block) {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	var cur *block
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 && l[0] != ' ' && l[0] != '\t' && sectionKeywords[f[0]] {
			cur = &block{kind: f[0], lines: []string{l}}
			if len(f) > 1 {
				cur.name = f[1]
				cur.from = strings.Join(f[2:], " ")
			}
			blocks = append(blocks, cur)
			continue
		}
		if cur == nil {
			pre = append(pre, l)
		} else {
			cur.lines = append(cur.lines, l)
		}
	}
	return pre, blocks
}

// ReplaceSections returns text with the frontend and backend sections named
// after desired services replaced by their rendering (new ones appended),
// every other section, comment and the global/defaults kept as they are.
// current, when non-nil, gives servers whose unmanaged options survive.
func ReplaceSections(text string, desired []services.Service, current ServerLookup) (string, error) {
	pre, blocks := splitSections(text)
	want := map[string]services.Service{}
	for _, d := range desired {
		want[d.Name] = d
	}
	done := map[string]bool{}
	var out []string
	out = append(out, pre...)
	for _, b := range blocks {
		d, ok := want[b.name]
		if ok && (b.kind == "frontend" || b.kind == "backend") {
			sec, err := renderSection(b.kind, d, b.from, current)
			if err != nil {
				return "", err
			}
			out = append(out, sec...)
			out = append(out, "")
			done[b.kind+" "+b.name] = true
			continue
		}
		if ok && b.kind == "listen" {
			return "", fmt.Errorf("service %s: a listen section of that name exists; the Data Plane API cannot manage listen sections (use a frontend+backend pair)", d.Name)
		}
		out = append(out, b.lines...)
	}
	for _, d := range desired {
		for _, kind := range []string{"frontend", "backend"} {
			if done[kind+" "+d.Name] {
				continue
			}
			sec, err := renderSection(kind, d, "", current)
			if err != nil {
				return "", err
			}
			if len(out) > 0 && strings.TrimSpace(out[len(out)-1]) != "" {
				out = append(out, "")
			}
			out = append(out, sec...)
			out = append(out, "")
		}
	}
	return strings.TrimRight(strings.Join(out, "\n"), "\n") + "\n", nil
}

// ServerLookup returns the server a rendered line is built on (its options
// the controller does not manage are kept), nil for a new one. A nil
// ServerLookup knows no server.
type ServerLookup func(backend, name string) *models.Server

func renderSection(kind string, d services.Service, from string, cur ServerLookup) ([]string, error) {
	header := kind + " " + d.Name
	if from != "" {
		header += " " + from
	}
	if kind == "frontend" {
		return RenderFrontend(d, header), nil
	}
	return RenderBackend(d, header, cur)
}

// RenderFrontend renders a service's frontend section (header included).
func RenderFrontend(d services.Service, header string) []string {
	out := []string{header, "  mode tcp"}
	if d.Maxconn > 0 {
		out = append(out, "  maxconn "+strconv.Itoa(d.Maxconn))
	}
	out = append(out,
		"  bind "+cfgtext.JoinHostPort(bindAddress(d.IP), int64(d.Port))+" name "+d.Name,
		"  default_backend "+d.Name)
	return out
}

// RenderBackend renders a service's backend section (header included).
func RenderBackend(d services.Service, header string, cur ServerLookup) ([]string, error) {
	check := d.Check
	if check == "" {
		check = "/"
	}
	out := []string{header, "  mode tcp", "  balance " + balanceOf(d), "  option httpchk", "  option http-keep-alive",
		"  http-check send meth OPTIONS uri " + check, "  http-check expect status 200"}
	ds, err := defaultServerOf(d)
	if err != nil {
		return nil, err
	}
	if ds != nil {
		if words := cfgtext.FormatServerParams(ds.ServerParams); len(words) > 0 {
			out = append(out, "  default-server "+strings.Join(words, " "))
		}
	}
	srv := append([]services.Server(nil), d.Servers...)
	sort.Slice(srv, func(i, j int) bool { return srv[i].Name < srv[j].Name })
	for _, s := range srv {
		var base *models.Server
		if cur != nil {
			base = cur(d.Name, s.Name)
		}
		out = append(out, "  server "+strings.Join(cfgtext.ServerLine(*serverModel(s, base)), " "))
	}
	return out, nil
}

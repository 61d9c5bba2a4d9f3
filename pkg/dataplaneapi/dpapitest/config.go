package dpapitest

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/haproxytech/client-native/v5/models"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/internal/cfgtext"
)

// Config is the double's in-memory configuration: what the real API would
// parse out of haproxy.cfg. Sections it does not model (listen, userlist,
// ...) are kept verbatim in Others, as the real API keeps them in the file.
type Config struct {
	Preamble  []string
	Global    []string
	Defaults  []Defaults
	Frontends []*Frontend
	Backends  []*Backend
	Others    [][]string
}

// Defaults is one defaults section.
type Defaults struct {
	Name  string
	Lines []string
}

// Frontend is a frontend with its binds; Extra holds lines not modelled.
type Frontend struct {
	Model models.Frontend
	Binds []*models.Bind
	Extra []string
}

// Backend is a backend with its http-check rules and servers.
type Backend struct {
	Model   models.Backend
	Checks  []*models.HTTPCheck
	Servers []*models.Server
	Extra   []string
}

func (c *Config) clone() *Config {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("dpapitest: clone config: %v", err)) // models always marshal
	}
	var out Config
	if err := json.Unmarshal(b, &out); err != nil {
		panic(fmt.Sprintf("dpapitest: clone config: %v", err))
	}
	return &out
}

func (c *Config) frontend(name string) *Frontend {
	for _, f := range c.Frontends {
		if f.Model.Name == name {
			return f
		}
	}
	return nil
}

func (c *Config) backend(name string) *Backend {
	for _, b := range c.Backends {
		if b.Model.Name == name {
			return b
		}
	}
	return nil
}

func (b *Backend) server(name string) (int, *models.Server) {
	for i, s := range b.Servers {
		if s.Name == name {
			return i, s
		}
	}
	return -1, nil
}

// canonicalize does what the real API does when it saves: anonymous defaults
// get a name and every proxy a "from" line (3.2.0 gives "from" only to the
// proxies of the file it started with, not to those created through it:
// addFrom false).
func (c *Config) canonicalize(addFrom ...bool) {
	for i := range c.Defaults {
		if c.Defaults[i].Name == "" {
			c.Defaults[i].Name = "unnamed_defaults_" + strconv.Itoa(i+1)
		}
	}
	if len(c.Defaults) == 0 || (len(addFrom) > 0 && !addFrom[0]) {
		return
	}
	last := c.Defaults[len(c.Defaults)-1].Name
	for _, f := range c.Frontends {
		if f.Model.From == "" {
			f.Model.From = last
		}
	}
	for _, b := range c.Backends {
		if b.Model.From == "" {
			b.Model.From = last
		}
	}
}

var sectionKeywords = map[string]bool{
	"global": true, "defaults": true, "frontend": true, "backend": true, "listen": true,
	"userlist": true, "peers": true, "resolvers": true, "mailers": true, "program": true,
	"http-errors": true, "ring": true, "cache": true, "log-forward": true, "fcgi-app": true,
}

// ParseConfig parses haproxy.cfg text the way the double needs it.
func ParseConfig(text string) (*Config, error) {
	c := &Config{}
	var kind string
	var other []string
	var fe *Frontend
	var be *Backend
	flush := func() {
		if other != nil {
			c.Others = append(c.Others, other)
			other = nil
		}
	}
	for n, l := range strings.Split(text, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && l[0] != ' ' && l[0] != '\t' && sectionKeywords[f[0]] {
			flush()
			kind, fe, be = f[0], nil, nil
			name, from := "", ""
			if len(f) > 1 {
				name = f[1]
			}
			if len(f) > 3 && f[2] == "from" {
				from = f[3]
			}
			switch kind {
			case "global":
			case "defaults":
				c.Defaults = append(c.Defaults, Defaults{Name: name})
			case "frontend":
				fe = &Frontend{Model: models.Frontend{Name: name, From: from}}
				c.Frontends = append(c.Frontends, fe)
			case "backend":
				be = &Backend{Model: models.Backend{Name: name, From: from}}
				c.Backends = append(c.Backends, be)
			default:
				other = []string{l}
			}
			continue
		}
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			if kind == "" && !strings.HasPrefix(l, "# _") && strings.TrimSpace(l) != "" {
				c.Preamble = append(c.Preamble, l)
			}
			if other != nil {
				other = append(other, l)
			}
			continue
		}
		line := strings.TrimSpace(l)
		var err error
		switch kind {
		case "":
			return nil, fmt.Errorf("line %d: %q outside any section", n+1, line)
		case "global":
			c.Global = append(c.Global, line)
		case "defaults":
			d := &c.Defaults[len(c.Defaults)-1]
			d.Lines = append(d.Lines, line)
		case "frontend":
			err = parseFrontendLine(fe, f)
		case "backend":
			err = parseBackendLine(be, f)
		default:
			other = append(other, l)
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n+1, err)
		}
	}
	flush()
	return c, nil
}

func i64(n int64) *int64 { return &n }

func parseFrontendLine(fe *Frontend, f []string) error {
	switch f[0] {
	case "mode":
		fe.Model.Mode = arg(f, 1)
	case "maxconn":
		n, err := strconv.ParseInt(arg(f, 1), 10, 64)
		if err != nil {
			return fmt.Errorf("frontend %s: bad maxconn", fe.Model.Name)
		}
		fe.Model.Maxconn = &n
	case "default_backend":
		fe.Model.DefaultBackend = arg(f, 1)
	case "bind":
		host, port, err := cfgtext.SplitHostPort(arg(f, 1))
		if err != nil {
			return fmt.Errorf("frontend %s: %w", fe.Model.Name, err)
		}
		b := &models.Bind{Address: host}
		if port != 0 {
			b.Port = &port
		}
		b.Name = host + ":" + strconv.FormatInt(port, 10)
		for i := 2; i+1 < len(f); i++ {
			if f[i] == "name" {
				b.Name = f[i+1]
			}
		}
		fe.Binds = append(fe.Binds, b)
	default:
		fe.Extra = append(fe.Extra, strings.Join(f, " "))
	}
	return nil
}

func arg(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}

func parseBackendLine(be *Backend, f []string) error {
	line := strings.Join(f, " ")
	switch {
	case f[0] == "mode":
		be.Model.Mode = arg(f, 1)
	case f[0] == "balance":
		alg := arg(f, 1)
		be.Model.Balance = &models.Balance{Algorithm: &alg}
	case line == "option httpchk" || (f[0] == "option" && arg(f, 1) == "httpchk"):
		be.Model.AdvCheck = "httpchk"
		if len(f) >= 4 {
			be.Model.HttpchkParams = &models.HttpchkParams{Method: f[2], URI: f[3]}
		}
	case line == "option http-keep-alive":
		be.Model.HTTPConnectionMode = "http-keep-alive"
	case f[0] == "http-check" && arg(f, 1) == "send":
		hc := &models.HTTPCheck{Type: "send"}
		for i := 2; i+1 < len(f); i += 2 {
			switch f[i] {
			case "meth":
				hc.Method = f[i+1]
			case "uri":
				hc.URI = f[i+1]
			}
		}
		hc.Index = i64(int64(len(be.Checks)))
		be.Checks = append(be.Checks, hc)
	case f[0] == "http-check" && arg(f, 1) == "expect" && len(f) >= 4:
		hc := &models.HTTPCheck{Type: "expect", Match: f[2], Pattern: f[3], Index: i64(int64(len(be.Checks)))}
		be.Checks = append(be.Checks, hc)
	case f[0] == "default-server":
		p, err := cfgtext.ParseServerParams(f[1:])
		if err != nil {
			return fmt.Errorf("backend %s default-server: %w", be.Model.Name, err)
		}
		be.Model.DefaultServer = &models.DefaultServer{ServerParams: p}
	case f[0] == "server":
		s, err := cfgtext.ParseServerLine(f[1:])
		if err != nil {
			return fmt.Errorf("backend %s: %w", be.Model.Name, err)
		}
		be.Servers = append(be.Servers, &s)
	default:
		be.Extra = append(be.Extra, line)
	}
	return nil
}

// Render writes the configuration in the API's canonical form (version
// header, named defaults, "from" on proxies, sections in a fixed order).
func (c *Config) Render(version int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# _version=%d\n", version)
	for _, l := range c.Preamble {
		b.WriteString(l + "\n")
	}
	if len(c.Global) > 0 {
		b.WriteString("global\n")
		for _, l := range c.Global {
			b.WriteString("  " + l + "\n")
		}
		b.WriteString("\n")
	}
	for _, d := range c.Defaults {
		b.WriteString(strings.TrimSpace("defaults "+d.Name) + "\n")
		for _, l := range d.Lines {
			b.WriteString("  " + l + "\n")
		}
		b.WriteString("\n")
	}
	for _, f := range c.Frontends {
		b.WriteString(header("frontend", f.Model.Name, f.Model.From))
		line(&b, "mode", f.Model.Mode)
		if f.Model.Maxconn != nil {
			line(&b, "maxconn", strconv.FormatInt(*f.Model.Maxconn, 10))
		}
		for _, bd := range f.Binds {
			var port int64
			if bd.Port != nil {
				port = *bd.Port
			}
			line(&b, "bind", cfgtext.JoinHostPort(bd.Address, port)+" name "+bd.Name)
		}
		for _, l := range f.Extra {
			b.WriteString("  " + l + "\n")
		}
		line(&b, "default_backend", f.Model.DefaultBackend)
		b.WriteString("\n")
	}
	for _, be := range c.Backends {
		m := be.Model
		b.WriteString(header("backend", m.Name, m.From))
		line(&b, "mode", m.Mode)
		if m.Balance != nil && m.Balance.Algorithm != nil {
			line(&b, "balance", *m.Balance.Algorithm)
		}
		if m.AdvCheck != "" {
			opt := m.AdvCheck
			if m.HttpchkParams != nil && m.HttpchkParams.Method != "" {
				opt += " " + m.HttpchkParams.Method + " " + m.HttpchkParams.URI
			}
			line(&b, "option", opt)
		}
		if m.HTTPConnectionMode != "" {
			line(&b, "option", m.HTTPConnectionMode)
		}
		for _, hc := range be.Checks {
			switch hc.Type {
			case "send":
				line(&b, "http-check", strings.TrimSpace("send meth "+hc.Method+" uri "+hc.URI))
			case "expect":
				line(&b, "http-check", "expect "+hc.Match+" "+hc.Pattern)
			default:
				line(&b, "http-check", hc.Type)
			}
		}
		for _, l := range be.Extra {
			b.WriteString("  " + l + "\n")
		}
		if m.DefaultServer != nil {
			line(&b, "default-server", strings.Join(cfgtext.FormatServerParams(m.DefaultServer.ServerParams), " "))
		}
		for _, s := range be.Servers {
			line(&b, "server", strings.Join(cfgtext.ServerLine(*s), " "))
		}
		b.WriteString("\n")
	}
	for _, o := range c.Others {
		for _, l := range o {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func header(kind, name, from string) string {
	h := kind + " " + name
	if from != "" {
		h += " from " + from
	}
	return h + "\n"
}

func line(b *strings.Builder, kw, v string) {
	if v == "" {
		return
	}
	b.WriteString("  " + kw + " " + v + "\n")
}

// global returns the parsed view of the global section.
func (c *Config) global() *models.Global {
	g := &models.Global{}
	for _, l := range c.Global {
		f := strings.Fields(l)
		switch f[0] {
		case "daemon":
			g.Daemon = "enabled"
		case "maxconn":
			g.Maxconn, _ = strconv.ParseInt(arg(f, 1), 10, 64)
		case "server-state-file":
			g.ServerStateFile = arg(f, 1)
		case "server-state-base":
			g.ServerStateBase = arg(f, 1)
		}
	}
	return g
}

// defaults returns the parsed view of the first defaults section.
func (c *Config) defaults() *models.Defaults {
	d := &models.Defaults{}
	if len(c.Defaults) == 0 {
		return d
	}
	d.Name = c.Defaults[0].Name
	for _, l := range c.Defaults[0].Lines {
		f := strings.Fields(l)
		switch f[0] {
		case "mode":
			d.Mode = arg(f, 1)
		case "load-server-state-from-file":
			d.LoadServerStateFromFile = arg(f, 1)
		case "maxconn":
			n, _ := strconv.ParseInt(arg(f, 1), 10, 64)
			d.Maxconn = &n
		}
	}
	return d
}

// backendView is a backend as GET answers it: the stored model plus the
// fields the API derives from the file.
func backendView(b *Backend) models.Backend {
	m := b.Model
	if m.AdvCheck == "httpchk" && m.HttpchkParams == nil {
		m.HttpchkParams = &models.HttpchkParams{}
	}
	if m.HTTPConnectionMode == "http-keep-alive" {
		m.HTTPKeepAlive = "enabled"
	}
	for _, hc := range b.Checks {
		if hc.Type == "send" {
			cp := *hc
			m.HTTPCheck = &cp
			break
		}
	}
	return m
}

package dataplaneapi

import (
	"fmt"
	"strings"
	"sync"

	"github.com/haproxytech/client-native/v5/models"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/internal/cfgtext"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/target"
)

func i64p(n int) *int64 { v := int64(n); return &v }

func bindAddress(ip string) string {
	if ip == "" {
		return "*"
	}
	return ip
}

func balanceOf(s services.Service) string {
	if s.Balance == "" {
		return "roundrobin"
	}
	return s.Balance
}

// defaultServerOf parses a service's default-server options.
func defaultServerOf(s services.Service) (*models.DefaultServer, error) {
	if strings.TrimSpace(s.DefaultServer) == "" {
		return nil, nil
	}
	e := dsParsed.get(s.DefaultServer, true)
	if e.err != nil {
		return nil, fmt.Errorf("service %s: default_server: %w", s.Name, e.err)
	}
	return e.ds, nil // shared: models are never modified in place
}

// dsParsed and dsLenient remember default-server option texts parsed (strict,
// as the inventory's; lenient, as a file's): a fleet shares a few texts, and
// every apply compares 4,000 backends' (at 1,000 clusters parsing them took
// half of an apply's own time). The parsed params are shared: models are
// never modified in place.
var dsParsed, dsLenient = &dsMemo{}, &dsMemo{}

type dsEntry struct {
	params models.ServerParams
	canon  string // cfgtext.Canonical(params)
	err    error
	// ds is params as the backend's default server, shared by every
	// snapshot backend whose line has this text (models are never
	// modified in place): 1.2 KB per backend, 4.9 MB of 4,000 backends.
	ds *models.DefaultServer
}

type dsMemo struct {
	mu sync.Mutex
	m  map[string]*dsEntry
}

// dsMemoMax bounds a memo (distinct texts); past it the memo starts over.
const dsMemoMax = 4096

func (c *dsMemo) get(text string, strict bool) *dsEntry {
	c.mu.Lock()
	e := c.m[text]
	c.mu.Unlock()
	if e != nil {
		return e
	}
	e = &dsEntry{}
	if strict {
		e.params, e.err = cfgtext.ParseServerParams(strings.Fields(text))
	} else {
		e.params, _ = cfgtext.ParseServerParamsLenient(strings.Fields(text))
	}
	if e.err == nil {
		e.canon = cfgtext.Canonical(e.params)
	}
	e.ds = &models.DefaultServer{ServerParams: e.params}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= dsMemoMax {
		c.m = map[string]*dsEntry{}
	}
	c.m[text] = e
	c.mu.Unlock()
	return e
}

// backendModel is the backend the controller wants for s; base (the current
// backend, may be nil) keeps the fields the controller does not manage.
func backendModel(s services.Service, base *models.Backend) (*models.Backend, error) {
	ds, err := defaultServerOf(s)
	if err != nil {
		return nil, err
	}
	b := &models.Backend{}
	if base != nil {
		cp := *base
		b = &cp
	}
	alg := balanceOf(s)
	b.Name = s.Name
	b.Mode = "tcp"
	b.Balance = &models.Balance{Algorithm: &alg}
	b.AdvCheck = "httpchk"
	b.HTTPConnectionMode = "http-keep-alive"
	b.HTTPKeepAlive = ""
	b.DefaultServer = ds
	// The deprecated single http-check field mirrors the first rule; the
	// rules themselves are separate objects.
	b.HTTPCheck = nil
	return b, nil
}

func httpChecksOf(s services.Service) []*models.HTTPCheck {
	check := s.Check
	if check == "" {
		check = "/"
	}
	return []*models.HTTPCheck{
		{Index: i64p(0), Type: "send", Method: "OPTIONS", URI: check},
		{Index: i64p(1), Type: "expect", Match: "status", Pattern: "200"},
	}
}

func frontendModel(s services.Service, base *models.Frontend) *models.Frontend {
	f := &models.Frontend{}
	if base != nil {
		cp := *base
		f = &cp
	}
	f.Name = s.Name
	f.Mode = "tcp"
	f.DefaultBackend = s.Name
	f.Maxconn = nil
	if s.Maxconn > 0 {
		f.Maxconn = i64p(s.Maxconn)
	}
	return f
}

func bindModel(s services.Service, base *models.Bind) *models.Bind {
	b := &models.Bind{}
	if base != nil {
		cp := *base
		b = &cp
	} else {
		b.Name = s.Name
	}
	b.Address = bindAddress(s.IP)
	b.Port = i64p(s.Port)
	return b
}

// serverModel applies the managed fields of want onto base (nil: a new server).
func serverModel(want services.Server, base *models.Server) *models.Server {
	m := &models.Server{}
	if base != nil {
		cp := *base
		m = &cp
	}
	m.Name = want.Name
	m.Address = want.Address
	m.Port = i64p(want.Port)
	m.Check = "enabled"
	m.HealthCheckPort = nil
	if want.CheckPort > 0 {
		m.HealthCheckPort = i64p(want.CheckPort)
	}
	m.Weight = i64p(want.Weight)
	// patroni_ssl_enabled: check Patroni over TLS with Pigsty's CA.
	m.CheckSsl, m.SslCafile = "", ""
	if want.CheckSSL {
		m.CheckSsl = "enabled"
		m.SslCafile = want.CAFile
	}
	// A tracking server has no check of its own (HAProxy refuses both).
	m.Track = want.Track
	if want.Track != "" {
		m.Check, m.HealthCheckPort, m.CheckSsl, m.SslCafile = "", nil, "", ""
	}
	// "backup" absent means not backup; the API renders "disabled" as
	// no-backup, so only ever send "enabled" or nothing.
	m.Backup = ""
	if want.Backup {
		m.Backup = "enabled"
	}
	// Twins (services.LayoutTwins, Member set): an inactive twin is
	// `disabled` in the file, an active one not. Other servers keep
	// whatever maintenance the file has.
	if want.Member != "" {
		m.Maintenance = ""
		if want.Disabled {
			m.Maintenance = "enabled"
		}
	}
	return m
}

// checkOf returns the check path the rules implement, or a description that
// cannot equal any path when they are not the controller's two rules.
func checkOf(adv string, rules models.HTTPChecks) string {
	if adv != "httpchk" {
		return "(no option httpchk)"
	}
	if len(rules) == 2 && rules[0] != nil && rules[1] != nil &&
		rules[0].Type == "send" && strings.EqualFold(rules[0].Method, "OPTIONS") &&
		rules[1].Type == "expect" && rules[1].Match == "status" && rules[1].Pattern == "200" {
		return rules[0].URI
	}
	var parts []string
	for _, r := range rules {
		if r == nil {
			continue
		}
		parts = append(parts, strings.TrimSpace(fmt.Sprintf("%s %s %s %s %s", r.Type, r.Method, r.URI, r.Match, r.Pattern)))
	}
	return "(http-check " + strings.Join(parts, "; ") + ")"
}

// settingsOf builds the current settings of a pair. Where a value is
// equivalent to what d wants but spelled differently (ip "" vs "*", "30s" vs
// 30000 ms), d's spelling is reported so the pure diff sees no change.
// dsText is the text of the backend's default-server line ("" none).
func settingsOf(d services.Service, fe *feRec, bind *bindRec, be *beRec, checks models.HTTPChecks, dsText string) *target.Settings {
	want := target.SettingsOf(d)
	s := &target.Settings{}
	if bind != nil {
		s.IP = bind.address
		if bind.port >= 0 {
			s.Port = int(bind.port)
		}
	} else {
		s.IP = "(no bind)"
	}
	if s.IP == bindAddress(d.IP) {
		s.IP = want.IP
	}
	if fe != nil {
		if fe.maxconn >= 0 {
			s.Maxconn = int(fe.maxconn)
		}
		if fe.defaultBackend != d.Name || fe.mode != "tcp" {
			// Not our frontend's shape: make the diff replace it.
			s.Maxconn = -1
		}
	}
	s.Check = checkOf(be.advCheck, checks)
	if s.Check == d.Check || (d.Check == "" && s.Check == "/") {
		s.Check = want.Check
	}
	if be.balance != nil {
		s.Balance = *be.balance
	}
	if s.Balance == balanceOf(d) && be.mode == "tcp" {
		s.Balance = want.Balance
	}
	cur := ""
	if be.ds != nil {
		cur = dsLenient.get(dsText, false).canon
	}
	s.DefaultServer = cur
	wantCanon, ok := "", true
	if strings.TrimSpace(d.DefaultServer) != "" {
		e := dsParsed.get(d.DefaultServer, true)
		wantCanon, ok = e.canon, e.err == nil
	}
	if ok && wantCanon == cur {
		s.DefaultServer = want.DefaultServer
	}
	return s
}

func defaultWeight(be *beRec) int {
	if be != nil && be.ds != nil && be.ds.Weight != nil {
		return int(*be.ds.Weight)
	}
	return 1 // HAProxy's default
}

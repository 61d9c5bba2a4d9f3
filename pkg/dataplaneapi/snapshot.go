package dataplaneapi

import (
	"bytes"
	"compress/gzip"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/haproxytech/client-native/v5/models"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/internal/cfgtext"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// snapshot is the whole configuration as one GET of the raw file found it
// at one version, parsed here: frontends, binds, backends, http-check rules
// and servers, and whether server state survives reloads. A Target keeps
// the last one and reuses it while the API's version has not moved, so an
// apply or resync with nothing changed costs one GET of the version, and a
// change costs that GET plus its writes, whatever the size of the fleet.
//
// The parser reads the lines the controller manages (and HAProxy's common
// server options, as cfgtext knows them). Lines it does not know are not
// lost: a whole-object PUT of a section or server that had such lines is
// built on a GET of that one object instead (see partial), and the raw path
// keeps other sections verbatim.
type snapshot struct {
	version int64
	// packed is the file as read (or as posted), gzip-compressed (a
	// 1,000-cluster file of 3.2 MB kept whole between applies was ~8 % of
	// the controller's live heap; packed it is ~0.1 MB), nil once the
	// snapshot was patched after a per-object write: the raw path then
	// reads it anew. fileText unpacks it; the records below never point
	// into the text (see parseSnapshot's own).
	packed  []byte
	readAt  time.Time
	fe      map[string]*feRec
	bind    map[string]*bindRec // the frontend's bind named like it, else its first
	be      map[string]*beRec
	checks  map[string]models.HTTPChecks
	servers map[string]map[string]*srvRec
	// dsText is each backend's default-server options as written (compared
	// through a memo of their canonical forms: see dsLenient).
	dsText map[string]string
	// partial lists "backend/server" whose line had options cfgtext does not know.
	partial map[string]bool
	// statePreserved: server-state-file in global and
	// load-server-state-from-file global in the first defaults section.
	statePreserved bool
	// spread is the global spread-checks (percent; -1: not read), which
	// shortens check intervals by up to as much (riseBound).
	spread int
}

func newSnapshot() *snapshot {
	return &snapshot{fe: map[string]*feRec{}, bind: map[string]*bindRec{}, be: map[string]*beRec{},
		checks: map[string]models.HTTPChecks{}, servers: map[string]map[string]*srvRec{}, dsText: map[string]string{}, partial: map[string]bool{}, spread: -1}
}

// parseSnapshot parses a configuration file. It never fails: a line it
// cannot read is skipped (and, in a server line, marks the server partial),
// as the point is to compare what the controller manages.
func parseSnapshot(text string, version int64) *snapshot {
	sn := newSnapshot()
	// texts shares the option texts the backends and servers repeat (a
	// fleet has a few default-server lines and server option sets): one
	// string each instead of one per line (~2.5 MB at 1,000 clusters).
	// Every string a record keeps is a copy (texts.own), never a piece of
	// text: a piece would keep the whole file alive.
	texts := owned{}
	sn.version, sn.packed, sn.spread = version, packText(text), 0
	var kind, name string
	var stateFile, loadState bool
	defaultsSeen := 0
	for _, l := range strings.Split(text, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if l[0] != ' ' && l[0] != '\t' && sectionKeywords[f[0]] {
			kind, name = f[0], ""
			if len(f) > 1 {
				name = texts.own(f[1])
			}
			switch kind {
			case "defaults":
				defaultsSeen++
			case "frontend":
				fe := &feRec{name: name, maxconn: -1}
				if len(f) > 3 && f[2] == "from" {
					fe.from = texts.own(f[3])
				}
				sn.fe[name] = fe
			case "backend":
				be := &beRec{name: name}
				if len(f) > 3 && f[2] == "from" {
					be.from = texts.own(f[3])
				}
				sn.be[name] = be
				sn.servers[name] = map[string]*srvRec{}
			}
			continue
		}
		switch kind {
		case "global":
			if f[0] == "server-state-file" && len(f) > 1 {
				stateFile = true
			}
			if f[0] == "spread-checks" {
				if n, err := strconv.Atoi(word(f, 1)); err == nil {
					sn.spread = n
				} else {
					sn.spread = -1
				}
			}
		case "defaults":
			if defaultsSeen == 1 && f[0] == "load-server-state-from-file" && len(f) > 1 && f[1] == "global" {
				loadState = true
			}
		case "frontend":
			sn.frontendLine(name, f, texts)
		case "backend":
			sn.backendLine(name, f, texts)
		}
	}
	sn.statePreserved = stateFile && loadState
	return sn
}

func (sn *snapshot) frontendLine(name string, f []string, texts owned) {
	fe := sn.fe[name]
	switch f[0] {
	case "mode":
		fe.mode = texts.own(word(f, 1))
	case "maxconn":
		if n, err := strconv.ParseInt(word(f, 1), 10, 64); err == nil {
			fe.maxconn = n
		}
	case "default_backend", "use_backend":
		if f[0] == "default_backend" {
			fe.defaultBackend = texts.own(word(f, 1))
		}
	case "bind":
		host, port, err := cfgtext.SplitHostPort(word(f, 1))
		if err != nil {
			return
		}
		b := &bindRec{address: texts.own(host), port: -1}
		if port != 0 {
			b.port = port
		}
		b.name = host + ":" + strconv.FormatInt(port, 10)
		for i := 2; i+1 < len(f); i++ {
			if f[i] == "name" {
				b.name = texts.own(f[i+1])
			}
		}
		if cur := sn.bind[name]; cur == nil || (b.name == name && cur.name != name) {
			sn.bind[name] = b
		}
	}
}

func (sn *snapshot) backendLine(name string, f []string, texts owned) {
	be := sn.be[name]
	switch {
	case f[0] == "mode":
		be.mode = texts.own(word(f, 1))
	case f[0] == "balance":
		alg := texts.own(word(f, 1))
		be.balance = &alg
	case f[0] == "option" && word(f, 1) == "httpchk":
		be.advCheck = "httpchk"
	case f[0] == "option" && word(f, 1) == "http-keep-alive":
		be.httpConnMode = "http-keep-alive"
	case f[0] == "http-check" && word(f, 1) == "send":
		hc := models.HTTPCheck{Type: "send", Index: i64p(len(sn.checks[name]))}
		for i := 2; i+1 < len(f); i++ {
			switch f[i] {
			case "meth":
				hc.Method = texts.own(f[i+1])
			case "uri":
				hc.URI = texts.own(f[i+1])
			}
		}
		sn.checks[name] = append(sn.checks[name], checkRules.get(hc))
	case f[0] == "http-check" && word(f, 1) == "expect":
		hc := models.HTTPCheck{Type: "expect", Index: i64p(len(sn.checks[name]))}
		rest := f[2:]
		if len(rest) > 0 && rest[0] == "!" {
			hc.ExclamationMark = true
			rest = rest[1:]
		}
		hc.Match, hc.Pattern = texts.own(word(rest, 0)), texts.own(strings.Join(rest[min(1, len(rest)):], " "))
		sn.checks[name] = append(sn.checks[name], checkRules.get(hc))
	case f[0] == "http-check":
		// Other rules (connect, set-var, ...) only need to be counted and
		// to differ from the controller's two rules.
		sn.checks[name] = append(sn.checks[name], checkRules.get(models.HTTPCheck{Type: texts.own(word(f, 1)), Index: i64p(len(sn.checks[name]))}))
	case f[0] == "default-server":
		text := share(texts, f[1:])
		be.ds = dsLenient.get(text, false).ds
		sn.dsText[name] = text
	case f[0] == "server" && len(f) >= 3:
		host, port, err := cfgtext.SplitHostPort(f[2])
		if err != nil {
			sn.partial[name+"/"+f[1]] = true
			return
		}
		p, complete := parseParamsLenient(f[3:])
		p.SslCafile, p.Track = texts.own(p.SslCafile), texts.own(p.Track)
		srv := texts.own(f[1])
		sn.servers[name][srv] = newSrvRec(srv, texts.own(host), port, p, share(texts, f[3:]))
		if !complete {
			sn.partial[name+"/"+f[1]] = true
		}
	}
}

// ruleMemo shares the http-check rules a snapshot parsed among the backends
// whose rule reads the same (models are never modified in place): a rule is
// ~0.5 KB, and 4,000 backends have two each but a handful of distinct ones.
type ruleMemo struct {
	mu sync.Mutex
	m  map[ruleKey]*models.HTTPCheck
}

// ruleKey is what the snapshot parses of a rule.
type ruleKey struct {
	typ, method, uri, match, pattern string
	not                              bool
	index                            int64
}

var checkRules = &ruleMemo{}

// get returns the shared rule equal to hc (bounded like dsMemo).
func (c *ruleMemo) get(hc models.HTTPCheck) *models.HTTPCheck {
	k := ruleKey{hc.Type, hc.Method, hc.URI, hc.Match, hc.Pattern, hc.ExclamationMark, *hc.Index}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.m[k]; r != nil {
		return r
	}
	if c.m == nil || len(c.m) >= dsMemoMax {
		c.m = map[ruleKey]*models.HTTPCheck{}
	}
	r := &hc
	c.m[k] = r
	return r
}

// parseParamsLenient parses server options, skipping words cfgtext does not
// know; complete is false when it skipped any.
func parseParamsLenient(words []string) (models.ServerParams, bool) {
	return cfgtext.ParseServerParamsLenient(words)
}

// owned is one parse's copies of the words its records keep: each word
// once, as its own string (a piece of the file's text would keep the whole
// text alive).
type owned map[string]string

// own returns s as a string of its own, the same one for the same text
// within one parse.
func (o owned) own(s string) string {
	if s == "" {
		return ""
	}
	if c, ok := o[s]; ok {
		return c
	}
	c := strings.Clone(s)
	o[c] = c
	return c
}

// share returns words joined by one space, the same string for the same
// text within one parse (never a piece of the parsed text).
func share(texts owned, words []string) string {
	return texts.own(strings.Join(words, " "))
}

// packText is text gzip-compressed (nil for ""): a snapshot keeps the file
// this way between applies and unpacks it only for a raw write.
func packText(text string) []byte {
	if text == "" {
		return nil
	}
	var b bytes.Buffer
	w, err := gzip.NewWriterLevel(&b, gzip.BestSpeed)
	if err != nil {
		return nil
	}
	if _, err := io.WriteString(w, text); err != nil {
		return nil
	}
	if err := w.Close(); err != nil {
		return nil
	}
	return bytes.Clone(b.Bytes())
}

// fileText is the file this snapshot was parsed from, "" when it has none
// (patched after a per-object write) or it cannot be unpacked: the caller
// then reads it from the API.
func (sn *snapshot) fileText() string {
	if len(sn.packed) == 0 {
		return ""
	}
	r, err := gzip.NewReader(bytes.NewReader(sn.packed))
	if err != nil {
		return ""
	}
	var b strings.Builder
	if _, err := io.Copy(&b, r); err != nil {
		return ""
	}
	return b.String()
}

func word(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}

// clone copies the maps (not the models, which are never modified in place)
// so a patched snapshot does not change one a concurrent Diff reads.
func (sn *snapshot) clone() *snapshot {
	out := newSnapshot()
	out.version, out.readAt, out.statePreserved, out.spread = sn.version, sn.readAt, sn.statePreserved, sn.spread
	for k, v := range sn.fe {
		out.fe[k] = v
	}
	for k, v := range sn.bind {
		out.bind[k] = v
	}
	for k, v := range sn.be {
		out.be[k] = v
	}
	for k, v := range sn.checks {
		out.checks[k] = v
	}
	for k, v := range sn.servers {
		m := make(map[string]*srvRec, len(v))
		for n, s := range v {
			m[n] = s
		}
		out.servers[k] = m
	}
	for k, v := range sn.partial {
		out.partial[k] = v
	}
	for k, v := range sn.dsText {
		out.dsText[k] = v
	}
	return out
}

// patched returns the snapshot as it is after the controller's own write of
// the named services of desired, at version: what the write sent, on the
// models it was built on. Servers that had options the parser does not know
// stay partial.
func (sn *snapshot) patched(desired []services.Service, touched map[string]bool, version int64) *snapshot {
	out := sn.clone()
	out.version, out.packed = version, nil
	for _, d := range desired {
		if !touched[d.Name] {
			continue
		}
		name := d.Name
		if be, err := backendModel(d, sn.be[name].toModel()); err == nil {
			out.be[name] = beRecOf(be)
			out.dsText[name] = d.DefaultServer
		}
		out.checks[name] = httpChecksOf(d)
		out.fe[name] = feRecOf(frontendModel(d, sn.fe[name].toModel()))
		out.bind[name] = bindRecOf(bindModel(d, sn.bind[name].toModel()))
		srv := make(map[string]*srvRec, len(d.Servers))
		for _, s := range d.Servers {
			srv[s.Name] = recOf(serverModel(s, sn.model(name, s.Name)))
		}
		for k := range out.partial {
			if strings.HasPrefix(k, name+"/") && srv[strings.TrimPrefix(k, name+"/")] == nil {
				delete(out.partial, k)
			}
		}
		out.servers[name] = srv
	}
	return out
}

// srvRec is one server line as a snapshot keeps it: what the diff compares,
// read once, and the line's options as written, from which the whole model
// is rebuilt only where a write needs it (model). A models.Server is 1.3 KB
// before what its pointers hold: 18,000 of them (1,000 clusters in twins)
// were ~35 MB of the controller's live heap, kept between applies.
type srvRec struct {
	name, address string
	port          int64 // 0: none
	// weight is the line's own weight (-1: none, the backend's
	// default-server weight applies); checkPort counts only with check.
	weight, checkPort int64
	check, backup     bool
	checkSSL          bool
	caFile, track     string
	// opts are the words after the address, joined by one space.
	opts string
}

func newSrvRec(name, address string, port int64, p models.ServerParams, opts string) *srvRec {
	r := &srvRec{name: name, address: address, port: port, weight: -1, opts: opts,
		check: p.Check == "enabled", backup: p.Backup == "enabled", checkSSL: p.CheckSsl == "enabled"}
	if p.Weight != nil {
		r.weight = *p.Weight
	}
	if p.HealthCheckPort != nil {
		r.checkPort = *p.HealthCheckPort
	}
	if r.checkSSL {
		r.caFile = p.SslCafile
	}
	r.track = p.Track
	return r
}

// recOf is the record of a server the controller wrote as m.
func recOf(m *models.Server) *srvRec {
	var port int64
	if m.Port != nil {
		port = *m.Port
	}
	return newSrvRec(m.Name, m.Address, port, m.ServerParams, strings.Join(cfgtext.FormatServerParams(m.ServerParams), " "))
}

// toModel rebuilds the whole server as the parser reads its line.
func (r *srvRec) toModel() *models.Server {
	p, _ := parseParamsLenient(strings.Fields(r.opts))
	m := &models.Server{Name: r.name, Address: r.address, ServerParams: p}
	if r.port != 0 {
		port := r.port
		m.Port = &port
	}
	return m
}

// view is the diff's view of the server (defWeight: the backend's
// default-server weight).
func (r *srvRec) view(defWeight int) services.Server {
	s := services.Server{Name: r.name, Address: r.address, Port: int(r.port), Weight: defWeight, Backup: r.backup,
		CheckSSL: r.checkSSL, CAFile: r.caFile, Track: r.track}
	if r.check {
		s.CheckPort = int(r.checkPort)
	}
	if r.weight >= 0 {
		s.Weight = int(r.weight)
	}
	return s
}

// model is the whole parsed server backend/name (nil: no such server).
func (sn *snapshot) model(backend, name string) *models.Server {
	if r := sn.servers[backend][name]; r != nil {
		return r.toModel()
	}
	return nil
}

// Package dpapitest is an in-memory HAProxy Data Plane API v2 (2.9.x) for
// tests. It answers like the real API in the recorded fixtures: status codes,
// Configuration-Version and Reload-Id headers, {"_version","data"} list
// shapes, {"code","message"} errors, transactions, delayed reloads, the
// runtime-or-reload rule of a server PUT. It records every request and can
// inject failures.
package dpapitest

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haproxytech/client-native/v5/models"
)

const basePath = "/v2/services/haproxy"

// MaxTransactions is the real API's limit of open transactions.
const MaxTransactions = 20

// Request is one recorded call.
type Request struct {
	Method string
	// Path is relative to /v2/services/haproxy, in the v2 form also for a
	// v3 double (the same tests count both); APIPath is the path as sent.
	Path    string
	APIPath string
	Query   url.Values
	Body    []byte
	// RuntimeActions is the X-Runtime-Actions header (raw POST).
	RuntimeActions string
	// At is when the double received it.
	At time.Time
}

// IsWrite reports whether the call can change the configuration or state.
func (r Request) IsWrite() bool { return r.Method != http.MethodGet }

// Fault makes matching requests fail.
type Fault struct {
	// Method and Path (relative, prefix match) select requests; empty = any.
	Method, Path string
	// Status and Message form the {"code","message"} answer.
	Status  int
	Message string
	// Times the fault fires (0 = once).
	Times int
}

// Option configures a Server.
type Option func(*Server)

// WithUser sets the basic-auth user (default admin / adminpwd).
func WithUser(name, password string) Option {
	return func(s *Server) { s.user, s.password = name, password }
}

// WithConfig seeds the configuration from haproxy.cfg text. GET raw answers
// this text verbatim until the first write, as the real API does with a file
// it has not rewritten yet.
func WithConfig(text string) Option {
	return func(s *Server) { s.seed = text }
}

// WithVersion sets the starting configuration version (default 1).
func WithVersion(v int64) Option { return func(s *Server) { s.version = v } }

// WithReloadPolls sets how many polls answer in_progress before a reload
// reports its result (default 1, as observed with reload_delay).
func WithReloadPolls(n int) Option { return func(s *Server) { s.reloadPolls = n } }

// WithReloadSeq sets the number of the next reload id (default 0).
func WithReloadSeq(n int) Option { return func(s *Server) { s.reloadSeq = n } }

// WithRuntimeUnavailable makes the runtime endpoints behave as observed when
// the API is configured with master_runtime on HAProxy 2.6: lists are empty,
// reads 404 and writes 500.
func WithRuntimeUnavailable() Option { return func(s *Server) { s.runtimeBroken = true } }

// WithRuntimeReadDelay makes every GET of a backend's runtime servers wait
// d before it is served (and recorded), as a loaded API answers: for tests
// of what a client sends while such reads are under way.
func WithRuntimeReadDelay(d time.Duration) Option { return func(s *Server) { s.readDelay = d } }

// EmptyConfig is a minimal global + defaults configuration.
const EmptyConfig = `global
    daemon
    maxconn 8000
    stats socket /tmp/admin.sock mode 600 level admin
    server-state-file /tmp/haproxy/server-state

defaults
    mode tcp
    load-server-state-from-file global
    timeout connect 1m
    timeout client 24h
    timeout server 24h
`

type txn struct {
	id      string
	version int64
	status  string
	cfg     *Config
}

type reload struct {
	id        string
	left      int
	failed    bool
	timestamp int64
}

// Server is the double. Its URL carries credentials: pass it to dataplaneapi.New.
type Server struct {
	t   testing.TB
	ts  *httptest.Server
	mu  sync.Mutex
	cfg *Config

	seed            string
	verbatim        string // GET raw answer until the first write
	user, password  string
	version         int64
	txns            map[string]*txn
	txnSeq          int
	reloads         []*reload
	reloadSeq       int
	reloadPolls     int
	failNextReloads int
	faults          []*Fault
	down            bool
	runtimeBroken   bool
	readDelay       time.Duration
	admin           map[string]string // backend/server -> admin_state
	held            map[string]string // backend/server -> admin_state put back after every change (HoldAdminState)
	oper            map[string]string // backend/server -> operational_state (health), when set
	requests        []Request
	apiVersion      int
	listener        net.Listener     // WithListener
	pid             int64            // the HAProxy worker's pid /runtime/info answers
	procStart       time.Time        // when the running worker started (real time)
	procAge         time.Duration    // added to its uptime (see newProcessLocked)
	lateWorker      int              // see DelayNewWorkers
	pending         *pendingWorker   // a reload's worker not serving yet
	actions         string           // X-Runtime-Actions of the request being served
	weight          map[string]int64 // backend/server -> runtime weight set by a runtime action
}

// NewServer starts a double; it is closed with the test.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{t: t, user: "admin", password: "adminpwd", version: 1, reloadPolls: 1, pid: 4000,
		procStart: time.Now(), procAge: firstProcAge,
		txns: map[string]*txn{}, admin: map[string]string{}, held: map[string]string{}, oper: map[string]string{}, seed: EmptyConfig}
	for _, o := range opts {
		o(s)
	}
	cfg, err := ParseConfig(s.seed)
	if err != nil {
		t.Fatalf("dpapitest: seed config: %v", err)
	}
	cfg.canonicalize()
	s.cfg, s.verbatim = cfg, s.seed
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	if s.listener != nil {
		s.ts.Listener.Close()
		s.ts.Listener = s.listener
	}
	s.ts.Start()
	t.Cleanup(s.ts.Close)
	return s
}

// URL returns the base URL with the credentials in its userinfo.
func (s *Server) URL() string {
	u, _ := url.Parse(s.ts.URL)
	u.User = url.UserPassword(s.user, s.password)
	return u.String()
}

// Requests returns the calls received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Writes returns the recorded non-GET calls.
func (s *Server) Writes() []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.IsWrite() {
			out = append(out, r)
		}
	}
	return out
}

// Count returns how many recorded calls have this method and path prefix.
func (s *Server) Count(method, pathPrefix string) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Method == method && strings.HasPrefix(r.Path, pathPrefix) {
			n++
		}
	}
	return n
}

// ResetRequests forgets the recorded calls.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// Version returns the configuration version.
func (s *Server) Version() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// SetVersion forces the configuration version (fixture replays).
func (s *Server) SetVersion(v int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version = v
}

// OpenTransactions returns how many transactions are open.
func (s *Server) OpenTransactions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, t := range s.txns {
		if t.status == "in_progress" {
			n++
		}
	}
	return n
}

// ReloadCount returns how many reloads were scheduled.
func (s *Server) ReloadCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reloads)
}

// Config returns a copy of the committed configuration.
func (s *Server) Config() *Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.clone()
}

// RawConfig returns the configuration text GET raw would answer.
func (s *Server) RawConfig() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rawLocked()
}

func (s *Server) rawLocked() string {
	if s.verbatim != "" {
		return s.verbatim
	}
	return s.cfg.Render(s.version)
}

// Edit changes the committed configuration as another writer would (the
// version moves, no reload is recorded).
func (s *Server) Edit(f func(*Config)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s.cfg)
	s.cfg.canonicalize(s.APIVersion() == 2)
	s.version++
	s.verbatim = ""
}

// InjectFault adds a fault.
func (s *Server) InjectFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Times <= 0 {
		f.Times = 1
	}
	s.faults = append(s.faults, &f)
}

// FailNextReload makes the next scheduled reload fail; as the real API does,
// the previous configuration is restored.
func (s *Server) FailNextReload() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNextReloads++
}

// SetDown makes every call fail at the connection level (true) or work again.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// RestartHAProxy simulates HAProxy restarted behind the API's back: a new
// worker pid, and every runtime admin and health state lost.
func (s *Server) RestartHAProxy() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pid += 100
	s.restartLocked()
}

// RestartHAProxyKeepPID is RestartHAProxy in its own pid namespace (the
// shipped container restarted by its restart policy): the new worker has
// the pid of the one before it, only its start time (GET /runtime/info's
// uptime) tells it apart.
func (s *Server) RestartHAProxyKeepPID() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restartLocked()
}

func (s *Server) restartLocked() {
	s.pending = nil
	s.newProcessLocked()
	s.admin = map[string]string{}
	s.oper = map[string]string{}
}

// firstProcAge is the uptime the double's first worker answers with at
// start; procAgeStep is how much less each later worker adds (see
// newProcessLocked).
const (
	firstProcAge = 30 * 24 * time.Hour
	procAgeStep  = 10 * time.Second
)

// newProcessLocked starts a new worker (a reload or a restart): its uptime
// counts from now. A test runs a reload and a restart in milliseconds,
// where a real HAProxy takes seconds: every worker answers an uptime
// procAgeStep shorter than the real time since the one before it started
// would give, so that its start (now - uptime) is procAgeStep after the
// previous one's, as a restart's is in production.
func (s *Server) newProcessLocked() {
	s.procStart = time.Now()
	if s.procAge > procAgeStep {
		s.procAge -= procAgeStep
	} else {
		s.procAge = 0
	}
}

// uptimeLocked is the running worker's uptime in whole seconds, as
// HAProxy's `show info` (Uptime_sec) and GET /runtime/info answer it.
func (s *Server) uptimeLocked() int64 {
	return int64((time.Since(s.procStart) + s.procAge) / time.Second)
}

// DelayNewWorkers makes the old worker go on answering the runtime
// endpoints (GET /runtime/info, /runtime/servers) n more times after each
// later reload before the new worker takes over (0: at once, the default):
// a reload command that returns before the new worker serves (`systemctl
// reload`). The new worker starts from the runtime states the reload
// found (the state file its command dumped): what the old worker is told
// meanwhile never reaches it.
func (s *Server) DelayNewWorkers(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lateWorker = n
}

// pendingWorker is a reload's new worker until it serves (DelayNewWorkers).
type pendingWorker struct {
	pid         int64
	admin, oper map[string]string
	left        int // runtime requests the old worker still answers
}

// reloadWorkerLocked starts a reload's new worker, at once or, with
// DelayNewWorkers, once the old one answered its share.
func (s *Server) reloadWorkerLocked() {
	s.takeOverLocked()
	if s.lateWorker <= 0 {
		s.pid++
		s.newProcessLocked()
		return
	}
	s.pending = &pendingWorker{pid: s.pid + 1, admin: maps.Clone(s.admin), oper: maps.Clone(s.oper), left: s.lateWorker}
}

// takeOverLocked makes a pending new worker the running one.
func (s *Server) takeOverLocked() {
	if s.pending == nil {
		return
	}
	s.pid, s.admin, s.oper = s.pending.pid, s.pending.admin, s.pending.oper
	s.pending = nil
	s.newProcessLocked()
}

// runtimeRequestLocked counts a request to the runtime endpoints against
// a pending new worker: the old worker answers it, or the new one takes
// over first.
func (s *Server) runtimeRequestLocked() {
	if s.pending == nil {
		return
	}
	if s.pending.left > 0 {
		s.pending.left--
		return
	}
	s.takeOverLocked()
}

// RuntimeWeight is the weight a runtime action (X-Runtime-Actions
// SetServerWeight) set on a server, and whether one did.
func (s *Server) RuntimeWeight(backend, server string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.weight[backend+"/"+server]
	return w, ok
}

// runtimeActions runs an X-Runtime-Actions header: "SetServerWeight B S W"
// and "SetServerState B S ready|drain|maint", separated by ';'.
func (s *Server) runtimeActions(h string) *apiErr {
	for _, a := range strings.Split(h, ";") {
		f := strings.Split(a, " ")
		if len(f) == 0 || f[0] == "" {
			continue
		}
		if len(f) < 4 {
			return errf(500, "cannot execute %s: not enough parameters", f[0])
		}
		b := s.cfg.backend(f[1])
		var m *models.Server
		if b != nil {
			_, m = b.server(f[2])
		}
		if m == nil {
			return errf(500, "cannot execute %s: no such server %s/%s", f[0], f[1], f[2])
		}
		switch f[0] {
		case "SetServerWeight":
			w, err := strconv.ParseInt(f[3], 10, 64)
			if err != nil {
				return errf(500, "cannot execute %s: %s", f[0], err)
			}
			if s.weight == nil {
				s.weight = map[string]int64{}
			}
			s.weight[f[1]+"/"+f[2]] = w
		case "SetServerState":
			s.admin[f[1]+"/"+f[2]] = f[3]
		}
	}
	return nil
}

// PID is the worker pid GET /runtime/info answers.
func (s *Server) PID() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid
}

// SetAdminState sets a server's runtime admin state (ready, maint, drain).
func (s *Server) SetAdminState(backend, server, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.admin[backend+"/"+server] = state
}

// HoldAdminState makes an outside party put a server's runtime admin state
// back to state right after every change (an operator's script, a second
// controller): runtime PUTs are accepted and answer state. "" ends it.
func (s *Server) HoldAdminState(backend, server, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := backend + "/" + server
	if state == "" {
		delete(s.held, key)
		return
	}
	s.held[key] = state
	s.admin[key] = state
}

// ---- HTTP ----

type apiErr struct {
	status int
	msg    string
}

func errf(status int, format string, a ...any) *apiErr {
	return &apiErr{status: status, msg: fmt.Sprintf(format, a...)}
}

// answer is what a handler produced.
type answer struct {
	status   int
	body     any // JSON-encoded unless nil
	reloadID string
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	base := s.basePath()
	path, query := strings.TrimPrefix(r.URL.Path, base), r.URL.Query()
	v3 := s.APIVersion() == 3
	if v3 {
		path, query, body = v2Form(r.Method, path, query, body)
	}
	if s.readDelay > 0 && r.Method == http.MethodGet && path == "/runtime/servers" {
		time.Sleep(s.readDelay)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: path, APIPath: r.URL.Path, Query: query, Body: body,
		RuntimeActions: r.Header.Get("X-Runtime-Actions"), At: time.Now()})
	s.actions = r.Header.Get("X-Runtime-Actions")
	if s.down {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	if u, p, ok := r.BasicAuth(); !ok || u != s.user || p != s.password {
		w.Header().Set("WWW-Authenticate", `Basic realm="HAProxy Data Plane API"`)
		s.writeErr(w, errf(401, "unauthenticated for invalid credentials"))
		return
	}
	for i, f := range s.faults {
		if (f.Method == "" || f.Method == r.Method) && strings.HasPrefix(path, f.Path) {
			f.Times--
			if f.Times <= 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			msg := f.Message
			if msg == "" {
				msg = http.StatusText(f.Status)
			}
			s.writeErr(w, errf(f.Status, "%s", msg))
			return
		}
	}
	if r.Method == http.MethodGet && r.URL.Path == "/v"+strconv.Itoa(s.APIVersion())+"/info" {
		w.Header().Set("Configuration-Version", strconv.FormatInt(s.version, 10))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"api":{"version":"dpapitest v%d"},"system":{}}`+"\n", s.APIVersion())
		return
	}
	if !strings.HasPrefix(r.URL.Path, base) {
		s.writeErr(w, errf(404, "path %s was not found", r.URL.Path))
		return
	}
	a, e := s.route(r.Method, path, query, body)
	if e != nil {
		s.writeErr(w, e)
		return
	}
	text := false
	if v3 {
		a, text = v3Answer(path, a)
	}
	w.Header().Set("Configuration-Version", strconv.FormatInt(s.version, 10))
	if a.reloadID != "" {
		w.Header().Set("Reload-Id", a.reloadID)
	}
	if a.body == nil {
		w.WriteHeader(a.status)
		return
	}
	if str, ok := a.body.(string); ok && text {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, str)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	_ = json.NewEncoder(w).Encode(a.body)
}

func (s *Server) writeErr(w http.ResponseWriter, e *apiErr) {
	w.Header().Set("Configuration-Version", strconv.FormatInt(s.version, 10))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": e.status, "message": e.msg})
}

func segs(path string) []string {
	var out []string
	for _, p := range strings.Split(strings.Trim(path, "/"), "/") {
		if u, err := url.PathUnescape(p); err == nil {
			out = append(out, u)
		} else {
			out = append(out, p)
		}
	}
	return out
}

func (s *Server) route(method, path string, q url.Values, body []byte) (answer, *apiErr) {
	p := segs(path)
	if len(p) >= 1 && p[0] == "runtime" {
		s.runtimeRequestLocked()
	}
	switch {
	case len(p) == 2 && p[0] == "configuration" && p[1] == "version" && method == "GET":
		return answer{status: 200, body: s.version}, nil
	case len(p) >= 1 && p[0] == "transactions":
		return s.transactions(method, p[1:], q)
	case len(p) >= 1 && p[0] == "reloads":
		return s.reloadsRoute(method, p[1:])
	case len(p) >= 2 && p[0] == "runtime" && p[1] == "servers":
		return s.runtimeServers(method, p[2:], q, body)
	case len(p) == 2 && p[0] == "runtime" && p[1] == "info" && method == "GET":
		info := map[string]any{"info": map[string]any{"pid": s.pid, "uptime": s.uptimeLocked(), "version": "2.6.12"}, "runtimeAPI": "/tmp/admin.sock"}
		if s.APIVersion() == 3 {
			return answer{status: 200, body: info}, nil
		}
		return answer{status: 200, body: []any{info}}, nil
	case len(p) == 2 && p[0] == "configuration" && p[1] == "raw":
		return s.raw(method, q, body)
	case len(p) == 2 && p[0] == "configuration" && (p[1] == "global" || p[1] == "defaults") && method == "GET":
		var data any = s.cfg.global()
		if p[1] == "defaults" {
			data = s.cfg.defaults()
		}
		if s.APIVersion() == 3 {
			data = v3Section(data)
		}
		return answer{status: 200, body: map[string]any{"_version": s.version, "data": data}}, nil
	case len(p) >= 2 && p[0] == "configuration":
		return s.object(method, p[1], p[2:], q, body)
	}
	return answer{}, errf(404, "path /%s not found", strings.Join(p, "/"))
}

// ---- transactions ----

func (s *Server) transactions(method string, p []string, q url.Values) (answer, *apiErr) {
	switch {
	case len(p) == 0 && method == "GET":
		out := []models.Transaction{}
		for _, t := range s.sortedTxns() {
			out = append(out, models.Transaction{ID: t.id, Version: t.version, Status: t.status})
		}
		return answer{status: 200, body: out}, nil
	case len(p) == 0 && method == "POST":
		v, err := strconv.ParseInt(q.Get("version"), 10, 64)
		if err != nil {
			return answer{}, errf(400, "version: %q is not an integer", q.Get("version"))
		}
		if v != s.version {
			return answer{}, errf(409, "version mismatch: version in configuration file is %d, given version is %d", s.version, v)
		}
		open := 0
		for _, t := range s.txns {
			if t.status == "in_progress" {
				open++
			}
		}
		if open >= MaxTransactions {
			return answer{}, errf(429, "cannot start a new transaction, reached the maximum amount of %d active transactions available", MaxTransactions)
		}
		s.txnSeq++
		id := fmt.Sprintf("%08x-0000-4000-8000-%012x", s.txnSeq, time.Now().UnixNano()&0xffffffffffff)
		s.txns[id] = &txn{id: id, version: v, status: "in_progress", cfg: s.cfg.clone()}
		return answer{status: 201, body: models.Transaction{ID: id, Version: v, Status: "in_progress"}}, nil
	case len(p) == 1:
		t := s.txns[p[0]]
		if t == nil {
			return answer{}, errf(404, "transaction %s does not exist", p[0])
		}
		switch method {
		case "GET":
			return answer{status: 200, body: models.Transaction{ID: t.id, Version: t.version, Status: t.status}}, nil
		case "DELETE":
			delete(s.txns, t.id)
			return answer{status: 204}, nil
		case "PUT":
			return s.commit(t)
		}
	}
	return answer{}, errf(405, "method %s not allowed", method)
}

func (s *Server) sortedTxns() []*txn {
	var out []*txn
	for _, t := range s.txns {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func (s *Server) commit(t *txn) (answer, *apiErr) {
	if t.status != "in_progress" {
		return answer{}, errf(406, "transaction %s is %s and cannot be committed", t.id, t.status)
	}
	if t.version != s.version {
		t.status = "outdated"
		return answer{}, errf(409, "version mismatch: version mismatch, transaction version: %d, configured version: %d", t.version, s.version)
	}
	if err := validate(t.cfg); err != nil {
		t.status = "failed"
		return answer{}, errf(400, "%s", err)
	}
	id := s.install(t.cfg)
	delete(s.txns, t.id)
	return answer{status: 202, reloadID: id, body: models.Transaction{ID: t.id, Version: t.version, Status: "success"}}, nil
}

// validate is the double's "haproxy -c": references must resolve.
func validate(c *Config) error {
	for _, f := range c.Frontends {
		if f.Model.DefaultBackend != "" && c.backend(f.Model.DefaultBackend) == nil {
			return fmt.Errorf("[ALERT] proxy '%s': unable to find required default_backend: '%s'", f.Model.Name, f.Model.DefaultBackend)
		}
		if len(f.Binds) == 0 {
			return fmt.Errorf("[ALERT] proxy '%s' has no 'bind' directive", f.Model.Name)
		}
	}
	return nil
}

// install makes cfg the committed configuration, bumps the version and
// schedules a reload; it returns the reload id.
func (s *Server) install(cfg *Config) string {
	prev := s.cfg
	cfg.canonicalize(s.APIVersion() == 2)
	s.cfg = cfg
	s.version++
	s.verbatim = ""
	rl := &reload{id: fmt.Sprintf("%s-%d", time.Now().Format("2006-01-02"), s.reloadSeq), left: s.reloadPolls, timestamp: time.Now().Unix()}
	s.reloadSeq++
	if s.failNextReloads > 0 {
		s.failNextReloads--
		rl.failed = true
		// The API restores the last good file when HAProxy refuses the new one.
		s.cfg = prev
	} else {
		s.reloadWorkerLocked() // a new worker; the state file carries the admin states
	}
	s.reloads = append(s.reloads, rl)
	return rl.id
}

func (s *Server) reloadsRoute(method string, p []string) (answer, *apiErr) {
	if method != "GET" {
		return answer{}, errf(405, "method %s not allowed", method)
	}
	view := func(r *reload) models.Reload {
		st := "succeeded"
		resp := ""
		if r.failed {
			st, resp = "failed", "[ALERT] reload failed (injected by dpapitest)"
		}
		return models.Reload{ID: r.id, Status: st, ReloadTimestamp: r.timestamp, Response: resp}
	}
	if len(p) == 0 {
		out := []models.Reload{}
		for _, r := range s.reloads {
			if r.left <= 0 {
				out = append(out, view(r))
			}
		}
		return answer{status: 200, body: out}, nil
	}
	for _, r := range s.reloads {
		if r.id == p[0] {
			if r.left > 0 {
				r.left--
				return answer{status: 200, body: models.Reload{Status: "in_progress"}}, nil
			}
			return answer{status: 200, body: view(r)}, nil
		}
	}
	return answer{}, errf(404, "missing object: reload %s does not exist", p[0])
}

// ---- raw ----

func (s *Server) raw(method string, q url.Values, body []byte) (answer, *apiErr) {
	switch method {
	case "GET":
		if id := q.Get("transaction_id"); id != "" {
			t := s.txns[id]
			if t == nil {
				return answer{}, errf(400, "transaction %s does not exist", id)
			}
			return answer{status: 200, body: map[string]any{"data": t.cfg.Render(t.version)}}, nil
		}
		return answer{status: 200, body: map[string]any{"data": s.rawLocked()}}, nil
	case "POST":
		v, err := strconv.ParseInt(q.Get("version"), 10, 64)
		if err != nil && q.Get("skip_version") != "true" {
			return answer{}, errf(400, "version or transaction not specified, specify only one")
		}
		if err == nil && v != s.version {
			return answer{}, errf(409, "version mismatch: version in configuration file is %d, given version is %d", s.version, v)
		}
		text := string(body)
		var js string
		if json.Unmarshal(body, &js) == nil {
			text = js
		}
		cfg, perr := ParseConfig(text)
		if perr != nil {
			return answer{}, errf(400, "invalid configuration: %s", perr)
		}
		if err := validate(cfg); err != nil {
			return answer{}, errf(400, "%s", err)
		}
		if q.Get("skip_reload") == "true" {
			// The file is written, nothing reloads; the runtime actions run
			// in order, the first failure ends them (as 2.9.9/3.2.0 do).
			cfg.canonicalize(s.APIVersion() == 2)
			s.cfg = cfg
			s.version++
			s.verbatim = ""
			if e := s.runtimeActions(s.actions); e != nil {
				return answer{}, e
			}
			return answer{status: 201, body: s.rawLocked()}, nil
		}
		id := s.install(cfg)
		return answer{status: 202, reloadID: id, body: s.rawLocked()}, nil
	}
	return answer{}, errf(405, "method %s not allowed", method)
}

// ---- configuration objects ----

// target resolves where a request reads or writes: the committed config or a
// transaction's copy (direct version= writes get a copy installed on success).
func (s *Server) target(method string, q url.Values) (*Config, *txn, *apiErr) {
	id, ver := q.Get("transaction_id"), q.Get("version")
	if method == "GET" {
		if id != "" {
			t := s.txns[id]
			if t == nil {
				return nil, nil, errf(400, "transaction %s does not exist", id)
			}
			return t.cfg, t, nil
		}
		return s.cfg, nil, nil
	}
	switch {
	case id != "" && ver != "":
		return nil, nil, errf(400, "both version and transaction specified, specify only one")
	case id == "" && ver == "":
		return nil, nil, errf(400, "version or transaction not specified, specify only one")
	case id != "":
		t := s.txns[id]
		if t == nil {
			return nil, nil, errf(400, "transaction %s does not exist", id)
		}
		if t.status != "in_progress" {
			return nil, nil, errf(406, "transaction %s is %s", id, t.status)
		}
		return t.cfg, t, nil
	}
	v, err := strconv.ParseInt(ver, 10, 64)
	if err != nil {
		return nil, nil, errf(400, "version: %q is not an integer", ver)
	}
	if v != s.version {
		return nil, nil, errf(409, "version mismatch: version in configuration file is %d, given version is %d", s.version, v)
	}
	// Direct writes work on a copy that is installed when the change is valid.
	return s.cfg.clone(), nil, nil
}

func (s *Server) object(method, kind string, rest []string, q url.Values, body []byte) (answer, *apiErr) {
	cfg, t, e := s.target(method, q)
	if e != nil {
		return answer{}, e
	}
	direct := method != "GET" && t == nil
	var name string
	if len(rest) > 0 {
		name = rest[0]
	}
	var out any
	var h handler
	switch kind {
	case "backends":
		h = backendsHandler{}
	case "frontends":
		h = frontendsHandler{}
	case "binds":
		h = bindsHandler{frontend: q.Get("frontend")}
	case "http_checks":
		if q.Get("parent_type") != "backend" {
			return answer{}, errf(400, "parent_type must be backend in this double")
		}
		h = checksHandler{backend: q.Get("parent_name")}
	case "servers":
		h = serversHandler{backend: q.Get("backend")}
	default:
		return answer{}, errf(404, "path /configuration/%s not found", kind)
	}
	switch {
	case method == "GET" && name == "":
		out, e = h.list(cfg)
		if e != nil {
			return answer{}, e
		}
		return answer{status: 200, body: map[string]any{"_version": s.version, "data": out}}, nil
	case method == "GET":
		out, e = h.get(cfg, name)
		if e != nil {
			return answer{}, e
		}
		return answer{status: 200, body: map[string]any{"_version": s.version, "data": out}}, nil
	case method == "POST" && name == "":
		out, e = h.create(cfg, body)
	case method == "PUT" && name != "":
		if sh, ok := h.(serversHandler); ok && direct {
			return s.putServerDirect(cfg, sh.backend, name, body)
		}
		out, e = h.replace(cfg, name, body)
	case method == "DELETE" && name != "":
		e = h.remove(cfg, name)
	default:
		return answer{}, errf(405, "method %s not allowed on /configuration/%s", method, kind)
	}
	if e != nil {
		return answer{}, e
	}
	if !direct {
		return answer{status: 202, body: out}, nil
	}
	if err := validate(cfg); err != nil {
		return answer{}, errf(400, "%s", err)
	}
	id := s.install(cfg)
	return answer{status: 202, body: out, reloadID: id}, nil
}

// runtimeFields are the server fields the API can change without a reload.
func stripRuntimeFields(m models.Server) models.Server {
	m.Weight, m.Address, m.Port, m.Maintenance, m.HealthCheckPort = nil, "", nil, "", nil
	m.AgentAddr, m.AgentCheck, m.AgentInter, m.AgentPort, m.AgentSend = "", "", nil, nil, ""
	return m
}

// putServerDirect is PUT server with version=: runtime-only differences are
// applied without a reload (200), anything else reloads (202).
func (s *Server) putServerDirect(cfg *Config, backend, name string, body []byte) (answer, *apiErr) {
	be := cfg.backend(backend)
	var old *models.Server
	if be != nil {
		_, old = be.server(name)
	}
	if old == nil {
		return answer{}, errf(404, "missing object: server %s does not exist in %s backend", name, backend)
	}
	var m models.Server
	if err := json.Unmarshal(body, &m); err != nil {
		return answer{}, errf(400, "invalid server: %s", err)
	}
	if m.Name != name {
		return answer{}, errf(400, "server name %q in body does not match %q in path", m.Name, name)
	}
	i, _ := be.server(name)
	be.Servers[i] = &m
	if reflect.DeepEqual(stripRuntimeFields(*old), stripRuntimeFields(m)) {
		cfg.canonicalize(s.APIVersion() == 2)
		s.cfg = cfg
		s.version++
		s.verbatim = ""
		return answer{status: 200, body: m}, nil
	}
	id := s.install(cfg)
	return answer{status: 202, body: m, reloadID: id}, nil
}

type handler interface {
	list(c *Config) (any, *apiErr)
	get(c *Config, name string) (any, *apiErr)
	create(c *Config, body []byte) (any, *apiErr)
	replace(c *Config, name string, body []byte) (any, *apiErr)
	remove(c *Config, name string) *apiErr
}

func decode(body []byte, v any) *apiErr {
	if err := json.Unmarshal(body, v); err != nil {
		return errf(400, "invalid body: %s", err)
	}
	return nil
}

type backendsHandler struct{}

func (backendsHandler) list(c *Config) (any, *apiErr) {
	out := []models.Backend{}
	for _, b := range c.Backends {
		out = append(out, backendView(b))
	}
	return out, nil
}

func (backendsHandler) get(c *Config, name string) (any, *apiErr) {
	b := c.backend(name)
	if b == nil {
		return nil, errf(404, "missing object: Object %s does not exist", name)
	}
	return backendView(b), nil
}

func (backendsHandler) create(c *Config, body []byte) (any, *apiErr) {
	var m models.Backend
	if e := decode(body, &m); e != nil {
		return nil, e
	}
	if m.Name == "" {
		return nil, errf(422, "name in body is required")
	}
	if c.backend(m.Name) != nil {
		return nil, errf(409, "object already exists: Object %s already exists", m.Name)
	}
	c.Backends = append(c.Backends, &Backend{Model: m})
	return m, nil
}

func (backendsHandler) replace(c *Config, name string, body []byte) (any, *apiErr) {
	var m models.Backend
	if e := decode(body, &m); e != nil {
		return nil, e
	}
	b := c.backend(name)
	if b == nil {
		return nil, errf(404, "missing object: Object %s does not exist", name)
	}
	// The deprecated single http-check field is derived from the rules.
	m.HTTPCheck = nil
	if m.HTTPKeepAlive == "enabled" && m.HTTPConnectionMode == "" {
		m.HTTPConnectionMode = "http-keep-alive"
	}
	m.HTTPKeepAlive = ""
	if m.HttpchkParams != nil && *m.HttpchkParams == (models.HttpchkParams{}) {
		m.HttpchkParams = nil
	}
	b.Model = m
	return m, nil
}

func (backendsHandler) remove(c *Config, name string) *apiErr {
	for i, b := range c.Backends {
		if b.Model.Name == name {
			c.Backends = append(c.Backends[:i], c.Backends[i+1:]...)
			return nil
		}
	}
	return errf(404, "missing object: Object %s does not exist", name)
}

type frontendsHandler struct{}

func (frontendsHandler) list(c *Config) (any, *apiErr) {
	out := []models.Frontend{}
	for _, f := range c.Frontends {
		out = append(out, f.Model)
	}
	return out, nil
}

func (frontendsHandler) get(c *Config, name string) (any, *apiErr) {
	f := c.frontend(name)
	if f == nil {
		return nil, errf(404, "missing object: Object %s does not exist", name)
	}
	return f.Model, nil
}

func (frontendsHandler) create(c *Config, body []byte) (any, *apiErr) {
	var m models.Frontend
	if e := decode(body, &m); e != nil {
		return nil, e
	}
	if m.Name == "" {
		return nil, errf(422, "name in body is required")
	}
	if c.frontend(m.Name) != nil {
		return nil, errf(409, "object already exists: Object %s already exists", m.Name)
	}
	c.Frontends = append(c.Frontends, &Frontend{Model: m})
	return m, nil
}

func (frontendsHandler) replace(c *Config, name string, body []byte) (any, *apiErr) {
	var m models.Frontend
	if e := decode(body, &m); e != nil {
		return nil, e
	}
	f := c.frontend(name)
	if f == nil {
		return nil, errf(404, "missing object: Object %s does not exist", name)
	}
	f.Model = m
	return m, nil
}

func (frontendsHandler) remove(c *Config, name string) *apiErr {
	for i, f := range c.Frontends {
		if f.Model.Name == name {
			c.Frontends = append(c.Frontends[:i], c.Frontends[i+1:]...)
			return nil
		}
	}
	return errf(404, "missing object: Object %s does not exist", name)
}

type bindsHandler struct{ frontend string }

func (h bindsHandler) parent(c *Config) (*Frontend, *apiErr) {
	f := c.frontend(h.frontend)
	if f == nil {
		return nil, errf(400, "missing parent: frontend %s does not exist", h.frontend)
	}
	return f, nil
}

func (h bindsHandler) list(c *Config) (any, *apiErr) {
	out := []models.Bind{}
	if f := c.frontend(h.frontend); f != nil {
		for _, b := range f.Binds {
			out = append(out, *b)
		}
	}
	return out, nil
}

func (h bindsHandler) find(c *Config, name string) (*Frontend, int, *apiErr) {
	f, e := h.parent(c)
	if e != nil {
		return nil, -1, e
	}
	for i, b := range f.Binds {
		if b.Name == name {
			return f, i, nil
		}
	}
	return nil, -1, errf(404, "missing object: bind %s does not exist in %s frontend", name, h.frontend)
}

func (h bindsHandler) get(c *Config, name string) (any, *apiErr) {
	f, i, e := h.find(c, name)
	if e != nil {
		return nil, e
	}
	return f.Binds[i], nil
}

func (h bindsHandler) create(c *Config, body []byte) (any, *apiErr) {
	f, e := h.parent(c)
	if e != nil {
		return nil, e
	}
	var m models.Bind
	if e := decode(body, &m); e != nil {
		return nil, e
	}
	for _, b := range f.Binds {
		if b.Name == m.Name {
			return nil, errf(409, "object already exists: Object %s already exists", m.Name)
		}
	}
	f.Binds = append(f.Binds, &m)
	return m, nil
}

func (h bindsHandler) replace(c *Config, name string, body []byte) (any, *apiErr) {
	f, i, e := h.find(c, name)
	if e != nil {
		return nil, e
	}
	var m models.Bind
	if e := decode(body, &m); e != nil {
		return nil, e
	}
	f.Binds[i] = &m
	return m, nil
}

func (h bindsHandler) remove(c *Config, name string) *apiErr {
	f, i, e := h.find(c, name)
	if e != nil {
		return e
	}
	f.Binds = append(f.Binds[:i], f.Binds[i+1:]...)
	return nil
}

type checksHandler struct{ backend string }

func (h checksHandler) parent(c *Config) (*Backend, *apiErr) {
	b := c.backend(h.backend)
	if b == nil {
		return nil, errf(400, "missing parent: backend %s does not exist", h.backend)
	}
	return b, nil
}

func renumber(b *Backend) {
	for i, hc := range b.Checks {
		hc.Index = i64(int64(i))
	}
}

func (h checksHandler) list(c *Config) (any, *apiErr) {
	b, e := h.parent(c)
	if e != nil {
		return nil, e
	}
	out := []models.HTTPCheck{}
	for _, hc := range b.Checks {
		out = append(out, *hc)
	}
	return out, nil
}

func (h checksHandler) index(c *Config, name string) (*Backend, int, *apiErr) {
	b, e := h.parent(c)
	if e != nil {
		return nil, -1, e
	}
	i, err := strconv.Atoi(name)
	if err != nil || i < 0 || i >= len(b.Checks) {
		return nil, -1, errf(404, "missing object: Object %s does not exist in backend %s", name, h.backend)
	}
	return b, i, nil
}

func (h checksHandler) get(c *Config, name string) (any, *apiErr) {
	b, i, e := h.index(c, name)
	if e != nil {
		return nil, e
	}
	return b.Checks[i], nil
}

func (h checksHandler) create(c *Config, body []byte) (any, *apiErr) {
	b, e := h.parent(c)
	if e != nil {
		return nil, e
	}
	var m models.HTTPCheck
	if e := decode(body, &m); e != nil {
		return nil, e
	}
	i := len(b.Checks)
	if m.Index != nil {
		i = int(*m.Index)
	}
	if i < 0 || i > len(b.Checks) {
		return nil, errf(400, "index out of range: Object with id %d in backend %s out of range", i, h.backend)
	}
	b.Checks = append(b.Checks[:i], append([]*models.HTTPCheck{&m}, b.Checks[i:]...)...)
	renumber(b)
	return m, nil
}

func (h checksHandler) replace(c *Config, name string, body []byte) (any, *apiErr) {
	b, i, e := h.index(c, name)
	if e != nil {
		return nil, e
	}
	var m models.HTTPCheck
	if e := decode(body, &m); e != nil {
		return nil, e
	}
	b.Checks[i] = &m
	renumber(b)
	return m, nil
}

func (h checksHandler) remove(c *Config, name string) *apiErr {
	b, i, e := h.index(c, name)
	if e != nil {
		return e
	}
	b.Checks = append(b.Checks[:i], b.Checks[i+1:]...)
	renumber(b)
	return nil
}

type serversHandler struct{ backend string }

func (h serversHandler) list(c *Config) (any, *apiErr) {
	// Observed: an unknown backend (e.g. a listen section) lists no servers.
	out := []models.Server{}
	if b := c.backend(h.backend); b != nil {
		for _, s := range b.Servers {
			out = append(out, *s)
		}
	}
	return out, nil
}

func (h serversHandler) find(c *Config, name string) (*Backend, int, *apiErr) {
	b := c.backend(h.backend)
	if b != nil {
		if i, _ := b.server(name); i >= 0 {
			return b, i, nil
		}
	}
	return nil, -1, errf(404, "missing object: server %s does not exist in %s backend", name, h.backend)
}

func (h serversHandler) get(c *Config, name string) (any, *apiErr) {
	b, i, e := h.find(c, name)
	if e != nil {
		return nil, e
	}
	return b.Servers[i], nil
}

func (h serversHandler) create(c *Config, body []byte) (any, *apiErr) {
	b := c.backend(h.backend)
	if b == nil {
		return nil, errf(400, "missing parent: backend %s does not exist", h.backend)
	}
	var m models.Server
	if e := decode(body, &m); e != nil {
		return nil, e
	}
	if i, _ := b.server(m.Name); i >= 0 {
		return nil, errf(409, "object already exists: Object %s already exists", m.Name)
	}
	b.Servers = append(b.Servers, &m)
	return m, nil
}

func (h serversHandler) replace(c *Config, name string, body []byte) (any, *apiErr) {
	b, i, e := h.find(c, name)
	if e != nil {
		return nil, e
	}
	var m models.Server
	if e := decode(body, &m); e != nil {
		return nil, e
	}
	b.Servers[i] = &m
	return m, nil
}

func (h serversHandler) remove(c *Config, name string) *apiErr {
	b, i, e := h.find(c, name)
	if e != nil {
		return e
	}
	b.Servers = append(b.Servers[:i], b.Servers[i+1:]...)
	return nil
}

// ---- runtime ----

func (s *Server) runtimeView(backend string, i int, m *models.Server) models.RuntimeServer {
	st := s.admin[backend+"/"+m.Name]
	if st == "" {
		st = "ready"
	}
	op := "up"
	if o := s.oper[backend+"/"+m.Name]; o != "" {
		op = o
	}
	if tb, ts, ok := strings.Cut(m.Track, "/"); ok {
		// A tracking server has the health of the server it tracks, and
		// its maint or drain too (measured on HAProxy 2.6: a tracker of a
		// server in maint or drain gets IMAINT or IDRAIN).
		if b := s.cfg.backend(tb); b != nil {
			if j, t := b.server(ts); t != nil && t.Track == "" {
				v := s.runtimeView(tb, j, t)
				op = v.OperationalState
				if v.AdminState == "maint" || v.AdminState == "drain" && st == "ready" {
					st = v.AdminState
				}
			}
		}
	}
	if st == "maint" {
		op = "down"
	}
	return models.RuntimeServer{Address: m.Address, AdminState: st, ID: strconv.Itoa(i + 1), Name: m.Name, OperationalState: op, Port: m.Port}
}

func (s *Server) runtimeServers(method string, p []string, q url.Values, body []byte) (answer, *apiErr) {
	backend := q.Get("backend")
	b := s.cfg.backend(backend)
	if s.runtimeBroken {
		b = nil
	}
	if len(p) == 0 && method == "GET" {
		out := []models.RuntimeServer{}
		if b != nil {
			for i, m := range b.Servers {
				out = append(out, s.runtimeView(backend, i, m))
			}
		}
		return answer{status: 200, body: out}, nil
	}
	if len(p) != 1 {
		return answer{}, errf(405, "method %s not allowed", method)
	}
	i := -1
	var m *models.Server
	if b != nil {
		i, m = b.server(p[0])
	}
	if m == nil {
		status := 404
		if method == "PUT" && s.APIVersion() == 2 {
			status = 500 // observed on 2.9.9: the runtime PUT of an unknown server is a 500 (3.2.0: 404)
		}
		return answer{}, errf(status, "no data for %s/%s: not found", backend, p[0])
	}
	switch method {
	case "GET":
		return answer{status: 200, body: s.runtimeView(backend, i, m)}, nil
	case "PUT":
		var rs models.RuntimeServer
		if e := decode(body, &rs); e != nil {
			return answer{}, e
		}
		// As the real handler (2.9.9, 3.2.0): the operational state
		// first, sent only when it differs from the server's, then the
		// admin state, then the server read back; a PUT with one of them
		// leaves the other alone.
		key := backend + "/" + m.Name
		before := s.runtimeView(backend, i, m)
		shown := ""
		// HAProxy refuses a health change on a tracking server ("cannot
		// change health on a tracking server."); the controller never asks
		// for one, and the double leaves such a server's health alone.
		if rs.OperationalState != "" && rs.OperationalState != before.OperationalState && m.Track == "" {
			// Observed: accepted, shown once, undone by the next good checks.
			// The double's checks are "good" unless SetOperationalState said
			// otherwise; forcing "up" ends such a simulated failure.
			if rs.OperationalState == "up" {
				delete(s.oper, key)
			}
			shown = rs.OperationalState
		}
		if rs.AdminState != "" {
			if rs.AdminState != "maint" && s.admin[key] == "maint" {
				// Observed (2.9.9 and 3.2.0 over 2.6): leaving maintenance,
				// to ready or drain, marks the server UP at once, until its
				// first check says otherwise.
				delete(s.oper, key)
				shown = ""
			}
			s.admin[key] = rs.AdminState
			if h := s.held[key]; h != "" {
				s.admin[key] = h
			}
		}
		v := s.runtimeView(backend, i, m)
		if shown != "" && v.AdminState != "maint" {
			v.OperationalState = shown
		}
		return answer{status: 200, body: v}, nil
	}
	return answer{}, errf(405, "method %s not allowed", method)
}

// SetOperationalState sets a server's health as the runtime endpoints report
// it ("down": its checks fail or have not risen yet; "up").
func (s *Server) SetOperationalState(backend, server, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.oper[backend+"/"+server] = state
}

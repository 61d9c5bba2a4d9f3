// Package dataplaneapi drives one HAProxy through the HAProxy Data Plane API
// v2 (2.9.x, client-native v5 models) or v3 (3.x, client-native v6 models;
// detected from the API, see apiversion.go): a small typed client (Client)
// and the target.Target implementation on top of it (Target).
package dataplaneapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/haproxytech/client-native/v5/models"

	"github.com/pgsvc/pgsvc/pkg/target"
)

// BasePath is the prefix of every call the controller makes to a v2 API
// (BasePathV3 on a v3 API).
const BasePath = "/v2/services/haproxy"

// PasswordEnv is read when neither the URL nor Options carry a password.
const PasswordEnv = "PGSVC_DATAPLANEAPI_PASSWORD"

// DefaultTimeout bounds every single HTTP call when Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Options configure a Client. Explicit options win over the URL's userinfo,
// which wins over the environment.
type Options struct {
	Username     string
	Password     string
	PasswordFile string
	// Timeout bounds each HTTP call (DefaultTimeout when zero).
	Timeout time.Duration
	// HTTPClient is used when set (tests); its Timeout is not changed.
	HTTPClient *http.Client
	// APIVersion is "v2", "v3", or "" / "auto": detected from the API at
	// the first call (GET /v3/info, then /v2/info).
	APIVersion string
}

// Client is a typed Data Plane API v2 client. It is safe for concurrent use.
type Client struct {
	base     *url.URL // scheme://host[:port][/prefix], no userinfo
	user     string
	password string
	timeout  time.Duration
	hc       *http.Client
	ver      apiVersion
	v3obj    v3Objects
	// procs: the HAProxy processes GET /runtime/info answered from.
	procs procTable
}

// New returns a client for rawURL (e.g. http://admin:secret@127.0.0.1:5555).
func New(rawURL string, opts Options) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("dataplaneapi url: %w", redactErr(err, rawURL))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("dataplaneapi url %s: scheme must be http or https", redact(u))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("dataplaneapi url %s: missing host", redact(u))
	}
	c := &Client{timeout: opts.Timeout, hc: opts.HTTPClient}
	if err := c.ver.set(opts.APIVersion); err != nil {
		return nil, err
	}
	if u.User != nil {
		c.user = u.User.Username()
		c.password, _ = u.User.Password()
	}
	if opts.Username != "" {
		c.user = opts.Username
	}
	switch {
	case opts.Password != "":
		c.password = opts.Password
	case opts.PasswordFile != "":
		b, err := os.ReadFile(opts.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("dataplaneapi password file: %w", err)
		}
		c.password = strings.TrimRight(string(b), "\r\n")
	case c.password == "":
		c.password = os.Getenv(PasswordEnv)
	}
	if c.user == "" {
		return nil, fmt.Errorf("dataplaneapi url %s: no user (the API refuses anonymous calls): put it in the url or options", redact(u))
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: keepAlive()}
	}
	base := *u
	base.User = nil
	base.Path = strings.TrimRight(base.Path, "/")
	base.RawQuery, base.Fragment = "", ""
	c.base = &base
	return c, nil
}

// maxIdlePerHost keeps a connection for every runtime request a Target has
// in flight (flipParallel, readParallel), with room: Go's default keeps 2
// per host, so 6 of 8 parallel requests dialed a new connection, and the
// API accepted one, each time (a 1,000-cluster mass failover made ~10,000).
const maxIdlePerHost = 64

// keepAlive is the default transport with maxIdlePerHost idle connections
// kept per host.
func keepAlive() http.RoundTripper {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = maxIdlePerHost
	tr.MaxIdleConns = max(tr.MaxIdleConns, maxIdlePerHost)
	return tr
}

// Name returns the API URL with the password redacted.
func (c *Client) Name() string {
	u := *c.base
	if c.user != "" {
		u.User = url.User(c.user)
	}
	return u.String()
}

// String is Name.
func (c *Client) String() string { return c.Name() }

func redact(u *url.URL) string { return u.Redacted() }

func redactErr(err error, raw string) error {
	// url.Parse errors quote the input, which may contain a password.
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s", ue.Err.Error())
	}
	_ = raw
	return errors.New("invalid url")
}

// APIError is an error answer of the API ({"code":N,"message":"..."}).
type APIError struct {
	Status  int
	Code    int
	Message string
	Method  string
	Path    string
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("dataplaneapi %s %s: %d %s", e.Method, e.Path, e.Status, msg)
}

func statusOf(err error) int {
	var e *APIError
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// IsConflict reports a 409 (stale version, object exists).
func IsConflict(err error) bool { return statusOf(err) == http.StatusConflict }

// IsOutdated reports a 406 (transaction outdated / failed).
func IsOutdated(err error) bool { return statusOf(err) == http.StatusNotAcceptable }

// IsTooMany reports a 429 (too many open transactions).
func IsTooMany(err error) bool { return statusOf(err) == http.StatusTooManyRequests }

// IsNotFound reports a 404.
func IsNotFound(err error) bool { return statusOf(err) == http.StatusNotFound }

// ErrReloadFailed is wrapped when HAProxy reported a failed reload; the API
// restored the previous configuration, so the next apply re-pushes.
var ErrReloadFailed = errors.New("haproxy reload failed")

// Retryable reports whether trying again later may succeed: network errors,
// call timeouts, 5xx, 429, 409/406 (re-read and replan) and failed reloads
// are; 400/401/403/404 and a cancelled context are not.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, ErrReloadFailed) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var e *APIError
	if errors.As(err, &e) {
		switch {
		case e.Status >= 500, e.Status == http.StatusTooManyRequests,
			e.Status == http.StatusConflict, e.Status == http.StatusNotAcceptable:
			return true
		}
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var ue *url.Error
	return errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// Meta is what a call's answer headers said.
type Meta struct {
	Status int
	// Version is the Configuration-Version header (0 when absent).
	Version int64
	// ReloadID is the Reload-Id header ("" when no reload was scheduled).
	ReloadID string
}

// Reloaded reports whether the write scheduled a reload (202 with a Reload-Id).
func (m Meta) Reloaded() bool { return m.Status == http.StatusAccepted && m.ReloadID != "" }

// Write says where a configuration write goes: exactly one of Version (a
// direct write that the API reloads after) or TransactionID.
type Write struct {
	Version       int64
	TransactionID string
}

// InTxn is a Write into transaction id.
func InTxn(id string) Write { return Write{TransactionID: id} }

// AtVersion is a direct Write at version v.
func AtVersion(v int64) Write { return Write{Version: v} }

func (w Write) apply(q url.Values) error {
	switch {
	case w.TransactionID != "" && w.Version != 0:
		return errors.New("dataplaneapi: write with both version and transaction_id")
	case w.TransactionID != "":
		q.Set("transaction_id", w.TransactionID)
	case w.Version > 0:
		q.Set("version", strconv.FormatInt(w.Version, 10))
	default:
		return errors.New("dataplaneapi: write needs a version or a transaction_id")
	}
	return nil
}

// do performs one call. body is JSON-encoded unless it is a rawBody; out, when
// non-nil, receives the decoded 2xx answer.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) (Meta, error) {
	if method == http.MethodPost || method == http.MethodPut {
		// A controller paused mid-apply re-checks its lease before each
		// write (target.WithWriteCheck); deletes (of our own transactions)
		// may still clean up.
		if err := target.CheckWrite(ctx); err != nil {
			return Meta{}, fmt.Errorf("dataplaneapi %s %s: %w", method, path, err)
		}
	}
	v, err := c.version(ctx)
	if err != nil {
		return Meta{}, fmt.Errorf("dataplaneapi %s %s: %w", method, path, err)
	}
	// A write once sent is waited for, not abandoned when ctx is canceled
	// (the controller stopping): see target.SendContext.
	var cancel context.CancelFunc
	if method == http.MethodGet {
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
	} else if ctx, cancel, err = target.SendContext(ctx, c.timeout); err != nil {
		return Meta{}, fmt.Errorf("dataplaneapi %s %s: %w", method, path, err)
	}
	defer cancel()
	u := *c.base
	prefix, route, rq := BasePath, path, q
	if v == 3 {
		prefix = BasePathV3
		route, rq = v3Route(path, q)
		v5t := v5TypeOf(body)
		if body, err = v3Body(body); err != nil {
			return Meta{}, fmt.Errorf("dataplaneapi %s %s: %w", method, path, err)
		}
		if method == http.MethodPut && v5t != nil {
			if base := c.v3obj.take(route); base != nil {
				if body, err = mergeV3(base, body, v5t); err != nil {
					return Meta{}, fmt.Errorf("dataplaneapi %s %s: %w", method, path, err)
				}
			}
		}
	}
	u.Path = c.base.Path + prefix + route
	if len(rq) > 0 {
		u.RawQuery = rq.Encode()
	}
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case rawBody:
		rd, ctype = strings.NewReader(string(b)), "text/plain"
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return Meta{}, fmt.Errorf("dataplaneapi %s %s: encode: %w", method, path, err)
		}
		rd, ctype = bytes.NewReader(buf), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return Meta{}, fmt.Errorf("dataplaneapi %s %s: %w", method, path, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	switch out.(type) {
	case *rawText, discardText:
		req.Header.Set("Accept", "text/plain")
	default:
		req.Header.Set("Accept", "application/json")
	}
	for k, v := range headersOf(ctx) {
		req.Header[k] = v
	}
	req.SetBasicAuth(c.user, c.password)
	resp, err := c.hc.Do(req)
	if err != nil {
		// url.Error carries the URL, which has no userinfo (it lives in the header).
		return Meta{}, fmt.Errorf("dataplaneapi %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	// An answer nobody reads (a write's without out, a raw POST's echo of
	// the file) is drained, not kept.
	_, discard := out.(discardText)
	discard = discard || out == nil && method != http.MethodGet
	rt, text := out.(*rawText)
	sd, stream := out.(streamed)
	stream = stream && resp.StatusCode < 300
	var data []byte
	if stream {
		if err := sd.decodeStream(io.LimitReader(resp.Body, maxAnswer)); err != nil {
			return Meta{Status: resp.StatusCode}, fmt.Errorf("dataplaneapi %s %s: decode answer: %w", method, path, err)
		}
	} else if text && resp.StatusCode < 300 {
		// A whole file (~5 MB at 1,000 clusters) read straight into the
		// string handed back, not into bytes copied after.
		var s string
		if s, err = readText(resp); err == nil {
			*rt = rawText(s)
		}
	} else {
		data, err = readBody(resp, discard && resp.StatusCode < 300)
	}
	if err != nil {
		return Meta{}, fmt.Errorf("dataplaneapi %s %s: read answer: %w", method, path, err)
	}
	m := Meta{Status: resp.StatusCode}
	// http.Header.Get canonicalises, so "Reload-ID" / "reload-id" both match.
	if v := resp.Header.Get("Configuration-Version"); v != "" {
		m.Version, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	}
	m.ReloadID = resp.Header.Get("Reload-Id")
	if resp.StatusCode >= 300 {
		ae := &APIError{Status: resp.StatusCode, Method: method, Path: path}
		var eb struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &eb) == nil && (eb.Code != 0 || eb.Message != "") {
			ae.Code, ae.Message = eb.Code, eb.Message
		} else {
			ae.Message = strings.TrimSpace(string(data))
			if len(ae.Message) > 200 {
				ae.Message = ae.Message[:200]
			}
		}
		ae.Message = c.redactSecret(ae.Message)
		return m, ae
	}
	if text || discard || stream {
		return m, nil
	}
	if v == 3 && method == http.MethodGet {
		c.v3obj.keep(route, data, bytes.HasPrefix(bytes.TrimSpace(data), []byte("[")))
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return m, fmt.Errorf("dataplaneapi %s %s: decode answer: %w", method, path, err)
		}
	}
	return m, nil
}

type rawBody string

// streamed is an answer do decodes as it reads it (a large one: no copy
// of its bytes), when the status is a success.
type streamed interface{ decodeStream(io.Reader) error }

// maxAnswer bounds an answer's body.
const maxAnswer = 256 << 20

// readBody reads an answer's body: into a buffer of its Content-Length
// where the API sent one (io.ReadAll grows its buffer by doubling: ~2.3
// times a 5 MB file allocated per whole-file read), or, when discard is
// set, into nothing (nil data).
func readBody(resp *http.Response, discard bool) ([]byte, error) {
	body := io.LimitReader(resp.Body, maxAnswer)
	if discard {
		_, err := io.Copy(io.Discard, body)
		return nil, err
	}
	if n := resp.ContentLength; n > 0 && n <= maxAnswer {
		buf := make([]byte, n)
		if _, err := io.ReadFull(body, buf); err != nil {
			return nil, err
		}
		return buf, nil
	}
	return io.ReadAll(body)
}

// readText is readBody into a string, grown once to the Content-Length
// where there is one.
func readText(resp *http.Response) (string, error) {
	var b strings.Builder
	if n := resp.ContentLength; n > 0 && n <= maxAnswer {
		b.Grow(int(n))
	}
	_, err := io.Copy(&b, io.LimitReader(resp.Body, maxAnswer))
	return b.String(), err
}

// envelope is the {"_version":N,"data":...} shape of configuration reads.
type envelope[T any] struct {
	Version int64 `json:"_version"`
	Data    T     `json:"data"`
}

func getData[T any](ctx context.Context, c *Client, path string, q url.Values) (T, int64, error) {
	if v, err := c.version(ctx); err == nil && v == 3 {
		// v3 answers the bare data; the version is in the header.
		var d T
		m, err := c.do(ctx, http.MethodGet, path, q, nil, &d)
		return d, m.Version, err
	}
	var env envelope[T]
	m, err := c.do(ctx, http.MethodGet, path, q, nil, &env)
	if err != nil {
		var zero T
		return zero, 0, err
	}
	v := env.Version
	if v == 0 {
		v = m.Version
	}
	return env.Data, v, nil
}

func write[T any](ctx context.Context, c *Client, method, path string, q url.Values, w Write, body any) (T, Meta, error) {
	var out T
	if q == nil {
		q = url.Values{}
	}
	if err := w.apply(q); err != nil {
		return out, Meta{}, err
	}
	var dst any = &out
	if body == nil {
		dst = nil
	}
	m, err := c.do(ctx, method, path, q, body, dst)
	return out, m, err
}

// GetVersion returns the configuration version (a bare integer answer).
func (c *Client) GetVersion(ctx context.Context) (int64, error) {
	var v int64
	if _, err := c.do(ctx, http.MethodGet, "/configuration/version", nil, nil, &v); err != nil {
		return 0, err
	}
	return v, nil
}

// StartTransaction opens a transaction on version.
func (c *Client) StartTransaction(ctx context.Context, version int64) (*models.Transaction, error) {
	var t models.Transaction
	q := url.Values{"version": {strconv.FormatInt(version, 10)}}
	if _, err := c.do(ctx, http.MethodPost, "/transactions", q, nil, &t); err != nil {
		return nil, err
	}
	if t.ID == "" {
		return nil, errors.New("dataplaneapi POST /transactions: answer without id")
	}
	return &t, nil
}

// GetTransaction reads a transaction.
func (c *Client) GetTransaction(ctx context.Context, id string) (*models.Transaction, error) {
	var t models.Transaction
	if _, err := c.do(ctx, http.MethodGet, "/transactions/"+url.PathEscape(id), nil, nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// CommitTransaction commits; Meta carries the Reload-Id and the new version.
func (c *Client) CommitTransaction(ctx context.Context, id string) (*models.Transaction, Meta, error) {
	var t models.Transaction
	m, err := c.do(ctx, http.MethodPut, "/transactions/"+url.PathEscape(id), nil, nil, &t)
	if err != nil {
		return nil, m, err
	}
	return &t, m, nil
}

// DeleteTransaction discards a transaction.
func (c *Client) DeleteTransaction(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/transactions/"+url.PathEscape(id), nil, nil, nil)
	return err
}

// GetBackends lists backends.
func (c *Client) GetBackends(ctx context.Context) (models.Backends, int64, error) {
	return getData[models.Backends](ctx, c, "/configuration/backends", nil)
}

// GetBackend reads one backend.
func (c *Client) GetBackend(ctx context.Context, name string) (*models.Backend, int64, error) {
	return getData[*models.Backend](ctx, c, "/configuration/backends/"+url.PathEscape(name), nil)
}

// CreateBackend adds a backend.
func (c *Client) CreateBackend(ctx context.Context, b *models.Backend, w Write) (Meta, error) {
	_, m, err := write[models.Backend](ctx, c, http.MethodPost, "/configuration/backends", nil, w, b)
	return m, err
}

// ReplaceBackend replaces a backend (full replace: omitted fields are removed).
func (c *Client) ReplaceBackend(ctx context.Context, b *models.Backend, w Write) (Meta, error) {
	_, m, err := write[models.Backend](ctx, c, http.MethodPut, "/configuration/backends/"+url.PathEscape(b.Name), nil, w, b)
	return m, err
}

// DeleteBackend removes a backend.
func (c *Client) DeleteBackend(ctx context.Context, name string, w Write) (Meta, error) {
	_, m, err := write[struct{}](ctx, c, http.MethodDelete, "/configuration/backends/"+url.PathEscape(name), nil, w, nil)
	return m, err
}

// GetFrontends lists frontends.
func (c *Client) GetFrontends(ctx context.Context) (models.Frontends, int64, error) {
	return getData[models.Frontends](ctx, c, "/configuration/frontends", nil)
}

// GetFrontend reads one frontend.
func (c *Client) GetFrontend(ctx context.Context, name string) (*models.Frontend, int64, error) {
	return getData[*models.Frontend](ctx, c, "/configuration/frontends/"+url.PathEscape(name), nil)
}

// CreateFrontend adds a frontend.
func (c *Client) CreateFrontend(ctx context.Context, f *models.Frontend, w Write) (Meta, error) {
	_, m, err := write[models.Frontend](ctx, c, http.MethodPost, "/configuration/frontends", nil, w, f)
	return m, err
}

// ReplaceFrontend replaces a frontend.
func (c *Client) ReplaceFrontend(ctx context.Context, f *models.Frontend, w Write) (Meta, error) {
	_, m, err := write[models.Frontend](ctx, c, http.MethodPut, "/configuration/frontends/"+url.PathEscape(f.Name), nil, w, f)
	return m, err
}

// DeleteFrontend removes a frontend.
func (c *Client) DeleteFrontend(ctx context.Context, name string, w Write) (Meta, error) {
	_, m, err := write[struct{}](ctx, c, http.MethodDelete, "/configuration/frontends/"+url.PathEscape(name), nil, w, nil)
	return m, err
}

func feQ(frontend string) url.Values { return url.Values{"frontend": {frontend}} }

// GetBinds lists a frontend's binds.
func (c *Client) GetBinds(ctx context.Context, frontend string) (models.Binds, int64, error) {
	return getData[models.Binds](ctx, c, "/configuration/binds", feQ(frontend))
}

// CreateBind adds a bind to a frontend.
func (c *Client) CreateBind(ctx context.Context, frontend string, b *models.Bind, w Write) (Meta, error) {
	_, m, err := write[models.Bind](ctx, c, http.MethodPost, "/configuration/binds", feQ(frontend), w, b)
	return m, err
}

// ReplaceBind replaces the bind named b.Name.
func (c *Client) ReplaceBind(ctx context.Context, frontend string, b *models.Bind, w Write) (Meta, error) {
	_, m, err := write[models.Bind](ctx, c, http.MethodPut, "/configuration/binds/"+url.PathEscape(b.Name), feQ(frontend), w, b)
	return m, err
}

// DeleteBind removes a bind.
func (c *Client) DeleteBind(ctx context.Context, frontend, name string, w Write) (Meta, error) {
	_, m, err := write[struct{}](ctx, c, http.MethodDelete, "/configuration/binds/"+url.PathEscape(name), feQ(frontend), w, nil)
	return m, err
}

func hcQ(backend string) url.Values {
	return url.Values{"parent_type": {"backend"}, "parent_name": {backend}}
}

// GetHTTPChecks lists a backend's http-check rules.
func (c *Client) GetHTTPChecks(ctx context.Context, backend string) (models.HTTPChecks, int64, error) {
	return getData[models.HTTPChecks](ctx, c, "/configuration/http_checks", hcQ(backend))
}

// CreateHTTPCheck adds an http-check rule at hc.Index.
func (c *Client) CreateHTTPCheck(ctx context.Context, backend string, hc *models.HTTPCheck, w Write) (Meta, error) {
	path := "/configuration/http_checks"
	if v, err := c.version(ctx); err == nil && v == 3 && hc.Index != nil {
		// v3 takes the index in the path (POST .../http_checks/{index}).
		path += "/" + strconv.FormatInt(*hc.Index, 10)
	}
	_, m, err := write[models.HTTPCheck](ctx, c, http.MethodPost, path, hcQ(backend), w, hc)
	return m, err
}

// ReplaceHTTPCheck replaces the rule at hc.Index.
func (c *Client) ReplaceHTTPCheck(ctx context.Context, backend string, hc *models.HTTPCheck, w Write) (Meta, error) {
	idx := int64(0)
	if hc.Index != nil {
		idx = *hc.Index
	}
	_, m, err := write[models.HTTPCheck](ctx, c, http.MethodPut, "/configuration/http_checks/"+strconv.FormatInt(idx, 10), hcQ(backend), w, hc)
	return m, err
}

// DeleteHTTPCheck removes the rule at index.
func (c *Client) DeleteHTTPCheck(ctx context.Context, backend string, index int64, w Write) (Meta, error) {
	_, m, err := write[struct{}](ctx, c, http.MethodDelete, "/configuration/http_checks/"+strconv.FormatInt(index, 10), hcQ(backend), w, nil)
	return m, err
}

func beQ(backend string) url.Values { return url.Values{"backend": {backend}} }

// GetServers lists a backend's servers.
func (c *Client) GetServers(ctx context.Context, backend string) (models.Servers, int64, error) {
	return getData[models.Servers](ctx, c, "/configuration/servers", beQ(backend))
}

// GetServer reads one server.
func (c *Client) GetServer(ctx context.Context, backend, name string) (*models.Server, int64, error) {
	return getData[*models.Server](ctx, c, "/configuration/servers/"+url.PathEscape(name), beQ(backend))
}

// CreateServer adds a server (always a reload outside a transaction).
func (c *Client) CreateServer(ctx context.Context, backend string, s *models.Server, w Write) (Meta, error) {
	_, m, err := write[models.Server](ctx, c, http.MethodPost, "/configuration/servers", beQ(backend), w, s)
	return m, err
}

// ReplaceServer replaces a whole server. Outside a transaction the API
// applies weight/address/port/maintenance-only changes at runtime (200, no
// reload); anything else (backup included) answers 202 and reloads.
func (c *Client) ReplaceServer(ctx context.Context, backend string, s *models.Server, w Write) (Meta, error) {
	_, m, err := write[models.Server](ctx, c, http.MethodPut, "/configuration/servers/"+url.PathEscape(s.Name), beQ(backend), w, s)
	return m, err
}

// DeleteServer removes a server.
func (c *Client) DeleteServer(ctx context.Context, backend, name string, w Write) (Meta, error) {
	_, m, err := write[struct{}](ctx, c, http.MethodDelete, "/configuration/servers/"+url.PathEscape(name), beQ(backend), w, nil)
	return m, err
}

// GetRawConfig returns the whole configuration file and its version.
func (c *Client) GetRawConfig(ctx context.Context) (string, int64, error) {
	if v, err := c.version(ctx); err == nil && v == 3 {
		// v3 answers text/plain with the version in a header.
		var text rawText
		m, err := c.do(ctx, http.MethodGet, "/configuration/raw", nil, nil, &text)
		if err != nil {
			return "", 0, err
		}
		return string(text), m.Version, nil
	}
	var out struct {
		Version int64  `json:"_version"`
		Data    string `json:"data"`
	}
	m, err := c.do(ctx, http.MethodGet, "/configuration/raw", nil, nil, &out)
	if err != nil {
		return "", 0, err
	}
	v := m.Version
	if v == 0 {
		v = out.Version
	}
	return out.Data, v, nil
}

// PostRawConfig replaces the whole configuration file at version (one
// write, one reload).
func (c *Client) PostRawConfig(ctx context.Context, version int64, text string) (Meta, error) {
	q := url.Values{"version": {strconv.FormatInt(version, 10)}}
	if v, err := c.version(ctx); err == nil && v == 3 {
		// v3 answers the stored text as text/plain.
		return c.do(ctx, http.MethodPost, "/configuration/raw", q, rawBody(text), discardText{})
	}
	return c.do(ctx, http.MethodPost, "/configuration/raw", q, rawBody(text), nil)
}

// GetReload reads a reload's status (in_progress, succeeded, failed).
func (c *Client) GetReload(ctx context.Context, id string) (*models.Reload, error) {
	var r models.Reload
	if _, err := c.do(ctx, http.MethodGet, "/reloads/"+url.PathEscape(id), nil, nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// GetGlobal reads the global section.
func (c *Client) GetGlobal(ctx context.Context) (*models.Global, error) {
	if v, err := c.version(ctx); err == nil && v == 3 {
		return c.getGlobalV3(ctx)
	}
	g, _, err := getData[*models.Global](ctx, c, "/configuration/global", nil)
	return g, err
}

// GetDefaults reads the (first) defaults section.
func (c *Client) GetDefaults(ctx context.Context) (*models.Defaults, error) {
	if v, err := c.version(ctx); err == nil && v == 3 {
		// v3 lists every (named) defaults section.
		all, _, err := getData[[]*models.Defaults](ctx, c, "/configuration/defaults", nil)
		if err != nil || len(all) == 0 {
			return nil, err
		}
		return all[0], nil
	}
	d, _, err := getData[*models.Defaults](ctx, c, "/configuration/defaults", nil)
	return d, err
}

// GetRuntimeServers lists a backend's live server states.
func (c *Client) GetRuntimeServers(ctx context.Context, backend string) ([]*models.RuntimeServer, error) {
	var out []*models.RuntimeServer
	_, err := c.do(ctx, http.MethodGet, "/runtime/servers", beQ(backend), nil, &out)
	return out, err
}

// GetRuntimeServer reads one server's live state.
func (c *Client) GetRuntimeServer(ctx context.Context, backend, name string) (*models.RuntimeServer, error) {
	var out models.RuntimeServer
	if _, err := c.do(ctx, http.MethodGet, "/runtime/servers/"+url.PathEscape(name), beQ(backend), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReplaceRuntimeServer sets admin_state (ready/maint/drain) or
// operational_state at runtime: no file write, no reload, lost at the next
// reload unless a server-state file carries it over.
func (c *Client) ReplaceRuntimeServer(ctx context.Context, backend, name string, s *models.RuntimeServer) (*models.RuntimeServer, error) {
	var out models.RuntimeServer
	if _, err := c.do(ctx, http.MethodPut, "/runtime/servers/"+url.PathEscape(name), beQ(backend), s, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

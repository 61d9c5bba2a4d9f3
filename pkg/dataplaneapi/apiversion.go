package dataplaneapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	v5 "github.com/haproxytech/client-native/v5/models"
	v6 "github.com/haproxytech/client-native/v6/models"
)

// BasePathV3 is the prefix of every call to a Data Plane API v3 (3.x), whose
// models are client-native v6's. A v3 API answers 404 under /v2 and the
// reverse, so the version is detected (or configured) once per client.
const BasePathV3 = "/v3/services/haproxy"

// apiVersion is the API major version a client talks: fixed by the options,
// or detected at the first call and then kept.
type apiVersion struct {
	mu    sync.Mutex
	fixed bool
	v     int // 0 = not known yet
}

// ParseAPIVersion checks an api_version setting: "", "auto", "v2", "v3"
// (also "2" / "3"). It returns 0 for auto-detection.
func ParseAPIVersion(s string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return 0, nil
	case "v2", "2":
		return 2, nil
	case "v3", "3":
		return 3, nil
	}
	return 0, fmt.Errorf("dataplaneapi api_version %q: want auto, v2 or v3", s)
}

func (a *apiVersion) set(s string) error {
	v, err := ParseAPIVersion(s)
	if err != nil {
		return err
	}
	a.v, a.fixed = v, v != 0
	return nil
}

// APIVersion returns 2 or 3: the configured version, or the one detected
// from the API (GET /v3/info answers on 3.x only, /v2/info on 2.x only).
// Detection is retried at the next call when the API cannot be reached.
func (c *Client) APIVersion(ctx context.Context) (int, error) { return c.version(ctx) }

func (c *Client) version(ctx context.Context) (int, error) {
	c.ver.mu.Lock()
	defer c.ver.mu.Unlock()
	if c.ver.v != 0 {
		return c.ver.v, nil
	}
	v, err := c.detect(ctx)
	if err != nil {
		return 0, err
	}
	c.ver.v = v
	return v, nil
}

// detect asks /v3/info, then /v2/info. Auth failures, 5xx and network errors
// are errors (retried later), never a guess.
func (c *Client) detect(ctx context.Context) (int, error) {
	for _, cand := range []struct {
		v    int
		path string
	}{{3, "/v3/info"}, {2, "/v2/info"}} {
		status, err := c.probe(ctx, cand.path)
		if err != nil {
			return 0, fmt.Errorf("detect API version: GET %s: %w", cand.path, err)
		}
		switch {
		case status == http.StatusOK:
			return cand.v, nil
		case status == http.StatusNotFound:
			continue
		default:
			return 0, fmt.Errorf("detect API version: %w", &APIError{Status: status, Method: http.MethodGet, Path: cand.path})
		}
	}
	return 0, errors.New("detect API version: neither /v3/info nor /v2/info answers (is this a Data Plane API? set api_version to skip detection)")
}

func (c *Client) probe(ctx context.Context, path string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := *c.base
	u.Path = c.base.Path + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(c.user, c.password)
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, nil
}

// v3Route turns a v2 path and query into the v3 shape: children of a
// frontend or backend live under it (/configuration/backends/B/servers/S
// instead of /configuration/servers/S?backend=B), runtime servers under
// /runtime/backends/B/servers.
func v3Route(path string, q url.Values) (string, url.Values) {
	seg := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(seg) < 2 {
		return path, q
	}
	nq := url.Values{}
	for k, v := range q {
		nq[k] = v
	}
	take := func(k string) string { v := nq.Get(k); nq.Del(k); return url.PathEscape(v) }
	rest := ""
	if len(seg) > 2 {
		rest = "/" + strings.Join(seg[2:], "/")
	}
	switch {
	case seg[0] == "configuration" && seg[1] == "binds" && q.Get("frontend") != "":
		return "/configuration/frontends/" + take("frontend") + "/binds" + rest, nq
	case seg[0] == "configuration" && seg[1] == "http_checks" && q.Get("parent_name") != "":
		parent := q.Get("parent_type")
		nq.Del("parent_type")
		if parent == "" {
			parent = "backend"
		}
		return "/configuration/" + url.PathEscape(parent) + "s/" + take("parent_name") + "/http_checks" + rest, nq
	case seg[0] == "configuration" && seg[1] == "servers" && q.Get("backend") != "":
		return "/configuration/backends/" + take("backend") + "/servers" + rest, nq
	case seg[0] == "runtime" && seg[1] == "servers" && q.Get("backend") != "":
		return "/runtime/backends/" + take("backend") + "/servers" + rest, nq
	}
	return path, q
}

// v3Body re-expresses a client-native v5 model as its v6 model (same JSON
// names for every field the controller sets; fields v6 dropped, such as an
// http-check's index, which v3 takes in the path, are left out), so a v3 API
// gets exactly the v6 shape. Other bodies pass unchanged.
func v3Body(body any) (any, error) {
	var dst any
	switch body.(type) {
	case *v5.Server:
		dst = &v6.Server{}
	case *v5.Backend:
		dst = &v6.Backend{}
	case *v5.Frontend:
		dst = &v6.Frontend{}
	case *v5.Bind:
		dst = &v6.Bind{}
	case *v5.HTTPCheck:
		dst = &v6.HTTPCheck{}
	case *v5.RuntimeServer:
		dst = &v6.RuntimeServer{}
	default:
		return body, nil
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	if err := json.Unmarshal(b, dst); err != nil {
		return nil, fmt.Errorf("as a v6 model: %w", err)
	}
	return dst, nil
}

// rawText receives a text/plain answer verbatim.
type rawText string

// discardText asks for a text/plain answer and drops it unread: a raw
// POST's answer is the whole stored file (~5 MB at 1,000 clusters).
type discardText struct{}

// redactSecret removes the client's password from text the API sent back
// (a 2.x API answers a wrong password with "invalid password: <password>").
func (c *Client) redactSecret(s string) string {
	if c.password == "" {
		return s
	}
	return strings.ReplaceAll(s, c.password, "<redacted>")
}

// getGlobalV3 reads v3's global section (a client-native v6 model, which
// nests some v5 fields, e.g. performance_options.server_state_file) into
// the v5 fields the driver reads.
func (c *Client) getGlobalV3(ctx context.Context) (*v5.Global, error) {
	g, _, err := getData[*v6.Global](ctx, c, "/configuration/global", nil)
	if err != nil || g == nil {
		return nil, err
	}
	out := &v5.Global{}
	if g.PerformanceOptions != nil {
		out.ServerStateFile = g.PerformanceOptions.ServerStateFile
		out.ServerStateBase = g.PerformanceOptions.ServerStateBase
	}
	return out, nil
}

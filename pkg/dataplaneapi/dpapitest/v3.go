package dpapitest

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"

	"github.com/haproxytech/client-native/v5/models"
	v6 "github.com/haproxytech/client-native/v6/models"
)

// basePathV3 is where a Data Plane API v3 (3.x) answers; it answers 404
// under /v2 (and a v2 API under /v3), as the real ones do.
const basePathV3 = "/v3/services/haproxy"

// WithAPIVersion makes the double a Data Plane API v2 (default) or v3. A v3
// double answers as the recorded 3.2.0 exchanges in testdata/fixtures-v3:
// children under their parent (/configuration/backends/B/servers), runtime
// servers under /runtime/backends/B/servers, bare lists and objects (no
// {"_version","data"} envelope: the version is in Configuration-Version),
// the raw configuration as text/plain, http-check creation at
// .../http_checks/{index}, /v3/info.
func WithAPIVersion(v int) Option { return func(s *Server) { s.apiVersion = v } }

// APIVersion is the double's API version (2 or 3).
func (s *Server) APIVersion() int {
	if s.apiVersion == 3 {
		return 3
	}
	return 2
}

func (s *Server) basePath() string {
	if s.APIVersion() == 3 {
		return basePathV3
	}
	return basePath
}

// v2Form turns a v3 request (path relative to the base, query, body) into
// the v2 form the double's handlers serve.
func v2Form(method, path string, q url.Values, body []byte) (string, url.Values, []byte) {
	p := segs(path)
	nq := url.Values{}
	for k, v := range q {
		nq[k] = v
	}
	join := func(parts []string) string {
		out := make([]string, len(parts))
		for i, x := range parts {
			out[i] = url.PathEscape(x)
		}
		return "/" + strings.Join(out, "/")
	}
	switch {
	case len(p) >= 4 && p[0] == "configuration" && p[1] == "frontends" && p[3] == "binds":
		nq.Set("frontend", p[2])
		return join(append([]string{"configuration", "binds"}, p[4:]...)), nq, body
	case len(p) >= 4 && p[0] == "configuration" && p[1] == "backends" && p[3] == "servers":
		nq.Set("backend", p[2])
		return join(append([]string{"configuration", "servers"}, p[4:]...)), nq, body
	case len(p) >= 4 && p[0] == "configuration" && p[1] == "backends" && p[3] == "http_checks":
		nq.Set("parent_type", "backend")
		nq.Set("parent_name", p[2])
		rest := p[4:]
		if method == "POST" && len(rest) == 1 {
			// v3 creates at .../http_checks/{index}; the v2 handler takes the
			// index from the body.
			if i, err := strconv.ParseInt(rest[0], 10, 64); err == nil {
				var m map[string]any
				if json.Unmarshal(body, &m) == nil {
					m["index"] = i
					body, _ = json.Marshal(m)
				}
			}
			rest = nil
		}
		return join(append([]string{"configuration", "http_checks"}, rest...)), nq, body
	case len(p) >= 4 && p[0] == "runtime" && p[1] == "backends" && p[3] == "servers":
		nq.Set("backend", p[2])
		return join(append([]string{"runtime", "servers"}, p[4:]...)), nq, body
	}
	return path, q, body
}

// v3Answer reshapes a v2 answer: envelopes are unwrapped, the raw
// configuration becomes text.
func v3Answer(path string, a answer) (answer, bool) {
	if m, ok := a.body.(map[string]any); ok {
		if d, ok := m["data"]; ok && len(m) <= 2 {
			a.body = d
		}
	}
	p := segs(path)
	text := len(p) == 2 && p[0] == "configuration" && p[1] == "raw"
	if len(p) >= 2 && a.body != nil && !text {
		a.body = asV6(p[0]+"/"+p[1], a.body)
	}
	return a, text
}

// asV6 re-expresses an answer (one object or a list) as client-native v6
// models, so the double answers in v3's shape (e.g. no http-check index).
func asV6(kind string, body any) any {
	var mk func() any
	switch kind {
	case "configuration/servers":
		mk = func() any { return &v6.Server{} }
	case "configuration/backends":
		mk = func() any { return &v6.Backend{} }
	case "configuration/frontends":
		mk = func() any { return &v6.Frontend{} }
	case "configuration/binds":
		mk = func() any { return &v6.Bind{} }
	case "configuration/http_checks":
		mk = func() any { return &v6.HTTPCheck{} }
	case "runtime/servers":
		mk = func() any { return &v6.RuntimeServer{} }
	default:
		return body
	}
	b, err := json.Marshal(body)
	if err != nil {
		return body
	}
	var list []json.RawMessage
	if json.Unmarshal(b, &list) == nil {
		out := make([]any, 0, len(list))
		for _, item := range list {
			v := mk()
			if json.Unmarshal(item, v) != nil {
				return body
			}
			out = append(out, v)
		}
		return out
	}
	v := mk()
	if json.Unmarshal(b, v) != nil {
		return body
	}
	return v
}

// v3Section answers global and defaults as client-native v6 has them: the
// global's state-file settings under performance_options, defaults as a
// list of named sections.
func v3Section(data any) any {
	switch d := data.(type) {
	case *models.Global:
		b, _ := json.Marshal(d)
		var g v6.Global
		_ = json.Unmarshal(b, &g)
		if d.ServerStateFile != "" || d.ServerStateBase != "" {
			g.PerformanceOptions = &v6.PerformanceOptions{ServerStateFile: d.ServerStateFile, ServerStateBase: d.ServerStateBase}
		}
		return &g
	case *models.Defaults:
		b, _ := json.Marshal(d)
		var v v6.Defaults
		_ = json.Unmarshal(b, &v)
		return []*v6.Defaults{&v}
	}
	return data
}

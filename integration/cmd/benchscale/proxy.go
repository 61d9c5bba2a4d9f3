package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// counter is a reverse proxy between the controller and the Data Plane API
// that counts every request, by method and path shape.
type counter struct {
	mu    sync.Mutex
	total int
	by    map[string]int
	last  time.Time
	srv   *http.Server
	addr  string
}

func startCounter(backend string) (*counter, error) {
	u, err := url.Parse(backend)
	if err != nil {
		return nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConns: 128, MaxIdleConnsPerHost: 128, IdleConnTimeout: time.Minute}
	c := &counter{by: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c.addr = ln.Addr().String()
	c.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.total++
		c.by[r.Method+" "+pathShape(r.URL.Path)]++
		c.last = time.Now()
		c.mu.Unlock()
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

func (c *counter) close() {
	if c != nil {
		_ = c.srv.Close()
	}
}

// pathShape replaces object names in a Data Plane API path with {name}:
// /v2/services/haproxy/configuration/servers/pg-b0001-2 -> .../servers/{name}.
func pathShape(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, "pg-") || (i > 0 && (segs[i-1] == "transactions" || segs[i-1] == "reloads")) {
			segs[i] = "{name}"
		}
	}
	return strings.Join(segs, "/")
}

// snap is the counter at one moment.
type snap struct {
	total int
	by    map[string]int
}

func (c *counter) snapshot() snap {
	if c == nil {
		return snap{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := snap{total: c.total, by: make(map[string]int, len(c.by))}
	for k, v := range c.by {
		s.by[k] = v
	}
	return s
}

// quietSince is how long no request went through.
func (c *counter) quietSince() time.Duration {
	if c == nil {
		return time.Hour
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last.IsZero() {
		return time.Hour
	}
	return time.Since(c.last)
}

// diff returns the requests between two snapshots and the busiest shapes.
func (s snap) since(before snap) (int, string) {
	type kv struct {
		k string
		v int
	}
	var l []kv
	for k, v := range s.by {
		if d := v - before.by[k]; d > 0 {
			l = append(l, kv{k, d})
		}
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || (l[i].v == l[j].v && l[i].k < l[j].k) })
	var parts []string
	for i, e := range l {
		if i == 6 {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, fmt.Sprintf("%d %s", e.v, e.k))
	}
	return s.total - before.total, strings.Join(parts, ", ")
}

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// counter is a proxy between the controller and the Data Plane API that
// counts every request, by method and path shape. It works per connection:
// each client connection gets its own connection to the API, the request
// heads are parsed (to count them and to find where each body ends) and
// copied as they are, the answers are copied back untouched. (An
// httputil.ReverseProxy cost the benchmark ~3.9 s of CPU in a 1,000-cluster
// mass failover, as much as the API itself, on a 2-core machine where the
// API is what is measured.)
type counter struct {
	mu       sync.Mutex
	total    int
	by       map[string]int
	last     time.Time
	ln       net.Listener
	upstream string // host:port
	addr     string
	conns    sync.WaitGroup
	closed   chan struct{}
}

func startCounter(backend string) (*counter, error) {
	u, err := url.Parse(backend)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("counter: %s: only http", backend)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &counter{by: map[string]int{}, ln: ln, upstream: u.Host, addr: ln.Addr().String(), closed: make(chan struct{})}
	go c.serve()
	return c, nil
}

func (c *counter) serve() {
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.conns.Add(1)
		go func() {
			defer c.conns.Done()
			c.proxy(conn)
		}()
	}
}

// proxy carries one client connection.
func (c *counter) proxy(client net.Conn) {
	defer client.Close()
	up, err := net.DialTimeout("tcp", c.upstream, 10*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	go func() {
		_, _ = io.Copy(client, up)
		_ = client.Close()
	}()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-c.closed:
			_ = client.Close()
		case <-done:
		}
	}()
	br := bufio.NewReaderSize(client, 16<<10)
	bw := bufio.NewWriterSize(up, 16<<10)
	for {
		method, path, body, chunked, head, err := readHead(br)
		if err != nil {
			return
		}
		c.mu.Lock()
		c.total++
		c.by[method+" "+pathShape(path)]++
		c.last = time.Now()
		c.mu.Unlock()
		if _, err := bw.Write(head); err != nil {
			return
		}
		switch {
		case chunked:
			err = copyChunked(bw, br)
		case body > 0:
			_, err = io.CopyN(bw, br, body)
		}
		if err != nil || bw.Flush() != nil {
			return
		}
	}
}

// readHead reads one request head: its method, path, body length (or
// chunked) and raw bytes.
func readHead(br *bufio.Reader) (method, path string, body int64, chunked bool, head []byte, err error) {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return "", "", 0, false, nil, err
		}
		head = append(head, line...)
		t := strings.TrimRight(string(line), "\r\n")
		if method == "" {
			f := strings.Fields(t)
			if len(f) != 3 {
				return "", "", 0, false, nil, fmt.Errorf("counter: bad request line %q", t)
			}
			method, path = f[0], f[1]
			if i := strings.IndexByte(path, '?'); i >= 0 {
				path = path[:i]
			}
			continue
		}
		if t == "" {
			return method, path, body, chunked, head, nil
		}
		k, v, ok := strings.Cut(t, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "content-length":
			if body, err = strconv.ParseInt(v, 10, 64); err != nil {
				return "", "", 0, false, nil, fmt.Errorf("counter: content-length %q", v)
			}
		case "transfer-encoding":
			chunked = strings.EqualFold(v, "chunked")
		}
	}
}

// copyChunked copies a chunked body as it is, trailer included.
func copyChunked(w io.Writer, br *bufio.Reader) error {
	for {
		line, err := copyLine(w, br)
		if err != nil {
			return err
		}
		sz := strings.TrimSpace(line)
		if i := strings.IndexByte(sz, ';'); i >= 0 {
			sz = sz[:i]
		}
		n, err := strconv.ParseInt(sz, 16, 64)
		if err != nil {
			return fmt.Errorf("counter: chunk size %q", sz)
		}
		if n == 0 {
			// The trailer, up to an empty line.
			for line != "" {
				if line, err = copyLine(w, br); err != nil {
					return err
				}
			}
			return nil
		}
		if _, err := io.CopyN(w, br, n+2); err != nil { // the data and its CRLF
			return err
		}
	}
}

// copyLine copies one line and returns it without its line end.
func copyLine(w io.Writer, br *bufio.Reader) (string, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return "", err
	}
	if _, err := w.Write(line); err != nil {
		return "", err
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

func (c *counter) close() {
	if c != nil {
		_ = c.ln.Close()
		close(c.closed)
		c.conns.Wait()
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

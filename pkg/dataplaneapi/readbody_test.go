package dataplaneapi

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// bigFile is a configuration file's worth of text (n servers).
func bigFile(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  server pg-b%04d-%d 127.90.%d.%d:5432 check port 8008 weight 100\n", i/3, i%3, i/250, i%250)
	}
	return b.String()
}

// TestReadBody: an answer is read whole whether the API framed it with a
// Content-Length or chunked it, an answer cut short of its Content-Length
// is an error, and a drained answer is read to its end and kept nowhere.
func TestReadBody(t *testing.T) {
	text := bigFile(20000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/length":
			w.Header().Set("Content-Length", fmt.Sprint(len(text)))
			_, _ = io.WriteString(w, text)
		case "/chunked":
			_, _ = io.WriteString(w, text[:len(text)/2])
			w.(http.Flusher).Flush() // no Content-Length from here on
			_, _ = io.WriteString(w, text[len(text)/2:])
		case "/short":
			hj, _, _ := w.(http.Hijacker).Hijack()
			_, _ = fmt.Fprintf(hj, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(text), text[:1000])
			_ = hj.(*net.TCPConn).CloseWrite()
			_ = hj.Close()
		}
	}))
	defer srv.Close()
	get := func(path string) *http.Response {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, path := range []string{"/length", "/chunked"} {
		resp := get(path)
		if path == "/chunked" && resp.ContentLength != -1 {
			t.Fatalf("%s: Content-Length %d, want none", path, resp.ContentLength)
		}
		data, err := readBody(resp, false)
		if err != nil || !bytes.Equal(data, []byte(text)) {
			t.Errorf("%s: %d bytes, %v; want the %d bytes sent", path, len(data), err, len(text))
		}
		if s, err := readText(get(path)); err != nil || s != text {
			t.Errorf("%s as text: %d bytes, %v; want the %d bytes sent", path, len(s), err, len(text))
		}
	}
	if s, err := readText(get("/short")); err == nil {
		t.Errorf("a text answer cut short of its Content-Length read as %d bytes without an error", len(s))
	}
	if data, err := readBody(get("/short"), false); err == nil {
		t.Errorf("an answer cut short of its Content-Length read as %d bytes without an error", len(data))
	}
	resp := get("/length")
	if data, err := readBody(resp, true); err != nil || data != nil {
		t.Errorf("drained: %d bytes, %v; want nothing kept", len(data), err)
	}
	if n, _ := resp.Body.Read(make([]byte, 1)); n != 0 {
		t.Error("a drained answer left bytes unread")
	}
}

// BenchmarkReadBody: one whole-file answer (~1.3 MB here; ~5 MB at 1,000
// clusters), read into its Content-Length (as bytes or as the text) against
// io.ReadAll's doubling.
func BenchmarkReadBody(b *testing.B) {
	text := bigFile(20000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(text)))
		_, _ = io.WriteString(w, text)
	}))
	defer srv.Close()
	for _, mode := range []string{"readBody", "readText", "io.ReadAll"} {
		b.Run(mode, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, err := http.Get(srv.URL)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				switch mode {
				case "readBody":
					data, rerr := readBody(resp, false)
					n, err = len(data), rerr
				case "readText":
					s, rerr := readText(resp)
					n, err = len(s), rerr
				default:
					data, rerr := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
					n, err = len(data), rerr
				}
				resp.Body.Close()
				if err != nil || n != len(text) {
					b.Fatalf("%d bytes, %v", n, err)
				}
			}
		})
	}
}

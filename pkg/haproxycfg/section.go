package haproxycfg

import (
	"hash/maphash"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/pgsvc/pgsvc/pkg/services"
)

const ruleLine = "#---------------------------------------------------------------------\n"

// sectionSize is a guess of a service's rendered size (capacity only).
func sectionSize(s *services.Service) int {
	return 640 + len(s.DefaultServer) + 130*len(s.Servers)
}

// appendSection appends what Render writes for one service: a blank line,
// its Header, its frontend, a blank line and its backend. It writes the same
// bytes as Header, frontend and backend, without their intermediate strings.
func appendSection(b []byte, s *services.Service) []byte {
	b = append(b, '\n')
	// Header(s, "")
	b = append(b, ruleLine...)
	b = append(b, "# service: "...)
	b = append(b, s.Name...)
	b = append(b, " @ "...)
	b = append(b, s.IP...)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(s.Port), 10)
	b = append(b, '\n')
	b = append(b, ruleLine...)
	b = appendAddrs(b, "# service instances ", s.Servers, false)
	if s.BackupAddrs != nil {
		b = appendList(b, "# service backups   ", s.BackupAddrs)
	} else {
		b = appendAddrs(b, "# service backups   ", s.Servers, true)
	}
	// frontend(s)
	b = append(b, "frontend "...)
	b = append(b, s.Name...)
	b = append(b, "\n    bind "...)
	b = appendBind(b, s)
	b = append(b, "\n    mode tcp\n    maxconn "...)
	b = strconv.AppendInt(b, int64(s.Maxconn), 10)
	b = append(b, "\n    default_backend "...)
	b = append(b, s.Name...)
	b = append(b, "\n\n"...)
	// backend(s)
	b = append(b, "backend "...)
	b = append(b, s.Name...)
	b = append(b, "\n    mode tcp\n    balance "...)
	b = append(b, orDefault(s.Balance, "roundrobin")...)
	b = append(b, "\n    option httpchk\n    option http-keep-alive\n    http-check send meth OPTIONS uri "...)
	b = append(b, orDefault(s.Check, "/")...)
	b = append(b, "\n    http-check expect status 200\n    default-server "...)
	b = append(b, orDefault(s.DefaultServer, services.DefaultServerOptions)...)
	b = append(b, '\n')
	for i := range s.Servers {
		b = append(b, "    "...)
		b = appendServerLine(b, &s.Servers[i])
		b = append(b, '\n')
	}
	return b
}

// appendAddrs appends Header's line of the selected (backup false) or the
// backup servers' addresses, trailing blanks trimmed as Header does.
func appendAddrs(b []byte, title string, svs []services.Server, backup bool) []byte {
	start := len(b)
	b = append(b, title...)
	first := true
	for i := range svs {
		if (!backup && !svs[i].Selected) || (backup && !svs[i].Backup) {
			continue
		}
		if !first {
			b = append(b, ", "...)
		}
		first = false
		b = append(b, svs[i].Address...)
	}
	for len(b) > start && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	return append(b, '\n')
}

// appendList is appendAddrs of a list of addresses (Service.BackupAddrs).
func appendList(b []byte, title string, addrs []string) []byte {
	start := len(b)
	b = append(b, title...)
	for i, a := range addrs {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, a...)
	}
	for len(b) > start && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	return append(b, '\n')
}

func appendBind(b []byte, s *services.Service) []byte {
	ip := s.IP
	if ip == "" {
		ip = "*"
	}
	if strings.Contains(ip, ":") && !strings.HasPrefix(ip, "[") {
		b = append(b, '[')
		b = append(b, ip...)
		b = append(b, ']')
	} else {
		b = append(b, ip...)
	}
	b = append(b, ':')
	return strconv.AppendInt(b, int64(s.Port), 10)
}

// appendServerLine appends ServerLine(*sv).
func appendServerLine(b []byte, sv *services.Server) []byte {
	b = append(b, "server "...)
	b = append(b, sv.Name...)
	b = append(b, ' ')
	if strings.Contains(sv.Address, ":") && !strings.HasPrefix(sv.Address, "[") {
		b = append(b, '[')
		b = append(b, sv.Address...)
		b = append(b, ']')
	} else {
		b = append(b, sv.Address...)
	}
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(sv.Port), 10)
	if sv.Track != "" {
		b = append(b, " track "...)
		b = append(b, sv.Track...)
	} else {
		if sv.CheckSSL {
			b = append(b, " check-ssl"...)
			if sv.CAFile != "" {
				b = append(b, " ca-file "...)
				b = append(b, sv.CAFile...)
			}
		}
		b = append(b, " check port "...)
		b = strconv.AppendInt(b, int64(sv.CheckPort), 10)
	}
	b = append(b, " weight "...)
	b = strconv.AppendInt(b, int64(sv.Weight), 10)
	if sv.Backup {
		b = append(b, " backup"...)
	}
	if sv.Disabled {
		b = append(b, " disabled"...)
	}
	return b
}

// Renderer writes files as Render renders them, rendering only the
// services whose rendered fields changed since its last write: the others
// are copied from that file (WriteFrom). At 1,000 clusters (4,000
// services, a 2.6 MB file) a role change alters a few sections; rendering
// all of them again allocated ~40 MB per apply, and keeping every
// section's text instead kept the whole file (~5 MB) in memory for the
// controller's life. A Renderer is safe for concurrent use; the zero value
// is ready.
type Renderer struct {
	mu    sync.Mutex
	cache map[string]*section
	gen   uint64
	// seed hashes the sections' texts; window reads the previous file.
	seed   maphash.Seed
	seeded bool
	window window
	// scratch is where a section is rendered (reused).
	scratch []byte
	// Hits and Misses count sections copied from the previous file and
	// rendered.
	Hits, Misses int64
}

// section is where the last write put a service's text (off, n) and the
// hash of that text (sum), checked when it is read back.
type section struct {
	key textKey // the fields the text depends on (sameText)
	gen uint64
	off int64
	n   int
	sum uint64
}

// textKey is the part of a service its rendered text depends on, with
// copies of its servers' (the caller's slice may change): only these
// fields, not whole Services and Servers (half their size), for 4,000
// sections at 1,000 clusters.
type textKey struct {
	Name, IP, Check, Balance, DefaultServer string
	Port, Maxconn                           int
	Servers                                 []textServer
}

type textServer struct {
	Name, Address, CAFile, Track         string
	Port, CheckPort, Weight              int
	CheckSSL, Backup, Disabled, Selected bool
}

// WriteFrom writes the file Render(svcs, opts) renders to w. The sections
// that did not change since the last WriteFrom are copied from prev, the
// file that call wrote, at the offsets it wrote them (prev nil: every
// section is rendered). A section whose bytes there are not the ones
// written (the file was replaced or edited since, a short read: checked
// by a hash of each section's text) is rendered again, so prev may be any
// file. Copying from the file is one sequential read of it.
func (r *Renderer) WriteFrom(w io.Writer, svcs []services.Service, opts Options, prev io.ReaderAt) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.seeded {
		r.seed, r.seeded = maphash.MakeSeed(), true
	}
	head := Head(len(svcs), opts)
	if _, err := w.Write(head); err != nil {
		return err
	}
	pos := int64(len(head))
	r.gen++
	if r.cache == nil {
		r.cache = make(map[string]*section, len(svcs))
	}
	r.window.reset(prev)
	defer r.window.reset(nil)
	for i := range svcs {
		s := &svcs[i]
		c := r.cache[s.Name]
		var text []byte
		same := c != nil && sameText(&c.key, s)
		if same {
			if b, ok := r.window.slice(c.off, c.n); ok && maphash.Bytes(r.seed, b) == c.sum {
				text = b
				r.Hits++
			}
		}
		if text == nil {
			r.Misses++
			if c == nil {
				c = &section{}
				r.cache[s.Name] = c
			}
			if !same {
				c.key = textFields(s)
			}
			r.scratch = appendSection(r.scratch[:0], s)
			text = r.scratch
			c.sum = maphash.Bytes(r.seed, text)
		}
		c.off, c.n, c.gen = pos, len(text), r.gen
		if _, err := w.Write(text); err != nil {
			return err
		}
		pos += int64(len(text))
	}
	// Services not in this file leave the cache (a duplicate name, which
	// Check rejects before any write, only costs a render).
	if len(r.cache) > len(svcs) {
		for k, c := range r.cache {
			if c.gen != r.gen {
				delete(r.cache, k)
			}
		}
	}
	return nil
}

// window reads a file in 64 KB windows: WriteFrom asks for its sections in
// the order it wrote them, so one read serves ~50 of them.
type window struct {
	r   io.ReaderAt
	buf []byte
	off int64 // of buf[0] in the file
	n   int   // bytes of buf read
}

const windowSize = 64 << 10

func (w *window) reset(r io.ReaderAt) { w.r, w.off, w.n = r, 0, 0 }

// slice returns the file's n bytes at off (valid until the next call), or
// false when it has not that many there or cannot read them.
func (w *window) slice(off int64, n int) ([]byte, bool) {
	if w.r == nil || off < 0 || n <= 0 {
		return nil, false
	}
	if off >= w.off && off+int64(n) <= w.off+int64(w.n) {
		return w.buf[off-w.off : off-w.off+int64(n)], true
	}
	size := max(windowSize, n)
	if cap(w.buf) < size {
		w.buf = make([]byte, size)
	}
	// (A short read, io.EOF or a failure: the section is rendered.)
	got, _ := w.r.ReadAt(w.buf[:size], off)
	w.off, w.n = off, got
	if got < n {
		return nil, false
	}
	return w.buf[:n], true
}

// textFields is the part of s its rendered text depends on (the servers
// copied: the caller's slice may change).
func textFields(s *services.Service) textKey {
	out := textKey{Name: s.Name, IP: s.IP, Port: s.Port, Check: s.Check, Balance: s.Balance,
		Maxconn: s.Maxconn, DefaultServer: s.DefaultServer, Servers: make([]textServer, len(s.Servers))}
	for i, sv := range s.Servers {
		out.Servers[i] = textServer{Name: sv.Name, Address: sv.Address, Port: sv.Port, CheckPort: sv.CheckPort,
			CheckSSL: sv.CheckSSL, CAFile: sv.CAFile, Track: sv.Track, Weight: sv.Weight, Backup: sv.Backup, Disabled: sv.Disabled,
			Selected: sv.Selected}
	}
	return out
}

// sameText reports whether a and b render the same text: every field
// appendSection reads is equal (TestRendererCacheFields changes each field
// of Service and Server and checks this list against the renderer).
func sameText(a *textKey, b *services.Service) bool {
	if a.Name != b.Name || a.IP != b.IP || a.Port != b.Port || a.Check != b.Check || a.Balance != b.Balance ||
		a.Maxconn != b.Maxconn || a.DefaultServer != b.DefaultServer || len(a.Servers) != len(b.Servers) {
		return false
	}
	for i := range a.Servers {
		x, y := &a.Servers[i], &b.Servers[i]
		if x.Name != y.Name || x.Address != y.Address || x.Port != y.Port || x.CheckPort != y.CheckPort ||
			x.CheckSSL != y.CheckSSL || x.CAFile != y.CAFile || x.Track != y.Track || x.Weight != y.Weight || x.Backup != y.Backup ||
			x.Disabled != y.Disabled || x.Selected != y.Selected {
			return false
		}
	}
	return true
}

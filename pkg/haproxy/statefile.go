package haproxy

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// Server-state file columns (version 1, HAProxy 2.6).
const (
	stBeID = iota
	stBeName
	stSrvID
	stSrvName
	stSrvAddr
	stOpState
	stAdminState
	stUWeight
	stIWeight
	stTimeSinceChange
	stCheckStatus
	stCheckResult
	stCheckHealth
	stCheckState
	stAgentState
	stBkForcedID
	stSrvForcedID
	stFQDN
	stSrvPort
	stSrvRecord
	stUseSSL
	stCheckPort
	stCheckAddr
	stAgentAddr
	stAgentPort
	stColumns
)

// StateServer is one server line of a server-state file, as far as the
// driver reads it.
type StateServer struct {
	Backend   string
	Server    string
	Addr      string
	Port      int
	CheckPort int
	OpState   int // 0 stopped, 1 starting, 2 running, 3 stopping
	AdminSt   int // bitfield, decimal as HAProxy prints it (not hex)
	UWeight   int
}

// ParseServersState parses `show servers state` output (or a state file).
func ParseServersState(text string) ([]StateServer, error) {
	var out []StateServer
	err := EachServerState(text, func(s StateServer) bool {
		out = append(out, s)
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// EachServerState calls fn with each server line of `show servers state`
// output (or a state file), in order, until fn returns false; a malformed
// line is an error, as for ParseServersState. It keeps no line and makes no
// slice of lines or fields (a 1,000-cluster HAProxy's dump is 24,000 lines,
// read in every apply that reads health or verifies admin states): the
// strings fn gets are substrings of text.
func EachServerState(text string, fn func(StateServer) bool) error {
	var f [stColumns]string
	for n := 1; text != ""; n++ {
		line := text
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = ""
		}
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || (n == 1 && line == "1") {
			continue
		}
		if k := splitFields(line, f[:]); k < stColumns {
			return fmt.Errorf("servers state: line %d: %d fields, want %d", n, k, stColumns)
		}
		s := StateServer{Backend: f[stBeName], Server: f[stSrvName], Addr: f[stSrvAddr]}
		bad := ""
		for _, c := range [...]struct {
			dst  *int
			col  int
			name string
		}{{&s.Port, stSrvPort, "srv_port"}, {&s.CheckPort, stCheckPort, "srv_check_port"}, {&s.OpState, stOpState, "srv_op_state"},
			{&s.AdminSt, stAdminState, "srv_admin_state"}, {&s.UWeight, stUWeight, "srv_uweight"}} {
			v, err := strconv.Atoi(f[c.col])
			if err != nil {
				if bad != "" {
					bad += ", "
				}
				bad += c.name + " " + strconv.Quote(f[c.col])
			}
			*c.dst = v
		}
		if bad != "" {
			return fmt.Errorf("servers state: line %d (%s/%s): bad %s", n, s.Backend, s.Server, bad)
		}
		if !fn(s) {
			return nil
		}
	}
	return nil
}

// splitFields puts the blank-separated fields of line into dst (those
// beyond its length are dropped) and returns how many it found, at most
// len(dst): strings.Fields without the slice, for ASCII blanks (HAProxy's
// names have none of the others).
func splitFields(line string, dst []string) int {
	k := 0
	for i := 0; i < len(line) && k < len(dst); {
		for i < len(line) && asciiBlank(line[i]) {
			i++
		}
		if i == len(line) {
			break
		}
		j := i
		for j < len(line) && !asciiBlank(line[j]) {
			j++
		}
		dst[k] = line[i:j]
		k++
		i = j
	}
	return k
}

func asciiBlank(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// FixServersState turns a `show servers state` dump taken right before a
// reload into the server-state file the new worker should load for desired.
//
// Why it is not written verbatim: HAProxy 2.6 applies some fields of the file
// over the new config. Measured here: a changed address follows the config,
// but srv_port from the file wins over a changed port in the config; and a
// server with no line in the file (new server, new backend) starts UP 1/3
// before its first check (the reload hazard). So:
//   - a server whose address, port or check port changes gets a line for its
//     NEW endpoint marked stopped (DOWN, health 0): it is another member now,
//     and it comes UP only after `rise` good checks;
//   - a server with no line gets such a stopped line too, and so does a
//     server forced DOWN (Server.ForceDown: the write fence), so the new
//     worker never sends a write to a fenced old primary;
//   - every desired server's weight (srv_uweight, srv_iweight) is set to the
//     desired weight so a reload never restores an older runtime weight;
//   - a tracking server (`track`) starts in the state of the server it
//     tracks, whatever its own line said;
//   - other lines (unchanged servers, sections the driver does not manage)
//     are kept as dumped: their live health and admin states carry over.
//
// The `disabled` keyword: the state file's admin state carries a "config
// maintenance" bit; HAProxy applies the file's admin state only when the
// server's `disabled` keyword did not change since the file was written.
// Outside the twin layout the driver never renders `disabled`, so that bit
// never flips, and runtime admin states (maint/drain set over the stats
// socket) survive reloads. In the twin layout an inactive twin is
// `disabled` in the new file: its line gets the admin state that matches
// that file (twinAdminBits: config and forced maintenance for a disabled
// twin, 0 for an active one), so HAProxy applies it and a reload keeps the
// live roles. Lines for a new endpoint are written with admin state 0
// (ready), or a twin's.
//
// The lines of desired servers are written with their fields separated by
// one blank; other lines as dumped; blank lines are dropped. A tracker
// takes the state of the tracked server's line as fixed above (HAProxy
// tracks no tracker here; the driver makes no such chain). The file is
// returned as a string: WriteFixedServersState streams it instead.
func FixServersState(dump string, desired []services.Service) (string, error) {
	fx, err := newStateFix(dump, desired)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.Grow(len(dump) + len(dump)/16 + 4096)
	if err := fx.writeTo(&b); err != nil {
		return "", err
	}
	return b.String(), nil
}

// WriteFixedServersState writes to w what FixServersState returns, in
// bounded memory: the dump is read line by line, twice (a first pass
// checks every line, so that nothing is written for a dump FixServersState
// refuses, and finds the lines whose state the trackers take), the fields
// of a line go into one reused slice, and a dumped server is found in
// desired by its backend's name (a map of the services) and its own (a
// scan of the service's few servers). Beyond the dump and desired it
// keeps ~20 bytes per desired server and a 32 KiB buffer (a dump of 1,000
// Pigsty clusters in the twin layout is ~2 MB, 18,000 lines).
func WriteFixedServersState(w io.Writer, dump string, desired []services.Service) error {
	fx, err := newStateFix(dump, desired)
	if err != nil {
		return err
	}
	return fx.writeTo(w)
}

// stateFix is a dump checked and indexed for the desired state whose
// server-state file it is to become (newStateFix); writeTo writes the file.
//
// The server of a key (backend and server name) is, as in a map by
// "backend/server" filled in desired's order, the last desired server of
// that key: find. HAProxy's names have no '/' (services.Validate), so the
// key is what Server.Track names.
type stateFix struct {
	head0, head1 string // the dump's first two lines, as dumped
	body         string // the server lines
	hasBody      bool   // there is a line after the second (body may be "")
	desired      []services.Service
	// byName is the last service of each name, prevSame the one of the
	// same name before each (-1: none; desired has none, services.Validate).
	byName   map[string]int32
	prevSame []int32
	// byServer is, for a service of many servers, the last index of each
	// server name (nil for the others, scanned: a handful of servers).
	byServer []map[string]int32
	// start is the flat index of each service's first server: the index
	// of a server in the bitsets and arrays below.
	start []int32
	// seen: the dump has a line for the server's key (set on the key's
	// server, by writeTo). tracker: the server of its key has a Track
	// naming a desired server. tracked: a tracker's Track names it.
	seen, tracker, tracked bitset
	// last is, for a tracker, the number of the dump's last line of its
	// key (the one that gets the tracked server's state); srcLine, for a
	// tracked server, 1 + the offset in body of the last line of its key,
	// 0 when it has none or that line is marked stopped. Nil without
	// trackers.
	last, srcLine []int32
	// The fields of a line and of a tracked server's line, reused.
	fields, srcFields []string
}

// bitset is a set of flat server indexes.
type bitset []uint64

func newBitset(n int) bitset      { return make(bitset, (n+63)/64) }
func (b bitset) has(i int32) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) set(i int32)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) clear() {
	for i := range b {
		b[i] = 0
	}
}

// manyServers is how many servers a service has for byServer to index
// them.
const manyServers = 16

// trackState is the columns a tracker takes from the server it tracks, as
// that server's line in the fixed file has them: srv_op_state,
// srv_check_status, srv_check_result, srv_check_health.
type trackState [4]string

// stoppedState is trackState of a line marked stopped, with a failed
// check at health 0, so HAProxy starts the server DOWN: check status
// HCHK_STATUS_INI, as for a server that was never checked (measured: with
// 0, HCHK_STATUS_UNKNOWN, HAProxy 2.6 leaves the check "* UNK" in progress
// for good, and the server never comes UP), result CHK_RES_FAILED.
var stoppedState = trackState{"0", "1", "2", "0"}

// newStateFix checks dump (the errors FixServersState returns), indexes
// desired, and finds the line whose state each tracker takes.
func newStateFix(dump string, desired []services.Service) (*stateFix, error) {
	fx := &stateFix{desired: desired}
	// The first two lines of the dump without its final newlines: "1" and
	// the column names.
	text := strings.TrimRight(dump, "\n")
	i := strings.IndexByte(text, '\n')
	if i >= 0 {
		fx.head0, fx.head1 = text[:i], text[i+1:]
		if j := strings.IndexByte(fx.head1, '\n'); j >= 0 {
			fx.head1, fx.body, fx.hasBody = fx.head1[:j], fx.head1[j+1:], true
		}
	}
	if i < 0 || strings.TrimSpace(fx.head0) != "1" || !strings.HasPrefix(fx.head1, "#") {
		return nil, fmt.Errorf("servers state: unexpected dump %q", truncate(dump, 120))
	}
	if len(fx.body) >= math.MaxInt32 {
		// (srcLine's offsets; a dump of ~10 million servers)
		return nil, fmt.Errorf("servers state: dump of %d bytes, too large", len(dump))
	}
	fx.byName = make(map[string]int32, len(desired))
	fx.prevSame = make([]int32, len(desired))
	fx.start = make([]int32, len(desired))
	n := 0
	for i := range desired {
		s := &desired[i]
		fx.start[i] = int32(n)
		n += len(s.Servers)
		fx.prevSame[i] = -1
		if p, ok := fx.byName[s.Name]; ok {
			fx.prevSame[i] = p
		}
		fx.byName[s.Name] = int32(i)
		if len(s.Servers) > manyServers {
			if fx.byServer == nil {
				fx.byServer = make([]map[string]int32, len(desired))
			}
			m := make(map[string]int32, len(s.Servers))
			for j := range s.Servers {
				m[s.Servers[j].Name] = int32(j)
			}
			fx.byServer[i] = m
		}
	}
	if int64(n) >= math.MaxInt32 {
		return nil, fmt.Errorf("servers state: %d desired servers, too many", n)
	}
	fx.seen = newBitset(n)
	// The trackers: servers of their key whose Track names a desired
	// server.
	for i := range desired {
		s := &desired[i]
		for j := range s.Servers {
			sv := &s.Servers[j]
			if sv.Track == "" {
				continue
			}
			if oi, oj, _, _ := fx.find(s.Name, sv.Name); oi != int32(i) || oj != int32(j) {
				continue // not the server of its key
			}
			ti, tj, ok := fx.findTrack(sv.Track)
			if !ok {
				continue
			}
			if fx.tracker == nil {
				fx.tracker, fx.tracked = newBitset(n), newBitset(n)
				fx.last, fx.srcLine = make([]int32, n), make([]int32, n)
			}
			fx.tracker.set(fx.start[i] + int32(j))
			fx.tracked.set(fx.start[ti] + tj)
		}
	}
	// First pass: every line has its columns, and the trackers' and
	// tracked servers' last lines are found.
	var err error
	fx.eachLine(func(n, off int, line string, f []string) bool {
		if len(f) < stColumns {
			err = fmt.Errorf("servers state: line %d: %d fields, want %d", n, len(f), stColumns)
			return false
		}
		if fx.tracker == nil {
			return true
		}
		i, j, _, ok := fx.find(f[stBeName], f[stSrvName])
		if !ok {
			return true
		}
		k := fx.start[i] + j
		if fx.tracker.has(k) {
			fx.last[k] = int32(n)
		}
		if fx.tracked.has(k) {
			fx.srcLine[k] = 0
			if !endpointMoved(f, &desired[i].Servers[j]) {
				fx.srcLine[k] = int32(off) + 1
			}
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return fx, nil
}

// find returns the server of key backend/server (service i, server j: the
// last desired server of that key), and twin, the srv_admin_state of the
// last one of the key in the twin layout ("": none).
func (fx *stateFix) find(backend, server string) (i, j int32, twin string, ok bool) {
	i, ok = fx.byName[backend]
	for ; ok && i >= 0; i = fx.prevSame[i] {
		if j = fx.findServer(i, server); j >= 0 {
			break
		}
	}
	if !ok || i < 0 {
		return 0, 0, "", false
	}
	for ti, tj := i, j; ti >= 0; ti = fx.prevSame[ti] {
		if tj < 0 {
			tj = fx.findServer(ti, server)
		}
		if tj >= 0 && fx.desired[ti].Layout == services.LayoutTwins {
			twin = twinAdminBits(fx.desired[ti].Servers[tj].Disabled)
			break
		}
		tj = -1
	}
	return i, j, twin, true
}

// findServer is the index of the last server named name in service i, -1
// for none.
func (fx *stateFix) findServer(i int32, name string) int32 {
	if fx.byServer != nil && fx.byServer[i] != nil {
		if j, ok := fx.byServer[i][name]; ok {
			return j
		}
		return -1
	}
	svs := fx.desired[i].Servers
	for j := len(svs) - 1; j >= 0; j-- {
		if svs[j].Name == name {
			return int32(j)
		}
	}
	return -1
}

// findTrack is find of the server a Track names.
func (fx *stateFix) findTrack(track string) (i, j int32, ok bool) {
	be, srv, ok := strings.Cut(track, "/")
	if !ok {
		return 0, 0, false
	}
	i, j, _, ok = fx.find(be, srv)
	return i, j, ok
}

// eachLine calls fn with the number, offset in fx.body, text and fields
// (blank-separated, as strings.Fields splits them; fx.fields, reused) of
// each line of the dump after the first two that has a field, until fn
// returns false.
func (fx *stateFix) eachLine(fn func(n, off int, line string, f []string) bool) {
	off, more := 0, fx.hasBody
	for n := 3; more; n++ {
		line := fx.body[off:]
		next := len(fx.body)
		if i := strings.IndexByte(line, '\n'); i >= 0 {
			line, next = line[:i], off+i+1
		} else {
			more = false
		}
		fx.fields = appendFields(fx.fields[:0], line)
		if len(fx.fields) > 0 && !fn(n, off, line, fx.fields) {
			return
		}
		off = next
	}
}

// trackState returns the state the server of key i, j (a tracker) takes
// from the server it tracks.
func (fx *stateFix) trackState(i, j int32) trackState {
	ti, tj, _ := fx.findTrack(fx.desired[i].Servers[j].Track)
	off := fx.srcLine[fx.start[ti]+tj]
	if off == 0 {
		return stoppedState
	}
	line := fx.body[off-1:]
	if e := strings.IndexByte(line, '\n'); e >= 0 {
		line = line[:e]
	}
	fx.srcFields = appendFields(fx.srcFields[:0], line)
	f := fx.srcFields
	return trackState{f[stOpState], f[stCheckStatus], f[stCheckResult], f[stCheckHealth]}
}

// writeTo writes the server-state file: the dump's lines, those of desired
// servers fixed, then a line for each desired server the dump has none
// for (see FixServersState).
func (fx *stateFix) writeTo(w io.Writer) error {
	fx.seen.clear()
	buf := make([]byte, 0, 32<<10)
	var err error
	flush := func() {
		if len(buf) >= 31<<10 && err == nil {
			_, err = w.Write(buf)
			buf = buf[:0]
		}
	}
	buf = append(buf, fx.head0...)
	buf = append(buf, '\n')
	buf = append(buf, fx.head1...)
	buf = append(buf, '\n')
	fx.eachLine(func(n, _ int, line string, f []string) bool {
		i, j, twin, ok := fx.find(f[stBeName], f[stSrvName])
		if !ok {
			buf = append(buf, line...)
			buf = append(buf, '\n')
			flush()
			return err == nil
		}
		k := fx.start[i] + j
		fx.seen.set(k)
		var src *trackState
		if fx.tracker != nil && fx.tracker.has(k) && fx.last[k] == int32(n) {
			st := fx.trackState(i, j)
			src = &st
		}
		sv := &fx.desired[i].Servers[j]
		buf = appendFixedLine(buf, f, sv, endpointMoved(f, sv), twin, src)
		flush()
		return err == nil
	})
	if err != nil {
		return err
	}
	var f [stColumns]string
	for i := range fx.desired {
		s := &fx.desired[i]
		for j := range s.Servers {
			sv := &s.Servers[j]
			oi, oj, twin, _ := fx.find(s.Name, sv.Name)
			k := fx.start[oi] + oj
			if fx.seen.has(k) {
				continue
			}
			// IDs: without forced ids HAProxy 2.6 matches lines by backend
			// and server name, so placeholders are fine.
			f = [stColumns]string{stBeID: "0", stBeName: s.Name, stSrvID: "0", stSrvName: sv.Name, stAdminState: "0",
				stTimeSinceChange: "0", stAgentState: "0", stBkForcedID: "0", stSrvForcedID: "0",
				stFQDN: "-", stSrvRecord: "-", stUseSSL: "0", stCheckAddr: "-", stAgentAddr: "-", stAgentPort: "0"}
			var src *trackState
			if oi == int32(i) && oj == int32(j) && fx.tracker != nil && fx.tracker.has(k) {
				st := fx.trackState(oi, oj)
				src = &st
			}
			buf = appendFixedLine(buf, f[:], sv, true, twin, src)
			if flush(); err != nil {
				return err
			}
		}
	}
	if len(buf) > 0 {
		_, err = w.Write(buf)
	}
	return err
}

// endpointMoved reports whether a desired server's line must be marked
// stopped: its address, port or check port changes (it is another member
// now), or the server is fenced (Server.ForceDown).
func endpointMoved(f []string, sv *services.Server) bool {
	var b [20]byte
	return sv.ForceDown || f[stSrvAddr] != sv.Address ||
		f[stSrvPort] != string(strconv.AppendInt(b[:0], int64(sv.Port), 10)) ||
		f[stCheckPort] != string(strconv.AppendInt(b[:0], int64(sv.CheckPort), 10))
}

// appendFixedLine appends the line of desired server sv, whose dumped (or
// placeholder) fields are f, to buf: marked stopped at sv's endpoint if
// stopped (stoppedState, check state 6), at sv's weight, with a twin's
// admin state (twin, see find; "" for none), and in the state of the
// server it tracks (src, nil for none). f is modified.
func appendFixedLine(buf []byte, f []string, sv *services.Server, stopped bool, twin string, src *trackState) []byte {
	if stopped {
		f[stSrvAddr] = sv.Address
		f[stOpState], f[stCheckStatus], f[stCheckResult], f[stCheckHealth] = stoppedState[0], stoppedState[1], stoppedState[2], stoppedState[3]
		// CHK_ST_CONFIGURED|CHK_ST_ENABLED, as dumped for "check" servers.
		f[stCheckState] = "6"
	}
	if twin != "" {
		f[stAdminState] = twin
	}
	if src != nil {
		f[stOpState], f[stCheckStatus], f[stCheckResult], f[stCheckHealth] = src[0], src[1], src[2], src[3]
		f[stCheckState] = "0" // no check of its own, as HAProxy dumps a tracker
	}
	for i, v := range f {
		if i > 0 {
			buf = append(buf, ' ')
		}
		switch {
		case i == stUWeight || i == stIWeight:
			buf = strconv.AppendInt(buf, int64(sv.Weight), 10)
		case stopped && i == stSrvPort:
			buf = strconv.AppendInt(buf, int64(sv.Port), 10)
		case stopped && i == stCheckPort:
			buf = strconv.AppendInt(buf, int64(sv.CheckPort), 10)
		default:
			buf = append(buf, v...)
		}
	}
	return append(buf, '\n')
}

// appendFields appends the blank-separated fields of line to dst, as
// strings.Fields splits them (unicode.IsSpace blanks; invalid UTF-8 is no
// blank), without a new slice.
func appendFields(dst []string, line string) []string {
	for i := 0; i < len(line); {
		for i < len(line) {
			if c := line[i]; c < utf8.RuneSelf {
				if !blankByte[c] {
					break
				}
				i++
			} else {
				r, size := utf8.DecodeRuneInString(line[i:])
				if !unicode.IsSpace(r) {
					break
				}
				i += size
			}
		}
		if i == len(line) {
			break
		}
		j := i
		for j < len(line) {
			if c := line[j]; c < utf8.RuneSelf {
				if blankByte[c] {
					break
				}
				j++
			} else {
				r, size := utf8.DecodeRuneInString(line[j:])
				if unicode.IsSpace(r) {
					break
				}
				j += size
			}
		}
		dst = append(dst, line[i:j])
		i = j
	}
	return dst
}

// blankByte is asciiBlank of each ASCII byte.
var blankByte = [utf8.RuneSelf]bool{'\t': true, '\n': true, '\v': true, '\f': true, '\r': true, ' ': true}

// twinAdminBits is the srv_admin_state of a twin after a reload: an inactive
// twin is `disabled` in the file (config + forced maintenance, as HAProxy
// dumps such a server), an active one has no admin flag.
func twinAdminBits(disabled bool) string {
	if disabled {
		return strconv.Itoa(admCMaint | admFMaint)
	}
	return "0"
}

package haproxy

import (
	"fmt"
	"strconv"
	"strings"

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
func FixServersState(dump string, desired []services.Service) (string, error) {
	lines := strings.Split(strings.TrimRight(dump, "\n"), "\n")
	if len(lines) < 2 || strings.TrimSpace(lines[0]) != "1" || !strings.HasPrefix(lines[1], "#") {
		return "", fmt.Errorf("servers state: unexpected dump %q", truncate(dump, 120))
	}
	want := map[string]services.Server{}
	// Twins (services.LayoutTwins): the admin state the new worker must
	// start each server with, written so that it matches the new file's
	// `disabled` keyword: then HAProxy applies the line, and a reload never
	// resurrects a stale twin nor drops an active one.
	twinAdmin := map[string]string{}
	for _, s := range desired {
		for _, sv := range s.Servers {
			want[s.Name+"/"+sv.Name] = sv
			if s.Layout == services.LayoutTwins {
				twinAdmin[s.Name+"/"+sv.Name] = twinAdminBits(sv)
			}
		}
	}
	// out holds the lines in order: a line kept as dumped is a one-field
	// slice; a desired server's line is its fields, looked up by key to
	// fix trackers at the end.
	out := make([][]string, 0, len(lines))
	fields := map[string][]string{}
	seen := map[string]bool{}
	for n, line := range lines[2:] {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < stColumns {
			return "", fmt.Errorf("servers state: line %d: %d fields, want %d", n+3, len(f), stColumns)
		}
		key := f[stBeName] + "/" + f[stSrvName]
		sv, ok := want[key]
		if !ok {
			out = append(out, []string{line})
			continue
		}
		seen[key] = true
		if f[stSrvAddr] != sv.Address || f[stSrvPort] != strconv.Itoa(sv.Port) || f[stCheckPort] != strconv.Itoa(sv.CheckPort) || sv.ForceDown {
			// A fenced old primary starts DOWN in the new worker too.
			markStopped(f, sv)
		}
		f[stUWeight] = strconv.Itoa(sv.Weight)
		f[stIWeight] = strconv.Itoa(sv.Weight)
		if a, ok := twinAdmin[key]; ok {
			f[stAdminState] = a
		}
		out = append(out, f)
		fields[key] = f
	}
	for _, s := range desired {
		for _, sv := range s.Servers {
			if seen[s.Name+"/"+sv.Name] {
				continue
			}
			f := make([]string, stColumns)
			// IDs: without forced ids HAProxy 2.6 matches lines by backend
			// and server name, so placeholders are fine.
			f[stBeID], f[stSrvID] = "0", "0"
			f[stBeName], f[stSrvName] = s.Name, sv.Name
			f[stAdminState] = "0"
			if a, ok := twinAdmin[s.Name+"/"+sv.Name]; ok {
				f[stAdminState] = a
			}
			f[stUWeight], f[stIWeight] = strconv.Itoa(sv.Weight), strconv.Itoa(sv.Weight)
			f[stTimeSinceChange] = "0"
			f[stAgentState], f[stBkForcedID], f[stSrvForcedID] = "0", "0", "0"
			f[stFQDN], f[stSrvRecord], f[stCheckAddr], f[stAgentAddr] = "-", "-", "-", "-"
			f[stUseSSL] = "0"
			f[stAgentPort] = "0"
			markStopped(f, sv)
			out = append(out, f)
			fields[s.Name+"/"+sv.Name] = f
		}
	}
	// A tracking server (Server.Track) starts in the state of the server
	// it tracks: HAProxy applies a tracker's line as it stands and then
	// moves it only when the tracked server changes state, so a tracker
	// started DOWN under a tracked server that stays UP would stay DOWN
	// for good (measured on HAProxy 2.6).
	for key, sv := range want {
		f, src := fields[key], fields[sv.Track]
		if sv.Track == "" || f == nil || src == nil {
			continue
		}
		f[stOpState], f[stCheckStatus], f[stCheckResult], f[stCheckHealth] = src[stOpState], src[stCheckStatus], src[stCheckResult], src[stCheckHealth]
		f[stCheckState] = "0" // no check of its own, as HAProxy dumps a tracker
	}
	var b strings.Builder
	b.WriteString(lines[0] + "\n" + lines[1] + "\n")
	for _, f := range out {
		b.WriteString(strings.Join(f, " ") + "\n")
	}
	return b.String(), nil
}

// markStopped writes sv's endpoint into a state line and marks it stopped
// with a failed check at health 0, so HAProxy starts it DOWN.
func markStopped(f []string, sv services.Server) {
	f[stSrvAddr] = sv.Address
	f[stSrvPort] = strconv.Itoa(sv.Port)
	f[stCheckPort] = strconv.Itoa(sv.CheckPort)
	f[stOpState] = "0"
	// HCHK_STATUS_INI, as for a server that was never checked. Measured:
	// with 0 (HCHK_STATUS_UNKNOWN) HAProxy 2.6 leaves the check "* UNK" in
	// progress for good, and the server never comes UP.
	f[stCheckStatus] = "1"
	f[stCheckResult] = "2" // CHK_RES_FAILED
	f[stCheckHealth] = "0"
	f[stCheckState] = "6" // CHK_ST_CONFIGURED|CHK_ST_ENABLED, as dumped for "check" servers
}

// twinAdminBits is the srv_admin_state of a twin after a reload: an inactive
// twin is `disabled` in the file (config + forced maintenance, as HAProxy
// dumps such a server), an active one has no admin flag.
func twinAdminBits(sv services.Server) string {
	if sv.Disabled {
		return strconv.Itoa(admCMaint | admFMaint)
	}
	return "0"
}

package haproxy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// fixServersStateRef is FixServersState as it was before it streamed (every
// line split, a map of every desired server's Server by "backend/server",
// every line's fields kept until the whole file was built): the reference
// whose output the streaming fix must match byte for byte, and its errors.
// Kept as it was, bar the names.
func fixServersStateRef(dump string, desired []services.Service) (string, error) {
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
				twinAdmin[s.Name+"/"+sv.Name] = twinAdminBitsRef(sv)
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
			markStoppedRef(f, sv)
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
			markStoppedRef(f, sv)
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

// markStoppedRef is markStopped as it was: it writes sv's endpoint into a
// state line and marks it stopped with a failed check at health 0, so
// HAProxy starts it DOWN.
func markStoppedRef(f []string, sv services.Server) {
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

// twinAdminBitsRef is twinAdminBits as it was: the srv_admin_state of a
// twin after a reload: an inactive twin is `disabled` in the file (config +
// forced maintenance, as HAProxy dumps such a server), an active one has no
// admin flag.
func twinAdminBitsRef(sv services.Server) string {
	if sv.Disabled {
		return strconv.Itoa(admCMaint | admFMaint)
	}
	return "0"
}

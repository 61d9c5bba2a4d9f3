package haproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// fixCaseStats counts what the generated cases covered.
type fixCaseStats struct {
	trackerFirst, trackerAfter int // a tracker's line before / after the line of the server it tracks
	srcMissing                 int // a tracker of a desired server with no line in the dump
	moved, fenced, absent      int // desired servers whose line moves, fenced ones, ones with no line
	dupDesired, dupLines       int // a key twice in desired / in the dump
	odd                        int // lines with unicode blanks, invalid UTF-8, extra columns
	many                       int // services of more than manyServers servers
}

// randomFixCase is a `show servers state` dump and a desired state for
// FixServersState: services in both layouts, servers present in the dump
// or not, at another address, port or check port, fenced, at any weight,
// Disabled twins, trackers of servers whose line comes before or after
// theirs (or of servers with no line, of servers not desired, of nothing),
// blank lines, blanks of every kind, CRLF, extra columns, and, rarely,
// malformed lines and headers, a key twice in desired or in the dump.
//
// Trackers never chain (A tracks B which tracks C): the reference fixes
// them in map order, so its output then depends on the run (and HAProxy
// refuses such a chain's loops anyway).
func randomFixCase(rng *rand.Rand, st *fixCaseStats) (string, []services.Service) {
	backends := []string{"pg-a-primary", "pg-a-replica", "pg-a-default", "pg-b-replica", "other", "pg-c-offline"}
	names := []string{"pg-a-1", "pg-a-2", "pg-a-1.backup", "pg-a-2.backup", "x", "pg-b-3"}
	addrs := []string{"10.0.0.1", "10.0.0.2", "127.0.0.11", "::1"}
	ports := []int{6432, 5432, 16432, 0}
	checkPorts := []int{8008, 0, 18008}
	pick := func(list []string) string { return list[rng.Intn(len(list))] }
	pickInt := func(list []int) int { return list[rng.Intn(len(list))] }

	var desired []services.Service
	bperm := rng.Perm(len(backends))
	for i, n := 0, rng.Intn(6); i < n; i++ {
		s := services.Service{Name: backends[bperm[i]]}
		if i > 0 && rng.Intn(25) == 0 {
			s.Name = desired[rng.Intn(i)].Name // twice (Validate refuses it)
			st.dupDesired++
		}
		if rng.Intn(2) == 0 {
			s.Layout = services.LayoutTwins
		}
		sperm := rng.Perm(len(names))
		m, many := rng.Intn(6), rng.Intn(20) == 0 // more servers than a service's scan
		if many {
			m = manyServers + 1 + rng.Intn(8)
			st.many++
		}
		for j := 0; j < m; j++ {
			name := ""
			if many {
				name = fmt.Sprint("pg-m-", j)
			} else {
				name = names[sperm[j]]
			}
			sv := services.Server{Name: name, Address: pick(addrs), Port: pickInt(ports), CheckPort: pickInt(checkPorts),
				Weight: rng.Intn(257), ForceDown: rng.Intn(8) == 0, Disabled: rng.Intn(3) == 0}
			if j > 0 && rng.Intn(25) == 0 {
				sv.Name = s.Servers[rng.Intn(j)].Name
				st.dupDesired++
			}
			s.Servers = append(s.Servers, sv)
		}
		desired = append(desired, s)
	}
	var keys []string
	for _, s := range desired {
		for _, sv := range s.Servers {
			keys = append(keys, s.Name+"/"+sv.Name)
		}
	}
	for i := range desired {
		for j := range desired[i].Servers {
			if rng.Intn(3) > 0 {
				continue
			}
			sv := &desired[i].Servers[j]
			switch k := rng.Intn(10); {
			case k < 6 && len(keys) > 0:
				sv.Track = keys[rng.Intn(len(keys))]
			case k < 8:
				sv.Track = pick(backends) + "/" + pick(names) // maybe not desired
			case k == 8:
				sv.Track = "noslash"
			default:
				sv.Track = "a/b/c"
			}
			sv.CheckPort = 0
		}
	}
	want := breakTrackChains(desired)

	// The dump: a line per desired key (mostly), others, shuffled.
	type rec struct {
		key    string
		fields []string
	}
	var recs []rec
	line := func(be, srv string, sv *services.Server) []string {
		addr, port, cport := pick(addrs), pickInt(ports), pickInt(checkPorts)
		if sv != nil {
			addr, port, cport = sv.Address, sv.Port, sv.CheckPort
			switch rng.Intn(8) {
			case 0:
				addr = pick(addrs)
			case 1:
				port = pickInt(ports)
			case 2:
				cport = pickInt(checkPorts)
			}
			if addr != sv.Address || port != sv.Port || cport != sv.CheckPort {
				st.moved++
			}
			if sv.ForceDown {
				st.fenced++
			}
		}
		return []string{strconv.Itoa(3 + rng.Intn(9)), be, strconv.Itoa(1 + rng.Intn(9)), srv, addr,
			strconv.Itoa(rng.Intn(4)), pick([]string{"0", "1", "5", "32", "0"}), strconv.Itoa(rng.Intn(257)), strconv.Itoa(rng.Intn(257)),
			strconv.Itoa(rng.Intn(9999)), pick([]string{"15", "8", "1", "6"}), pick([]string{"3", "2", "0"}), strconv.Itoa(rng.Intn(5)),
			pick([]string{"6", "0", "4"}), "0", "0", "0", "-", strconv.Itoa(port), "-", "0", strconv.Itoa(cport), "-", "-", strconv.Itoa(cport)}
	}
	for _, key := range sortedKeys(want) {
		be, srv, _ := strings.Cut(key, "/")
		sv := want[key]
		switch k := rng.Intn(16); {
		case k < 3:
			st.absent++
			continue
		case k == 3:
			recs = append(recs, rec{key, line(be, srv, &sv)})
			st.dupLines++
		}
		recs = append(recs, rec{key, line(be, srv, &sv)})
	}
	for n := rng.Intn(4); n > 0; n-- {
		be, srv := pick(append(backends, "stats")), pick(append(names, "y"))
		recs = append(recs, rec{be + "/" + srv, line(be, srv, nil)})
	}
	rng.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })

	// What the trackers' lines and their servers' came to.
	pos := map[string]int{}
	for i, r := range recs {
		pos[r.key] = i // the last
	}
	for key, sv := range want {
		if p, ok := pos[key]; ok && sv.Track != "" {
			if _, desired := want[sv.Track]; !desired {
				continue
			}
			switch q, ok := pos[sv.Track]; {
			case !ok:
				st.srcMissing++
			case p < q:
				st.trackerFirst++
			case p > q:
				st.trackerAfter++
			}
		}
	}

	var b strings.Builder
	switch rng.Intn(40) {
	case 0:
		b.WriteString(pick([]string{"", "1", "1\n", "2\n# x\n", "1\nno header\n", "\n1\n#\n", "Unknown command\n"}))
	case 1:
		b.WriteString(" 1 \r\n#\tcolumns\r\n")
	default:
		b.WriteString("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n")
	}
	blanks := []string{" ", " ", " ", "  ", "\t", "\v", " \t "}
	for _, r := range recs {
		f := r.fields
		switch rng.Intn(60) {
		case 0:
			f = f[:rng.Intn(len(f))] // too short
		case 1:
			b.WriteString("# a comment\n")
		case 2:
			f = append(f, "extra", "columns")
			st.odd++
		case 3:
			f[stSrvAddr] += "\xff" // invalid UTF-8: not a blank
			st.odd++
		}
		for i, v := range f {
			if i > 0 {
				if rng.Intn(200) == 0 {
					b.WriteString(pick([]string{"\u00a0", "\u2003", "\u0085", "\u3000"})) // unicode blanks
					st.odd++
				} else {
					b.WriteString(pick(blanks))
				}
			}
			b.WriteString(v)
		}
		b.WriteString(pick([]string{"\n", "\n", "\n", "\r\n", " \n"}))
		if rng.Intn(10) == 0 {
			b.WriteString(pick([]string{"\n", "  \n", "\t\r\n", "\r\n", "\u00a0\n"})) // blank lines
		}
	}
	dump := b.String()
	switch rng.Intn(8) {
	case 0:
		dump = strings.TrimRight(dump, "\n") // no final newline
	case 1:
		dump += "\n\n"
	}
	return dump, desired
}

// breakTrackChains drops the track of every server that both tracks a
// desired server other than itself and is tracked by one (the
// reference's output would depend on its map order), and returns the
// desired servers by key (the last of a key, as the reference's map).
func breakTrackChains(desired []services.Service) map[string]services.Server {
	for {
		want := map[string]services.Server{}
		for _, s := range desired {
			for _, sv := range s.Servers {
				want[s.Name+"/"+sv.Name] = sv
			}
		}
		drop := ""
		for _, key := range sortedKeys(want) {
			src, ok := want[want[key].Track]
			if !ok || want[key].Track == key {
				continue
			}
			if _, chained := want[src.Track]; chained && src.Track != want[key].Track {
				drop = want[key].Track
				break
			}
		}
		if drop == "" {
			return want
		}
		for i := range desired {
			for j := range desired[i].Servers {
				if desired[i].Name+"/"+desired[i].Servers[j].Name == drop {
					desired[i].Servers[j].Track = ""
				}
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// TestFixServersStateIsRef: FixServersState writes, byte for byte, what
// the reference (fixServersStateRef, the implementation that split and
// kept every line) wrote, and fails where and as it failed, over
// generated dumps and desired states.
func TestFixServersStateIsRef(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	var st fixCaseStats
	ok, failed := 0, 0
	const runs = 6000
	for run := 0; run < runs; run++ {
		dump, desired := randomFixCase(rng, &st)
		want, werr := fixServersStateRef(dump, desired)
		if again, _ := fixServersStateRef(dump, desired); again != want {
			t.Fatalf("run %d: the reference's output depends on its map order (a track chain?)", run)
		}
		got, gerr := FixServersState(dump, desired)
		if fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Fatalf("run %d: error %v, want %v\ndump %q\ndesired %+v", run, gerr, werr, dump, desired)
		}
		if got != want {
			t.Fatalf("run %d: output differs\ngot  %q\nwant %q\ndump %q\ndesired %+v", run, got, want, dump, desired)
		}
		// Streamed: the same bytes, in writes of at most ~32 KiB, and
		// none for a dump it refuses.
		var b bytes.Buffer
		if err := WriteFixedServersState(&b, dump, desired); fmt.Sprint(err) != fmt.Sprint(werr) || b.String() != want && werr == nil {
			t.Fatalf("run %d: WriteFixedServersState: %v (reference %v), wrote %q, want %q", run, err, werr, b.String(), want)
		}
		if werr != nil && b.Len() > 0 {
			t.Fatalf("run %d: %d bytes written for a dump refused (%v)", run, b.Len(), werr)
		}
		if werr != nil {
			failed++
		} else {
			ok++
		}
	}
	t.Logf("%d fixed, %d errors; %+v", ok, failed, st)
	if ok < runs/2 || failed < runs/50 || st.trackerFirst < 100 || st.trackerAfter < 100 || st.srcMissing < 50 ||
		st.moved < 500 || st.fenced < 100 || st.absent < 500 || st.dupDesired < 50 || st.dupLines < 100 || st.odd < 100 || st.many < 100 {
		t.Errorf("the cases cover too little: %d fixed, %d errors; %+v", ok, failed, st)
	}
}

// TestFixServersStateIsRefFleet: the same at scale, for the 4 services of
// 200 Pigsty clusters in both layouts (trackers in the twin one), from a
// dump in HAProxy's order and from one shuffled (trackers before the
// servers they track), with lines missing, endpoints moved and fences.
func TestFixServersStateIsRefFleet(t *testing.T) {
	pigsty := pigstyFleet(200)
	twins, err := services.Twins(pigsty)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(3))
	for _, layout := range []struct {
		name    string
		desired []services.Service
	}{{"twins", twins}, {"pigsty", pigsty}} {
		for _, shuffled := range []bool{false, true} {
			lines := strings.SplitAfter(stateDumpOf(layout.desired), "\n")
			head, body := lines[:2], lines[2:len(lines)-1]
			if shuffled {
				rng.Shuffle(len(body), func(i, j int) { body[i], body[j] = body[j], body[i] })
			}
			kept := body[:0]
			for _, l := range body {
				switch rng.Intn(20) {
				case 0:
					continue // no line: a new server
				case 1:
					l = strings.Replace(l, " 6432 ", " 6433 ", 1) // moved
				}
				kept = append(kept, l)
			}
			dump := strings.Join(head, "") + strings.Join(kept, "")
			desired := make([]services.Service, len(layout.desired))
			for i, s := range layout.desired {
				s.Servers = append([]services.Server(nil), s.Servers...)
				for j := range s.Servers {
					if rng.Intn(30) == 0 {
						s.Servers[j].ForceDown = true
					}
					s.Servers[j].Weight = rng.Intn(257)
				}
				desired[i] = s
			}
			want, werr := fixServersStateRef(dump, desired)
			got, gerr := FixServersState(dump, desired)
			if werr != nil || gerr != nil {
				t.Fatalf("%s (shuffled %v): %v, reference %v", layout.name, shuffled, gerr, werr)
			}
			if got != want {
				t.Errorf("%s (shuffled %v): output differs from the reference's\n%s", layout.name, shuffled, firstDiff(got, want))
			}
			var b bytes.Buffer
			if err := WriteFixedServersState(&b, dump, desired); err != nil || b.String() != want {
				t.Errorf("%s (shuffled %v): WriteFixedServersState: %v, output differs from the reference's\n%s", layout.name, shuffled, err, firstDiff(b.String(), want))
			}
		}
	}
}

// firstDiff shows the first line where got and want differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) && i < len(w); i++ {
		if g[i] != w[i] {
			return fmt.Sprintf("line %d:\ngot  %q\nwant %q", i+1, g[i], w[i])
		}
	}
	return fmt.Sprintf("%d lines, want %d", len(g), len(w))
}

// failingWriter fails once it was given more than n bytes.
type failingWriter struct{ n int }

var errFull = errors.New("disk full")

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		return 0, errFull
	}
	w.n -= len(p)
	return len(p), nil
}

// TestWriteFixedServersStateWriteError: an error of the writer ends the
// write and is returned, wherever it comes (a file of 200 clusters is
// written in several writes).
func TestWriteFixedServersStateWriteError(t *testing.T) {
	desired, err := services.Twins(pigstyFleet(200))
	if err != nil {
		t.Fatal(err)
	}
	dump := stateDumpOf(desired)
	// New lines at the end: the last writes come from the loop over
	// desired servers without a line.
	dump = dump[:len(dump)*3/4]
	dump = dump[:strings.LastIndexByte(dump, '\n')+1]
	want, err := FixServersState(dump, desired)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 100, 40 << 10, len(want) * 9 / 10, len(want) - 1} {
		if err := WriteFixedServersState(&failingWriter{n: n}, dump, desired); !errors.Is(err, errFull) {
			t.Errorf("writer failing after %d of %d bytes: %v, want %v", n, len(want), err, errFull)
		}
	}
	if err := WriteFixedServersState(&failingWriter{n: len(want)}, dump, desired); err != nil {
		t.Errorf("writer taking %d bytes: %v", len(want), err)
	}
}

// TestWriteFixedServersStateBoundedMemory: fixing the state file of 1,000
// Pigsty clusters in the twin layout (18,000 servers, 6,000 trackers, a
// 2 MB dump) allocates its index and a buffer, not the file (the
// implementation that split every line allocated ~36 MB, and FixServersState
// still returns the file as a string): see BenchmarkFixServersState1000.
func TestWriteFixedServersStateBoundedMemory(t *testing.T) {
	desired, err := services.Twins(pigstyFleet(1000))
	if err != nil {
		t.Fatal(err)
	}
	dump := stateDumpOf(desired)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := WriteFixedServersState(io.Discard, dump, desired); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(len(dump)/2); got > limit {
		t.Errorf("allocated %d bytes for a %d-byte dump, want at most %d", got, len(dump), limit)
	}
	if got := after.Mallocs - before.Mallocs; got > 100 {
		t.Errorf("%d allocations, want at most 100", got)
	}
}

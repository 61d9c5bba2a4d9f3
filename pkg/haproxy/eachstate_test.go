package haproxy

import (
	"bufio"
	"fmt"
	"math/rand"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// fieldsParse is ParseServersState as it was before EachServerState (lines
// split into a slice, fields by strings.Fields): the reference the
// allocation-free parse must match, results and errors.
func fieldsParse(text string) ([]StateServer, error) {
	var out []StateServer
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || (n == 0 && line == "1") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < stColumns {
			return nil, fmt.Errorf("servers state: line %d: %d fields, want %d", n+1, len(f), stColumns)
		}
		s := StateServer{Backend: f[stBeName], Server: f[stSrvName], Addr: f[stSrvAddr]}
		var errs []string
		for _, c := range []struct {
			dst  *int
			col  int
			name string
		}{{&s.Port, stSrvPort, "srv_port"}, {&s.CheckPort, stCheckPort, "srv_check_port"}, {&s.OpState, stOpState, "srv_op_state"},
			{&s.AdminSt, stAdminState, "srv_admin_state"}, {&s.UWeight, stUWeight, "srv_uweight"}} {
			v, err := strconv.Atoi(f[c.col])
			if err != nil {
				errs = append(errs, c.name+" "+strconv.Quote(f[c.col]))
			}
			*c.dst = v
		}
		if len(errs) > 0 {
			return nil, fmt.Errorf("servers state: line %d (%s/%s): bad %s", n+1, s.Backend, s.Server, strings.Join(errs, ", "))
		}
		out = append(out, s)
	}
	return out, nil
}

// randomDump is a `show servers state` text with the irregularities a
// parse must treat as before: blanks of every kind between fields, CRLF,
// blank and comment lines, a version line or not, short lines and fields
// that are no numbers (rarely), more columns than version 1 has.
func randomDump(rng *rand.Rand) string {
	var b strings.Builder
	if rng.Intn(4) > 0 {
		b.WriteString("1\n")
	}
	b.WriteString("# be_id be_name srv_id srv_name srv_addr ...\n")
	for n := rng.Intn(8); n > 0; n-- {
		f := []string{"3", fmt.Sprint("pg-b", rng.Intn(3), "-replica"), "1", fmt.Sprint("pg-b1-", rng.Intn(5), []string{"", ".backup"}[rng.Intn(2)]),
			"127.0.0.1", fmt.Sprint(rng.Intn(4)), fmt.Sprint(rng.Intn(64)), fmt.Sprint(rng.Intn(257)), "100", "5", "6", "3", "4", "6", "0", "0", "0", "-",
			fmt.Sprint(1 + rng.Intn(9000)), "-", "0", fmt.Sprint(rng.Intn(9000)), "-", "-", "0"}
		switch rng.Intn(16) {
		case 0:
			f = f[:rng.Intn(len(f))] // too short
		case 1:
			f[stAdminState] = "x" // not a number
		case 2:
			f[stSrvPort], f[stUWeight] = "", "-" // two bad (an empty one drops a field)
		case 3:
			f = append(f, "extra", "columns")
		}
		for i, s := range f {
			if i > 0 {
				b.WriteString([]string{" ", "  ", "\t", " \t ", "\v", "\f"}[rng.Intn(6)])
			}
			b.WriteString(s)
		}
		b.WriteString([]string{"\n", "\r\n", " \n", "\n\n", "\n# comment\n"}[rng.Intn(5)])
	}
	if rng.Intn(3) == 0 {
		s := b.String()
		return strings.TrimSuffix(s, "\n") // no final newline
	}
	return b.String()
}

// TestEachServerStateIsFieldsParse: EachServerState (and ParseServersState,
// built on it) finds what the slice-and-Fields parse found, with the same
// errors, and stops where its function says.
func TestEachServerStateIsFieldsParse(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for run := 0; run < 3000; run++ {
		text := randomDump(rng)
		want, werr := fieldsParse(text)
		got, gerr := ParseServersState(text)
		if fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Fatalf("run %d: error %v, want %v\n%q", run, gerr, werr, text)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("run %d:\ngot  %+v\nwant %+v\n%q", run, got, want, text)
		}
		if werr != nil || len(want) < 2 {
			continue
		}
		stop := 1 + rng.Intn(len(want)-1)
		var seen []StateServer
		if err := EachServerState(text, func(s StateServer) bool {
			seen = append(seen, s)
			return len(seen) < stop
		}); err != nil || !reflect.DeepEqual(seen, want[:stop]) {
			t.Fatalf("run %d: stopped after %d: %+v (%v), want %+v", run, stop, seen, err, want[:stop])
		}
	}
	if got, err := ParseServersState(showState26); err != nil || len(got) != 3 || got[2].AdminSt != 1 || got[0].CheckPort != 18008 {
		t.Errorf("HAProxy 2.6's dump: %+v, %v", got, err)
	}
}

// readAnswerByString is readAnswer as it was (a string per line): the
// reference for the one that copies each line once.
func readAnswerByString(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		b.WriteString(line)
		if line == "\n" {
			p, err := br.Peek(2)
			if err == nil && string(p) == "> " {
				_, _ = br.Discard(2)
				return strings.TrimSuffix(b.String(), "\n"), nil
			}
		}
	}
}

// TestReadAnswerLongLines: answers whose lines are longer than the reader's
// buffer (they come in parts: a part that is only "\n" ends a long line, it
// is not the blank line that ends the answer, even before a line starting
// "> "), blank lines inside an answer, a connection that ends mid-answer:
// read as line by line before.
func TestReadAnswerLongLines(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for run := 0; run < 2000; run++ {
		var b strings.Builder
		answers := 1 + rng.Intn(4)
		for a := 0; a < answers; a++ {
			for l := rng.Intn(5); l > 0; l-- {
				switch rng.Intn(5) {
				case 0:
					b.WriteString("\n") // a blank line inside the answer
				case 1:
					b.WriteString("> a line that starts as the prompt does\n")
				default:
					// 16 is bufio's smallest buffer: lines of 15, 16 and 17
					// bytes with their newline end on, at and after it.
					n := []int{1, 14, 15, 16, 31, 32, 33, 100}[rng.Intn(8)]
					b.WriteString(strings.Repeat(string(rune('a'+rng.Intn(26))), n) + "\n")
				}
			}
			b.WriteString("\n> ")
		}
		in := b.String()
		if rng.Intn(5) == 0 {
			in = in[:rng.Intn(len(in))] // the connection ends early
		}
		got, want := bufio.NewReaderSize(strings.NewReader(in), 16), bufio.NewReaderSize(strings.NewReader(in), 16)
		for a := 0; a <= answers; a++ {
			g, gerr := readAnswer(got)
			w, werr := readAnswerByString(want)
			if g != w || (gerr == nil) != (werr == nil) {
				t.Fatalf("run %d, answer %d: %q (%v), want %q (%v)\ninput %q", run, a, g, gerr, w, werr, in)
			}
			if werr != nil {
				break
			}
		}
	}
}

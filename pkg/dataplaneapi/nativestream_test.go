package dataplaneapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

// TestNativeDocsStreamAsUnmarshal: the answer of GET /stats/native decoded
// as it is read gives what decoding it whole gives (unmarshalNative), or an
// error where it errs: both shapes (2.9.9's list, 3.2.0's object), errors,
// unknown keys, nulls, keys in other cases, repeated keys, bad JSON.
func TestNativeDocsStreamAsUnmarshal(t *testing.T) {
	row := `{"name":"pg-x-1","type":"server","backend_name":"pg-x-replica","stats":{"addr":"127.0.0.11:6432","bck":1,"status":"UP","tracked":"pg-x-primary/pg-x-1","scur":3}}`
	cases := []string{
		`[{"runtimeAPI":"/run/admin.sock","stats":[` + row + `,` + row + `]}]`,
		` {"runtimeAPI":"/run/admin.sock","stats":[` + row + `]}`,
		`[{"runtimeAPI":"/run/admin.sock","error":"connection refused"}]`,
		`[]`, `{}`, `null`, `[null]`, `{"stats":null}`, `{"stats":[null,` + row + `]}`,
		`{"Stats":[` + row + `],"ERROR":""}`,
		`{"stats":[` + row + `],"stats":[` + row + `,` + row + `]}`,
		`{"x":{"a":[1,2,{"b":null}]},"stats":[],"y":"z"}`,
		`"stats"`, `[1]`, `{"stats":{}}`, `{"stats":[1]}`, `{"error":3}`, `{"stats":[` + row + `]} x`,
		`{"stats":[` + row, `[{"stats":[]}`, `{`, `[`, `{"stats":[` + row + `]}{}`,
	}
	r := rand.New(rand.NewSource(1))
	for range 200 {
		cases = append(cases, randomNative(r))
	}
	for _, body := range cases {
		var want nativeDocs
		werr := unmarshalNative([]byte(body), &want)
		var got nativeDocs
		gerr := got.decodeStream(strings.NewReader(body))
		if (werr != nil) != (gerr != nil) {
			t.Errorf("%.120s: stream error %v, Unmarshal error %v", body, gerr, werr)
			continue
		}
		if werr == nil && !reflect.DeepEqual(got, want) {
			t.Errorf("%.120s: stream %+v, Unmarshal %+v", body, got, want)
		}
	}
	// An empty answer: no documents (do decodes nothing then).
	var none nativeDocs
	if err := none.decodeStream(strings.NewReader("  ")); err != nil || none != nil {
		t.Errorf("empty answer: %v %v", none, err)
	}
}

// randomNative is a native stats answer of either shape with random rows,
// fields and extra keys.
func randomNative(r *rand.Rand) string {
	rowOf := func() string {
		var f []string
		if r.Intn(5) > 0 {
			f = append(f, fmt.Sprintf(`"name":"s%d"`, r.Intn(9)))
		}
		if r.Intn(5) > 0 {
			f = append(f, fmt.Sprintf(`"type":%q`, []string{"server", "backend", "frontend"}[r.Intn(3)]))
		}
		if r.Intn(5) > 0 {
			f = append(f, fmt.Sprintf(`"backend_name":"b%d"`, r.Intn(9)))
		}
		var st []string
		if r.Intn(3) > 0 {
			st = append(st, fmt.Sprintf(`"bck":%d`, r.Intn(2)))
		}
		if r.Intn(3) > 0 {
			st = append(st, fmt.Sprintf(`"status":%q`, []string{"UP", "DOWN", "MAINT", "no check", "UP 1/3"}[r.Intn(5)]))
		}
		if r.Intn(3) > 0 {
			st = append(st, `"tracked":"b1/s1"`, `"addr":"127.0.0.1:5432"`, `"scur":7`)
		}
		if r.Intn(4) > 0 {
			f = append(f, `"stats":{`+strings.Join(st, ",")+`}`)
		}
		if r.Intn(4) == 0 {
			f = append(f, `"extra":[1,{"k":"v"}]`)
		}
		r.Shuffle(len(f), func(i, j int) { f[i], f[j] = f[j], f[i] })
		return "{" + strings.Join(f, ",") + "}"
	}
	docOf := func() string {
		var rows []string
		for range r.Intn(6) {
			rows = append(rows, rowOf())
		}
		f := []string{`"runtimeAPI":"/s"`, `"stats":[` + strings.Join(rows, ",") + `]`}
		if r.Intn(4) == 0 {
			f = append(f, `"error":"refused"`)
		}
		r.Shuffle(len(f), func(i, j int) { f[i], f[j] = f[j], f[i] })
		return "{" + strings.Join(f, ",") + "}"
	}
	if r.Intn(2) == 0 {
		return docOf()
	}
	var docs []string
	for range 1 + r.Intn(3) {
		docs = append(docs, docOf())
	}
	return "[" + strings.Join(docs, ",") + "]"
}

// BenchmarkNativeStats1000 reads a 1,000-cluster answer of GET
// /stats/native (6 servers and a backend in each of 4,000 backends, every
// field HAProxy sends): whole (the bytes read, then json.Unmarshal, as do
// did) against as it is read (decodeStream). A chunked answer has no
// length, so the whole read grows its buffer by doubling.
func BenchmarkNativeStats1000(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`[{"runtimeAPI":"/run/haproxy/admin.sock","stats":[`)
	for i := range 4000 {
		for j := range 7 {
			if i > 0 || j > 0 {
				sb.WriteByte(',')
			}
			typ, name := "server", fmt.Sprintf("pg-b%04d-%d", i/4, j)
			if j == 6 {
				typ, name = "backend", "BACKEND"
			}
			fmt.Fprintf(&sb, `{"backend_name":"pg-b%04d-s%d","name":%q,"type":%q,"stats":{"act":1,"addr":"127.90.%d.%d:6432","agent_status":"","bck":%d,"bin":0,"bout":0,"check_code":200,"check_desc":"Layer7 check passed","check_duration":1,"check_status":"L7OK","chkdown":0,"chkfail":0,"cli_abrt":0,"ctime":0,"downtime":0,"dresp":0,"econ":0,"eresp":0,"hanafail":0,"iid":%d,"lastchg":120,"lastsess":-1,"lbtot":0,"mode":"tcp","pid":1,"qcur":0,"qlimit":128,"qmax":0,"qtime":0,"rate":0,"rate_max":0,"rtime":0,"scur":0,"sid":%d,"slim":3000,"smax":0,"srv_abrt":0,"status":"UP","stot":0,"throttle":0,"ttime":0,"weight":100,"wredis":0,"wretr":0,"tracked":""}}`,
				i/4, i%4, name, typ, i/250, i%250, j%2, i, j)
		}
	}
	sb.WriteString(`]}]`)
	body := sb.String()
	b.Logf("answer %d bytes", len(body))
	b.Run("whole", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			data, err := readAllChunked(strings.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			var docs nativeDocs
			if err := unmarshalNative(data, &docs); err != nil || len(docs[0].Stats) != 28000 {
				b.Fatal(err)
			}
		}
	})
	b.Run("stream", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			var docs nativeDocs
			if err := docs.decodeStream(strings.NewReader(body)); err != nil || len(docs[0].Stats) != 28000 {
				b.Fatal(err)
			}
		}
	})
}

// readAllChunked is readBody's read of an answer without a length.
func readAllChunked(r io.Reader) ([]byte, error) { return io.ReadAll(onlyReader{r}) }

type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// unmarshalNative is the answer decoded whole, as do decoded it before
// decodeStream: each shape tried on the bytes. The reference the stream is
// compared with.
func unmarshalNative(b []byte, d *nativeDocs) error {
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		var one nativeDoc
		if err := json.Unmarshal(t, &one); err != nil {
			return err
		}
		*d = nativeDocs{one}
		return nil
	}
	return json.Unmarshal(b, (*[]nativeDoc)(d))
}

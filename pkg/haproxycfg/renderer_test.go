package haproxycfg

import (
	"bytes"
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// referenceRender is Render as it was before the section renderer and the
// cache (one strings.Builder, fmt): the new code must write its bytes.
func referenceRender(svcs []services.Service, opts Options) []byte {
	var b strings.Builder
	b.Write(Head(len(svcs), opts))
	for _, s := range svcs {
		b.WriteString("\n")
		b.WriteString(Header(s, ""))
		fmt.Fprintf(&b, "frontend %s\n", s.Name)
		fmt.Fprintf(&b, "    bind %s\n", Bind(s))
		b.WriteString("    mode tcp\n")
		fmt.Fprintf(&b, "    maxconn %d\n", s.Maxconn)
		fmt.Fprintf(&b, "    default_backend %s\n", s.Name)
		b.WriteString("\n")
		fmt.Fprintf(&b, "backend %s\n", s.Name)
		b.WriteString("    mode tcp\n")
		checks(&b, s)
		for _, sv := range s.Servers {
			fmt.Fprintf(&b, "    %s\n", ServerLine(sv))
		}
	}
	return []byte(b.String())
}

func randomServices(rng *rand.Rand, n int) []services.Service {
	pick := func(xs ...string) string { return xs[rng.Intn(len(xs))] }
	out := make([]services.Service, 0, n)
	for i := 0; i < n; i++ {
		s := services.Service{Name: fmt.Sprintf("pg-r%d-%s", i, pick("primary", "replica", "offline")),
			IP: pick("", "*", "127.0.0.10", "::1", "[::1]"), Port: 5000 + i, Check: pick("", "/primary", "/read-only"),
			Balance: pick("", "roundrobin", "leastconn"), Maxconn: rng.Intn(6000),
			DefaultServer: pick("", "inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100")}
		for m := 0; m < rng.Intn(7); m++ {
			s.Servers = append(s.Servers, services.Server{Name: fmt.Sprintf("pg-r%d-%d", i, m),
				Address: pick("10.0.0.1", "fd00::1", "[fd00::2]", "127.90.1.2"), Port: 5432 + rng.Intn(2)*1000,
				CheckPort: 8008, CheckSSL: rng.Intn(3) == 0, CAFile: pick("", "/etc/pki/ca.crt"), Weight: rng.Intn(257),
				Backup: rng.Intn(2) == 0, Disabled: rng.Intn(3) == 0, Selected: rng.Intn(2) == 0})
		}
		out = append(out, s)
	}
	return out
}

// The section renderer and the cache write exactly the bytes of the
// reference, over random services changing between renders.
func TestRenderSameAsReference(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	var r Renderer
	opts := Options{StatsSocket: "/run/admin.sock", ServerStateFile: "/run/state", NoStrictLimits: true}
	svcs := randomServices(rng, 60)
	var prev []byte // the file the Renderer wrote last
	for round := 0; round < 50; round++ {
		want := referenceRender(svcs, opts)
		if got := Render(svcs, opts); !bytes.Equal(got, want) {
			t.Fatalf("round %d: Render differs from the reference:\n%s", round, firstDiff(got, want))
		}
		var buf bytes.Buffer
		if err := r.WriteFrom(&buf, svcs, opts, bytes.NewReader(prev)); err != nil || !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("round %d: Renderer.WriteFrom differs from the reference (%v):\n%s", round, err, firstDiff(buf.Bytes(), want))
		}
		prev = buf.Bytes()
		// Change a few services in place (as a caller reusing its slice
		// would), drop one, add one, reorder.
		for k := 0; k < 3; k++ {
			i := rng.Intn(len(svcs))
			if len(svcs[i].Servers) > 0 {
				j := rng.Intn(len(svcs[i].Servers))
				svcs[i].Servers[j].Disabled = !svcs[i].Servers[j].Disabled
				svcs[i].Servers[j].Weight = rng.Intn(257)
			}
		}
		if round%5 == 0 {
			svcs = append(svcs[1:], randomServices(rng, 1)[0])
			svcs[len(svcs)-1].Name = fmt.Sprintf("pg-new%d-primary", round)
			rng.Shuffle(len(svcs), func(i, j int) { svcs[i], svcs[j] = svcs[j], svcs[i] })
		}
	}
	if r.Hits == 0 || r.Misses == 0 {
		t.Fatalf("cache hits %d, misses %d: want both", r.Hits, r.Misses)
	}
	if len(r.cache) != len(svcs) {
		t.Fatalf("cache holds %d sections for %d services", len(r.cache), len(svcs))
	}
}

// Every field of Service and Server that changes the rendered text is one
// the cache compares: changing it in a service written before must render
// the new text, not copy the old one from the file written before.
func TestRendererCacheFields(t *testing.T) {
	opts := Options{StatsSocket: "/run/admin.sock"}
	base := func() []services.Service {
		return []services.Service{{Name: "pg-a-primary", IP: "127.0.0.1", Port: 5433, Check: "/primary", Balance: "roundrobin",
			Maxconn: 100, DefaultServer: "inter 3s", Servers: []services.Server{
				{Name: "pg-a-1", Address: "10.0.0.1", Port: 6432, CheckPort: 8008, CAFile: "/ca", Weight: 100, Selected: true},
				{Name: "pg-a-2", Address: "10.0.0.2", Port: 6432, CheckPort: 8008, Weight: 100, Backup: true}}}}
	}
	changeField := func(v reflect.Value) bool {
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Int:
			v.SetInt(v.Int() + 1)
		case reflect.Bool:
			v.SetBool(!v.Bool())
		default:
			return false
		}
		return true
	}
	checked := 0
	try := func(what string, mutate func(s *services.Service) bool) {
		var r Renderer
		svcs := base()
		var before, after bytes.Buffer
		if err := r.WriteFrom(&before, svcs, opts, nil); err != nil {
			t.Fatal(err)
		}
		if !mutate(&svcs[0]) {
			return
		}
		want := referenceRender(svcs, opts)
		if err := r.WriteFrom(&after, svcs, opts, bytes.NewReader(before.Bytes())); err != nil || !bytes.Equal(after.Bytes(), want) {
			t.Errorf("changing %s: the file written from the one before differs from a fresh render (%v):\n%s", what, err, firstDiff(after.Bytes(), want))
		}
		checked++
	}
	st := reflect.TypeOf(services.Service{})
	for i := 0; i < st.NumField(); i++ {
		i := i
		try("Service."+st.Field(i).Name, func(s *services.Service) bool { return changeField(reflect.ValueOf(s).Elem().Field(i)) })
	}
	vt := reflect.TypeOf(services.Server{})
	for i := 0; i < vt.NumField(); i++ {
		i := i
		try("Server."+vt.Field(i).Name, func(s *services.Service) bool {
			return changeField(reflect.ValueOf(&s.Servers[0]).Elem().Field(i))
		})
	}
	if checked < 20 {
		t.Fatalf("only %d fields changed", checked)
	}
}

func firstDiff(got, want []byte) string {
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(g) && i < len(w); i++ {
		if g[i] != w[i] {
			return fmt.Sprintf("line %d: got %q, want %q", i+1, g[i], w[i])
		}
	}
	return fmt.Sprintf("got %d lines, want %d", len(g), len(w))
}

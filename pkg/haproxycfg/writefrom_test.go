package haproxycfg

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"
)

// TestWriteFromSameAsReference: a Renderer that keeps no text, each file
// written from the one before it (as the direct driver writes its config
// file), writes exactly the reference's bytes over random services changing,
// leaving, coming and moving between writes; and so it does when the file
// before is not the one it wrote (edited in place, truncated, another
// file, none, a Renderer of WriteTo's): a section's bytes there that are
// not the ones it wrote are never copied.
func TestWriteFromSameAsReference(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	var r Renderer
	opts := Options{StatsSocket: "/run/admin.sock", ServerStateFile: "/run/state", NoStrictLimits: true}
	svcs := randomServices(rng, 80)
	var prev []byte // the file the last WriteFrom wrote
	copied := 0
	for round := 0; round < 200; round++ {
		want := referenceRender(svcs, opts)
		from := prev
		how := "the file it wrote"
		switch rng.Intn(8) {
		case 0:
			if len(from) > 0 { // edited in place: one byte of a section changed
				from = bytes.Clone(from)
				from[len(from)/2+rng.Intn(len(from)/2)] ^= 0x20
				how = "the file it wrote, edited"
			}
		case 1:
			from = from[:len(from)/3]
			how = "the file it wrote, truncated"
		case 2:
			from = referenceRender(randomServices(rng, 80), opts)
			how = "another file"
		case 3:
			from = nil
			how = "no file"
		}
		hits := r.Hits
		var buf bytes.Buffer
		var ra *bytes.Reader
		if from != nil {
			ra = bytes.NewReader(from)
		}
		var err error
		if ra != nil {
			err = r.WriteFrom(&buf, svcs, opts, ra)
		} else {
			err = r.WriteFrom(&buf, svcs, opts, nil)
		}
		if err != nil || !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("round %d (from %s): WriteFrom differs from the reference (%v):\n%s", round, how, err, firstDiff(buf.Bytes(), want))
		}
		if how == "the file it wrote" {
			copied += int(r.Hits - hits)
		}
		prev = buf.Bytes()
		for k := 0; k < 4; k++ {
			i := rng.Intn(len(svcs))
			if len(svcs[i].Servers) > 0 {
				j := rng.Intn(len(svcs[i].Servers))
				svcs[i].Servers[j].Disabled = !svcs[i].Servers[j].Disabled
			}
		}
		if round%7 == 0 {
			svcs = append(svcs[1:], randomServices(rng, 1)[0])
			svcs[len(svcs)-1].Name = fmt.Sprintf("pg-new%d-primary", round)
			rng.Shuffle(len(svcs), func(i, j int) { svcs[i], svcs[j] = svcs[j], svcs[i] })
		}
	}
	if copied < 1000 {
		t.Errorf("%d sections copied from the file written before: the test compares too little", copied)
	}
	// The same services again, from the file just written: every section
	// copied.
	want := referenceRender(svcs, opts)
	var last, buf bytes.Buffer
	if err := r.WriteFrom(&last, svcs, opts, bytes.NewReader(prev)); err != nil {
		t.Fatal(err)
	}
	hits, misses := r.Hits, r.Misses
	if err := r.WriteFrom(&buf, svcs, opts, bytes.NewReader(last.Bytes())); err != nil || !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("WriteFrom from its own file differs (%v):\n%s", err, firstDiff(buf.Bytes(), want))
	}
	if r.Misses != misses || r.Hits-hits != int64(len(svcs)) {
		t.Errorf("from the file just written: %d copied, %d rendered; want all %d copied", r.Hits-hits, r.Misses-misses, len(svcs))
	}
}

// The window serves what the file has and nothing past it.
func TestWindowSlice(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 20000) // 200,000 bytes: several windows
	var w window
	w.reset(bytes.NewReader(data))
	for _, c := range []struct {
		off int64
		n   int
		ok  bool
	}{{0, 10, true}, {5, 100, true}, {70000, 10, true}, {10, 10, true}, {199990, 10, true}, {199995, 10, false},
		{200000, 1, false}, {-1, 5, false}, {3, 0, false}, {1000, 100000, true}} {
		b, ok := w.slice(c.off, c.n)
		if ok != c.ok || ok && !bytes.Equal(b, data[c.off:c.off+int64(c.n)]) {
			t.Errorf("slice(%d, %d) = %d bytes, %v; want %v", c.off, c.n, len(b), ok, c.ok)
		}
	}
	w.reset(nil)
	if _, ok := w.slice(0, 1); ok {
		t.Error("a window without a file served bytes")
	}
}

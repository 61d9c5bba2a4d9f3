package dataplaneapi

import (
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

func TestRunningMismatch(t *testing.T) {
	one := int64(1)
	zero := int64(0)
	stat := func(typ, backend, name, addr string, bck *int64) nativeStat {
		s := nativeStat{Name: name, Type: typ, BackendName: backend}
		s.Stats.Addr, s.Stats.Bck = addr, bck
		return s
	}
	desired := []services.Service{{Name: "pg-x-replica", Servers: []services.Server{
		{Name: "pg-x-1", Address: "127.0.0.11", Port: 6432, Backup: false},
		{Name: "pg-x-2", Address: "127.0.0.12", Port: 6432, Backup: true},
	}}}
	running := []nativeStat{
		stat("frontend", "", "pg-x-replica", "", nil),
		stat("server", "pg-x-replica", "pg-x-1", "127.0.0.11:6432", &zero),
		stat("server", "pg-x-replica", "pg-x-2", "127.0.0.12:6432", &one),
	}
	if got := runningMismatch(running, desired); got != "" {
		t.Errorf("matching: %q", got)
	}
	stale := []nativeStat{
		stat("server", "pg-x-replica", "pg-x-1", "127.0.0.11:6432", &one),
		stat("server", "pg-x-replica", "pg-x-3", "127.0.0.13:6432", &zero),
	}
	got := runningMismatch(stale, desired)
	for _, want := range []string{"frontend pg-x-replica not running", "pg-x-replica/pg-x-1 runs with backup true, want false",
		"pg-x-replica/pg-x-2 not running", "pg-x-replica/pg-x-3 still running"} {
		if !strings.Contains(got, want) {
			t.Errorf("mismatch %q lacks %q", got, want)
		}
	}
	// A file that makes pg-x-2 a tracker, run by an HAProxy that has not
	// reloaded it yet; then one that has.
	desired[0].Servers[1].Track = "pg-x-primary/pg-x-2"
	if got := runningMismatch(running, desired); !strings.Contains(got, `pg-x-replica/pg-x-2 runs tracking "", want "pg-x-primary/pg-x-2"`) {
		t.Errorf("a tracker not running yet: %q", got)
	}
	running[2].Stats.Tracked = "pg-x-primary/pg-x-2"
	if got := runningMismatch(running, desired); got != "" {
		t.Errorf("the tracker running: %q", got)
	}
}

// TestTrackersOutOfStep: a tracker UP under a tracked server DOWN, or the
// other way, is out of step; transitional states count as the state they
// leave, "no check" as UP, and maintenance or drain on either side as
// neither.
func TestTrackersOutOfStep(t *testing.T) {
	stat := func(backend, name, status string) nativeStat {
		s := nativeStat{Name: name, Type: "server", BackendName: backend}
		s.Stats.Status = status
		return s
	}
	stats := []nativeStat{
		stat("pg-x-primary", "pg-x-1", "UP"), stat("pg-x-default", "pg-x-1", "UP"),
		stat("pg-x-primary", "pg-x-2", "DOWN"), stat("pg-x-default", "pg-x-2", "UP 1/3"),
		stat("pg-x-primary", "pg-x-3", "UP 2/3"), stat("pg-x-default", "pg-x-3", "DOWN 1/2"),
		stat("pg-x-primary", "pg-x-4", "MAINT"), stat("pg-x-default", "pg-x-4", "UP"),
		stat("pg-x-primary", "pg-x-5", "no check"), stat("pg-x-default", "pg-x-5", "UP"),
		stat("pg-x-primary", "pg-x-6", "DOWN"), stat("pg-x-default", "pg-x-6", "DOWN"),
	}
	d := services.Service{Name: "pg-x-default"}
	for _, n := range []string{"pg-x-1", "pg-x-2", "pg-x-3", "pg-x-4", "pg-x-5", "pg-x-6", "pg-x-7"} {
		d.Servers = append(d.Servers, services.Server{Name: n, Track: "pg-x-primary/" + n})
	}
	got := strings.Join(trackersOutOfStep(stats, []services.Service{d}), " ")
	if want := "pg-x-default/pg-x-2 pg-x-default/pg-x-3"; got != want {
		t.Errorf("out of step: %q, want %q", got, want)
	}
}

// TestNativeDocs: GET /stats/native answers a list of per-process
// documents on 2.9.9 and one document on 3.2.0; both decode as read
// (decodeStream), and a document's error is reported.
func TestNativeDocs(t *testing.T) {
	row := `{"name":"pg-x-1","type":"server","backend_name":"pg-x-replica","stats":{"addr":"127.0.0.11:6432","bck":1,"status":"UP","tracked":"pg-x-primary/pg-x-1","scur":3}}`
	for _, tc := range []struct {
		name, body string
		rows       int
		err        string
	}{
		{"v2", `[{"runtimeAPI":"/run/admin.sock","stats":[` + row + `,` + row + `]}]`, 2, ""},
		{"v3", ` {"runtimeAPI":"/run/admin.sock","stats":[` + row + `]}`, 1, ""},
		{"v2 error", `[{"runtimeAPI":"/run/admin.sock","error":"connection refused"}]`, 0, "connection refused"},
		{"neither", `"stats"`, 0, "neither a list nor an object"},
	} {
		var docs nativeDocs
		err := docs.decodeStream(strings.NewReader(tc.body))
		if err != nil {
			if tc.err == "" || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		rows := 0
		for _, d := range docs {
			if d.Error != "" {
				if tc.err == "" || !strings.Contains(d.Error, tc.err) {
					t.Errorf("%s: document error %q", tc.name, d.Error)
				}
				continue
			}
			for _, s := range d.Stats {
				rows++
				if s.Name != "pg-x-1" || s.BackendName != "pg-x-replica" || s.Stats.Addr != "127.0.0.11:6432" || s.Stats.Bck == nil || *s.Stats.Bck != 1 ||
					s.Stats.Status != "UP" || s.Stats.Tracked != "pg-x-primary/pg-x-1" {
					t.Errorf("%s: row %+v", tc.name, s)
				}
			}
		}
		if rows != tc.rows {
			t.Errorf("%s: %d rows, want %d", tc.name, rows, tc.rows)
		}
	}
}

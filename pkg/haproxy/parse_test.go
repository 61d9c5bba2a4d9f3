package haproxy

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/haproxycfg"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// Real answers of HAProxy 2.6.12 (trimmed to the columns' header + rows).
const showProc26 = `#<PID>          <type>          <reloads>       <uptime>        <version>      
12499           master          1 [failed: 0]   0d00h10m18s     2.6.12-1+deb12u4
# workers
14646           worker          0               0d00h00m00s     2.6.12-1+deb12u4
# old workers
12500           worker          1               0d00h10m18s     2.6.12-1+deb12u4
# programs

`

const showState26 = `1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 pg-test-primary 1 pg-test-1 127.0.0.11 2 0 100 100 614 15 3 3 6 0 0 0 - 16432 - 0 18008 - - 18008
3 pg-test-primary 2 pg-test-2 127.0.0.12 0 0 100 100 613 8 2 0 6 0 0 0 - 16432 - 0 18008 - - 18008
7 other 1 x 127.0.0.9 2 1 100 100 5 15 3 3 6 0 0 0 - 80 - 0 80 - - 80

`

func TestParseProc(t *testing.T) {
	got, err := ParseProc(showProc26)
	if err != nil {
		t.Fatal(err)
	}
	want := ProcInfo{MasterPID: 12499, Reloads: 1, FailedReloads: 0,
		Workers:    []Proc{{PID: 14646, Reloads: 0, Uptime: "0d00h00m00s"}},
		OldWorkers: []Proc{{PID: 12500, Reloads: 1, Uptime: "0d00h10m18s"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	for name, in := range map[string]string{"empty answer after reload": "", "garbage": "Unknown command\n"} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseProc(in); err == nil || !retryable(err) {
				t.Errorf("err = %v, want a retryable error", err)
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	in := "# pxname,svname,status,weight,act,bck,type,addr,check_status,uweight\n" +
		"pg-test-primary,FRONTEND,OPEN,,,,0,,,\n" +
		"pg-test-primary,pg-test-1,UP 1/3,12,1,0,2,127.0.0.11:6432,L7OK,100\n" +
		"pg-test-primary,pg-test-2,DOWN,100,0,1,2,[::1]:6432,L7STS,100\n" +
		"pg-test-primary,BACKEND,UP,100,,,1,,,\n"
	rows, err := ParseStat(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rows))
	}
	if r := rows[1]; r.Weight != 100 || r.EffectiveWeight != 12 || r.Addr != "127.0.0.11" || r.Port != 6432 || !r.Up() || r.Backup {
		t.Errorf("row 1 = %+v", r)
	}
	if r := rows[2]; r.Addr != "::1" || !r.Backup || r.Up() {
		t.Errorf("row 2 = %+v", r)
	}
	for name, bad := range map[string]string{
		"no header":      "pg,FRONTEND,OPEN\n",
		"missing column": "# pxname,svname\npg,FRONTEND\n",
		"bad addr":       "# pxname,svname,status,weight,bck,type,addr\npg,s1,UP,1,0,2,nowhere\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseStat(bad); err == nil {
				t.Error("want an error")
			}
		})
	}
}

func TestFixServersState(t *testing.T) {
	desired := []services.Service{{Name: "pg-test-primary", Servers: []services.Server{
		{Name: "pg-test-1", Address: "127.0.0.11", Port: 16432, CheckPort: 18008, Weight: 50},  // unchanged endpoint, new weight
		{Name: "pg-test-2", Address: "127.0.0.12", Port: 16433, CheckPort: 18008, Weight: 100}, // port moved
		{Name: "pg-test-3", Address: "127.0.0.13", Port: 16432, CheckPort: 18008, Weight: 100}, // new
	}}}
	out, err := FixServersState(showState26, desired)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseServersState(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []StateServer{
		{Backend: "pg-test-primary", Server: "pg-test-1", Addr: "127.0.0.11", Port: 16432, CheckPort: 18008, OpState: 2, UWeight: 50},
		{Backend: "pg-test-primary", Server: "pg-test-2", Addr: "127.0.0.12", Port: 16433, CheckPort: 18008, OpState: 0, UWeight: 100},
		{Backend: "other", Server: "x", Addr: "127.0.0.9", Port: 80, CheckPort: 80, OpState: 2, AdminSt: 1, UWeight: 100},
		{Backend: "pg-test-primary", Server: "pg-test-3", Addr: "127.0.0.13", Port: 16432, CheckPort: 18008, OpState: 0, UWeight: 100},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v\nfile:\n%s", got, want, out)
	}
	if _, err := FixServersState("Unknown command\n", desired); err == nil {
		t.Error("want an error for a non-dump")
	}
	// The write fence: a server forced DOWN starts stopped in the new worker
	// whatever the dump said, at its weight.
	desired[0].Servers[0].ForceDown = true
	out, err = FixServersState(showState26, desired)
	if err != nil {
		t.Fatal(err)
	}
	if got, err = ParseServersState(out); err != nil {
		t.Fatal(err)
	}
	if got[0].Server != "pg-test-1" || got[0].OpState != 0 || got[0].UWeight != 50 {
		t.Errorf("fenced pg-test-1: %+v, want stopped at weight 50", got[0])
	}
}

// TestFixServersStateTracker: a tracking server starts in the state of the
// server it tracks, whatever its own line says (a tracker started DOWN
// under a tracked server that stays UP stays DOWN for good: measured on
// HAProxy 2.6), whether its line is new, changed (check port -> track) or
// kept; under a fenced server it starts stopped.
func TestFixServersStateTracker(t *testing.T) {
	desired := []services.Service{
		{Name: "pg-test-primary", Servers: []services.Server{{Name: "pg-test-1", Address: "127.0.0.11", Port: 16432, CheckPort: 18008, Weight: 100}}},
		{Name: "pg-test-default", Servers: []services.Server{{Name: "pg-test-1", Address: "127.0.0.11", Port: 15432, Weight: 100, Track: "pg-test-primary/pg-test-1"}}},
	}
	dump := showState26 + "4 pg-test-default 1 pg-test-1 127.0.0.11 0 0 100 100 5 1 2 0 6 0 0 0 - 15432 - 0 18008 - - 0\n"
	for name, in := range map[string]string{"new line": showState26, "check port -> track": dump} {
		out, err := FixServersState(in, desired)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseServersState(out)
		if err != nil {
			t.Fatal(err)
		}
		states := map[string]StateServer{}
		for _, s := range got {
			states[s.Backend+"/"+s.Server] = s
		}
		p, d := states["pg-test-primary/pg-test-1"], states["pg-test-default/pg-test-1"]
		if p.OpState != 2 || d.OpState != 2 || d.CheckPort != 0 || d.Port != 15432 {
			t.Errorf("%s: tracked %+v, tracker %+v: want both running, the tracker without a check port\n%s", name, p, d, out)
		}
	}
	desired[0].Servers[0].ForceDown = true
	out, err := FixServersState(dump, desired)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := ParseServersState(out)
	for _, s := range got {
		if s.Server == "pg-test-1" && s.Backend != "other" && s.OpState != 0 {
			t.Errorf("fenced: %s/%s op %d, want stopped", s.Backend, s.Server, s.OpState)
		}
	}
}

func TestParseOwnConfigRoundTrip(t *testing.T) {
	svcs := []services.Service{{
		Name: "pg-test-replica", IP: "127.0.0.10", Port: 5434, Check: "/read-only", Balance: "leastconn", Maxconn: 5000,
		DefaultServer: services.DefaultServerOptions,
		Servers: []services.Server{
			{Name: "pg-test-1", Address: "10.10.10.11", Port: 6432, CheckPort: 8008, Weight: 100, Backup: true},
			{Name: "pg-test-2", Address: "10.10.10.12", Port: 6432, CheckPort: 8008, Weight: 50, Selected: true},
		},
	}, {Name: "pg-test-primary", IP: "*", Port: 5433, Check: "/primary", Balance: "roundrobin", Maxconn: 3000, DefaultServer: "inter 1s"},
		{Name: "pg-test-default", IP: "*", Port: 5436, Check: "/primary", Balance: "roundrobin", Maxconn: 3000, DefaultServer: "inter 1s",
			Servers: []services.Server{{Name: "pg-test-2", Address: "10.10.10.12", Port: 5432, Weight: 100, Selected: true, Track: "pg-test-primary/pg-test-2"}}}}
	svcs[1].Servers = []services.Server{{Name: "pg-test-2", Address: "10.10.10.12", Port: 6432, CheckPort: 8008, Weight: 100, Selected: true}}
	got, err := ParseOwnConfig(string(haproxycfg.Render(svcs, haproxycfg.Options{StatsSocket: "/run/s.sock", ServerStateFile: "/run/st"})))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, svcs) {
		t.Errorf("round trip:\ngot  %+v\nwant %+v", got, svcs)
	}
	t.Run("bad server line names the line", func(t *testing.T) {
		_, err := ParseOwnConfig("backend b\n    server s1 nowhere check\n")
		if err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("err = %v, want one naming line 2", err)
		}
	})
}

func TestStatePreserved(t *testing.T) {
	for name, tc := range map[string]struct {
		opts haproxycfg.Options
		want bool
	}{
		"with state file":    {haproxycfg.Options{ServerStateFile: "/run/st"}, true},
		"without state file": {haproxycfg.Options{}, false},
	} {
		t.Run(name, func(t *testing.T) {
			if got := statePreserved(haproxycfg.Render(nil, tc.opts)); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestParseWorker: Pid and Uptime_sec of a `show info` answer; no uptime
// is -1 (Direct reads such a worker whole at every apply).
func TestParseWorker(t *testing.T) {
	w, err := ParseWorker("Name: HAProxy\nVersion: 2.6.12\nPid: 3\nUptime: 0d 0h01m02s\nUptime_sec: 62\nStart_time_sec: 1796625092\n")
	if err != nil || w.PID != 3 || w.Uptime != 62 {
		t.Errorf("ParseWorker = %+v, %v", w, err)
	}
	w, err = ParseWorker("Name: HAProxy\nPid: 12\n")
	if err != nil || w.PID != 12 || w.Uptime != -1 {
		t.Errorf("without Uptime_sec: %+v, %v", w, err)
	}
	if _, err := ParseWorker("Name: HAProxy\nUptime_sec: 5\n"); err == nil {
		t.Error("an answer without Pid: no error")
	}
}

package topology

import (
	"errors"
	"strings"
	"testing"
)

const (
	v3Line   = "inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100"
	normLine = "inter 2s fastinter 1s downinter 2s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100"
)

// pigstyInv is a one-cluster inventory with extra all.vars and group vars.
func pigstyInv(allVars, groupVars string) string {
	return `all:
  vars: {` + allVars + `}
  children:
    pg-test:
      hosts:
        10.0.0.1: { pg_seq: 1, pg_role: primary }
        10.0.0.2: { pg_seq: 2, pg_role: replica }
      vars: { pg_cluster: pg-test` + groupVars + ` }
`
}

func TestPigstyVersionAndTiming(t *testing.T) {
	tests := []struct {
		name, allVars, groupVars, force string
		version, reason, line           string
	}{
		{"no marker: v3", "", "", "", V3, "no all.vars.version, no pg_rto mode, no pg_rto_plan", v3Line},
		{"v3 pg_rto in seconds", "pg_rto: 30", "", "", V3, "no all.vars.version", v3Line},
		{"version v4.5.0", "version: v4.5.0", "", "", V4, "all.vars.version is v4.5.0", normLine},
		{"version v3.7.0 wins over a mode", "version: v3.7.0", ", pg_rto: fast", "", V3, "all.vars.version is v3.7.0", v3Line},
		{"version 4.0 without v", "version: '4.0'", "", "", V4, "all.vars.version is 4.0", normLine},
		{"mode name: v4 fast", "", ", pg_rto: fast", "", V4, `pg_rto is the mode "fast" (cluster pg-test)`,
			"inter 1s fastinter 500ms downinter 1s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100"},
		{"mode safe", "", ", pg_rto: safe", "", V4, "", "inter 3s fastinter 1500ms downinter 3s rise 3 fall 3 " + tail()},
		{"mode wide", "", ", pg_rto: wide", "", V4, "", "inter 4s fastinter 2s downinter 4s rise 3 fall 3 " + tail()},
		{"v4 with a number falls back to norm", "version: v4.1.0, pg_rto: 30", "", "", V4, "", normLine},
		{"unknown mode falls back to norm", "version: v4.1.0", ", pg_rto: turbo", "", V4, "", normLine},
		{"custom plan: v4", "pg_rto: mine, pg_rto_plan: { mine: [1, 2, 3, 4, 5, '5s', 2000, '1m', 2, '4'] }", "", "", V4,
			`pg_rto is the mode "mine"`, "inter 5s fastinter 2000 downinter 1m rise 2 fall 4 " + tail()},
		{"custom plan alone: v4", "pg_rto_plan: { norm: [1, 2, 3, 4, 5, '5s', '1s', '5s', 2, 2] }", "", "", V4,
			"pg_rto_plan is set (all.vars)", "inter 5s fastinter 1s downinter 5s rise 2 fall 2 " + tail()},
		{"forced v3", "version: v4.5.0", "", V3, V3, "pigsty_version: v3 (set in the controller)", v3Line},
		{"forced v4", "", "", V4, V4, "pigsty_version: v4 (set in the controller)", normLine},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, err := ParseWith("inv.yml", []byte(pigstyInv(tt.allVars, tt.groupVars)), ParseOptions{PigstyVersion: tt.force})
			if err != nil {
				t.Fatal(err)
			}
			if inv.PigstyVersion != tt.version || !strings.HasPrefix(inv.VersionReason, tt.reason) {
				t.Errorf("version %s (%s), want %s (%s)", inv.PigstyVersion, inv.VersionReason, tt.version, tt.reason)
			}
			if got := inv.Clusters[0].DefaultServer; got != tt.line {
				t.Errorf("default-server\n got %q\nwant %q", got, tt.line)
			}
		})
	}
}

func tail() string { return strings.TrimPrefix(rtoOptionsTail, " ") }

func TestPigstyPlanRejects(t *testing.T) {
	tests := []struct{ name, allVars, want string }{
		{"no norm to fall back on", "version: v4.5.0, pg_rto: turbo, pg_rto_plan: { fast: [20, 5, 5, 15, 5, '1s', '500ms', '1s', 3, 3] }",
			`inv.yml:2: cluster pg-test: pg_rto_plan: no entry "norm" (pg_rto "turbo" falls back to norm; the plan has fast)`},
		{"short entry", "pg_rto_plan: { norm: [1, 2, 3] }",
			`inv.yml:2: cluster pg-test: pg_rto_plan: norm: want a list of 10 values [ttl, loop, retry, start, margin, inter, fastinter, downinter, rise, fall], got a list`},
		{"bad time", "pg_rto_plan: { norm: [1, 2, 3, 4, 5, 'soon', '1s', '1s', 3, 3] }",
			`inv.yml:2: cluster pg-test: pg_rto_plan: norm[5] (inter): want a time such as 2s or 500ms, got "soon"`},
		{"fraction below a microsecond", "pg_rto_plan: { norm: [1, 2, 3, 4, 5, '1s', '0.0001ms', '1s', 3, 3] }",
			`inv.yml:2: cluster pg-test: pg_rto_plan: norm[6] (fastinter): time "0.0001ms" is not a whole number of us`},
		{"bad fall", "pg_rto_plan: { norm: [1, 2, 3, 4, 5, '1s', '1s', '1s', 3, 0] }",
			`inv.yml:2: cluster pg-test: pg_rto_plan: norm[9] (fall): want a positive integer, got 0`},
		{"not a mapping", "pg_rto_plan: [1, 2]",
			`inv.yml:2: cluster pg-test: pg_rto_plan: must be a mapping of mode -> [ttl, loop, retry, start, margin, inter, fastinter, downinter, rise, fall], got a list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("inv.yml", []byte(pigstyInv(tt.allVars, "")))
			var e *Error
			if !errors.As(err, &e) || e.Error() != tt.want {
				t.Errorf("error\n got %v\nwant %s", err, tt.want)
			}
		})
	}
	if _, err := ParseWith("inv.yml", []byte(pigstyInv("", "")), ParseOptions{PigstyVersion: "v5"}); err == nil || err.Error() != `pigsty version "v5": want auto, v3 or v4` {
		t.Errorf("ParseWith v5: %v", err)
	}
}

func TestPatroniSSL(t *testing.T) {
	for _, tt := range []struct {
		vars string
		ssl  bool
	}{
		{"", false}, {"patroni_ssl_enabled: true", true}, {"patroni_ssl_enabled: 'yes'", true}, {"patroni_ssl_enabled: false", false},
	} {
		inv, err := Parse("inv.yml", []byte(pigstyInv(tt.vars, "")))
		if err != nil {
			t.Fatal(err)
		}
		c := inv.Clusters[0]
		wantCA := ""
		if tt.ssl {
			wantCA = "/pg/cert/ca.crt"
		}
		if c.PatroniSSL != tt.ssl || c.PatroniCAFile != wantCA {
			t.Errorf("%q: PatroniSSL %v CA %q, want %v %q", tt.vars, c.PatroniSSL, c.PatroniCAFile, tt.ssl, wantCA)
		}
	}
}

func TestHAProxyTime(t *testing.T) {
	for in, want := range map[any]string{"2s": "2s", "0.5s": "500ms", "1.5s": "1500ms", "1.25m": "75s", 3: "3", 0.5: "500us", "10ms": "10ms", "0.5h": "30m"} {
		if got, err := haproxyTime(in); err != nil || got != want {
			t.Errorf("haproxyTime(%v) = %q, %v; want %q", in, got, err, want)
		}
	}
}

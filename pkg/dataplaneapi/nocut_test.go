package dataplaneapi

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// oldNoCut is warnNoCut as it was (every service remembered), returning
// the services it warned about.
func oldNoCut(seenBy map[string][2]string, desired []services.Service) []string {
	var warned []string
	for _, d := range desired {
		seen := [2]string{d.DefaultServer, d.Check}
		if was, ok := seenBy[d.Name]; ok && was == seen {
			continue
		}
		seenBy[d.Name] = seen
		if !services.WriteCheck(d.Check) || oldHasShutdownSessions(d.DefaultServer) {
			continue
		}
		warned = append(warned, d.Name)
	}
	return warned
}

func oldHasShutdownSessions(line string) bool {
	f := strings.Fields(line)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "on-marked-down" && f[i+1] == "shutdown-sessions" {
			return true
		}
	}
	return false
}

// TestWarnNoCutAsBefore: remembering only the services warned about warns
// as remembering every service did, over random sequences of applies whose
// services come and go and change their default-server line and check;
// and the map keeps the warned ones only.
func TestWarnNoCutAsBefore(t *testing.T) {
	lines := []string{"", "inter 3s on-marked-down shutdown-sessions slowstart 30s", "inter 3s slowstart 30s",
		"on-marked-down  shutdown-sessions", "on-marked-down\tshutdown-sessions weight 100", "on-marked-down", "shutdown-sessions on-marked-down",
		"on-marked-down on-marked-down shutdown-sessions", "on-marked-up shutdown-sessions"}
	checks := []string{"/primary", "/replica", "/read-only", "", "/read-write?lag=1"}
	for _, l := range lines {
		if got, want := services.ShutsSessionsDown(l), oldHasShutdownSessions(l); got != want {
			t.Errorf("ShutsSessionsDown(%q) = %v, was %v", l, got, want)
		}
	}
	rng := rand.New(rand.NewPCG(7, 9))
	core, logs := observer.New(zapcore.WarnLevel)
	tg := &Target{log: zap.New(core)}
	old := map[string][2]string{}
	for apply := 0; apply < 300; apply++ {
		var desired []services.Service
		for i := 0; i < 8; i++ {
			if rng.IntN(4) == 0 {
				continue // not desired in this apply
			}
			desired = append(desired, services.Service{Name: string(rune('a' + i)),
				DefaultServer: lines[rng.IntN(len(lines))], Check: checks[rng.IntN(len(checks))]})
		}
		want := oldNoCut(old, desired)
		tg.warnNoCut(desired)
		var got []string
		for _, e := range logs.TakeAll() {
			got = append(got, e.ContextMap()["service"].(string))
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("apply %d: warned about %v, before %v", apply, got, want)
		}
		for name, pair := range tg.noCut {
			if services.WriteCheck(pair[1]) && !services.ShutsSessionsDown(pair[0]) && old[name] == pair {
				continue
			}
			t.Fatalf("apply %d: %s remembered as %q (before: %q)", apply, name, pair, old[name])
		}
	}
}

// TestInternedAsRead: the names and admin states the admin cache keeps
// are the strings read, shared where they can be.
func TestInternedAsRead(t *testing.T) {
	servers := []services.Server{{Name: "pg-1-a"}, {Name: "pg-1-b"}}
	for _, name := range []string{"pg-1-a", "pg-1-b", "pg-2-a", ""} {
		read := strings.Clone(name)
		got := serverName(servers, read)
		if got != name {
			t.Errorf("serverName(%q) = %q", name, got)
		}
		if name == "pg-1-b" && unsafe.StringData(got) != unsafe.StringData(servers[1].Name) {
			t.Errorf("serverName(%q) is not desired's string", name)
		}
	}
	for _, s := range []string{"ready", "drain", "maint", "", "MAINT", "other"} {
		if got := adminWord(strings.Clone(s)); got != s {
			t.Errorf("adminWord(%q) = %q", s, got)
		}
	}
}

package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCmdlinePasswordWarnings(t *testing.T) {
	got := cmdlinePasswordWarnings([]string{"http://admin:s3cret@127.0.0.1:5555", "http://admin@127.0.0.1:5556", "http://127.0.0.1:5557"},
		"http://root:etcdpw@127.0.0.1:2379,http://127.0.0.1:2380")
	if len(got) != 2 {
		t.Fatalf("got %d warnings, want 2 (the two URLs with a password): %q", len(got), got)
	}
	for _, w := range got {
		if strings.Contains(w, "s3cret") || strings.Contains(w, "etcdpw") {
			t.Errorf("warning shows the password: %s", w)
		}
		if !strings.Contains(w, "/proc/PID/cmdline") || !strings.Contains(w, "password_file") {
			t.Errorf("warning does not say why or what to do instead: %s", w)
		}
	}
	if !strings.HasPrefix(got[0], "--dataplaneapi http://admin:xxxxx@127.0.0.1:5555") || !strings.HasPrefix(got[1], "--etcd ") {
		t.Errorf("warnings do not name the flag and the redacted URL: %q", got)
	}
	if w := cmdlinePasswordWarnings([]string{"http://admin@h:5555"}, "http://h:2379"); len(w) != 0 {
		t.Errorf("no password, yet warnings: %q", w)
	}
}

// TestRunWarnsAboutCmdlinePassword: `controller run` prints the warning
// before it starts (here it then fails on the missing inventory).
func TestRunWarnsAboutCmdlinePassword(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := runRun([]string{"--inventory", t.TempDir() + "/missing.yml", "--etcd", "http://127.0.0.1:1",
		"--dataplaneapi", "http://admin:s3cret@127.0.0.1:1", "--listen", "127.0.0.1:0"}, &stdout, &stderr)
	if code == 0 {
		t.Fatalf("run with a missing inventory exited 0")
	}
	out := stderr.String()
	if !strings.Contains(out, "/proc/PID/cmdline") {
		t.Errorf("no command-line password warning in:\n%s", out)
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("stderr shows the password:\n%s", out)
	}
}

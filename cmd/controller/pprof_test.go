package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestPprofLoopbackOnly(t *testing.T) {
	for _, bad := range []string{"0.0.0.0:6060", ":6060", "10.1.2.3:6060", "example.com:6060", "6060"} {
		if _, _, err := parseRun([]string{"-inventory", "x.yml", "-pprof", bad}, io.Discard); err == nil || !strings.Contains(err.Error(), "-pprof") {
			t.Errorf("-pprof %s: got %v, want a -pprof error", bad, err)
		}
	}
	for _, good := range []string{"127.0.0.1:0", "[::1]:6060", "localhost:6060"} {
		if err := checkLoopback(good); err != nil {
			t.Errorf("%s: %v", good, err)
		}
	}
}

func TestPprofServes(t *testing.T) {
	addr, stop, err := servePprof("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "heap profile") {
		t.Fatalf("status %d, body %.100q", resp.StatusCode, body)
	}
}

package haproxyname

import (
	"errors"
	"strings"
	"testing"
)

func TestIdentifier(t *testing.T) {
	for _, ok := range []string{"pg-test-1", "pg_test.1", "a:b", "A", strings.Repeat("x", MaxIdentifier)} {
		if err := Identifier(ok); err != nil {
			t.Errorf("Identifier(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "pwn 127.4.0.99:5432 #", "a#b", "a\nb", "a\tb", "é", "a/b", "a\x00", strings.Repeat("x", MaxIdentifier+1)} {
		if err := Identifier(bad); err == nil {
			t.Errorf("Identifier(%q) accepted", bad)
		}
	}
	if err := Name(strings.Repeat("x", MaxName+1)); err == nil {
		t.Error("Name accepted a name longer than MaxName")
	}
}

func TestAddress(t *testing.T) {
	for _, ok := range []string{"127.0.0.1", "10.10.10.11", "::1", "fe80::1", "localhost", "db-1.example.com", "db-1.example.com."} {
		if err := Address(ok); err != nil {
			t.Errorf("Address(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "127.4.0.99 #", "127.4.0.99 ", "a b", "bad_host", "-a.b", "a..b", "127.1", "300.1.1.1",
		"fe80::1%eth0", "a#b", "host\nserver x", strings.Repeat("a.", 130) + "b"} {
		if err := Address(bad); err == nil {
			t.Errorf("Address(%q) accepted", bad)
		}
	}
}

func TestResolvable(t *testing.T) {
	calls := 0
	lookup := func(h string) ([]string, error) {
		calls++
		if h == "db.example" {
			return []string{"10.0.0.1"}, nil
		}
		return nil, errors.New("no such host")
	}
	if err := Resolvable("127.0.0.1", lookup); err != nil || calls != 0 {
		t.Errorf("an IP: err %v, %d lookups (want none)", err, calls)
	}
	if err := Resolvable("db.example", lookup); err != nil {
		t.Error(err)
	}
	if err := Resolvable("nowhere.invalid", lookup); err == nil || !strings.Contains(err.Error(), "does not resolve") {
		t.Errorf("unresolvable host: %v", err)
	}
	if err := Resolvable("a b", lookup); err == nil {
		t.Error("accepted a host with a space")
	}
	// The real resolver knows localhost (/etc/hosts).
	if err := Resolvable("localhost", nil); err != nil {
		t.Errorf("localhost: %v", err)
	}
}

func TestPortAndBind(t *testing.T) {
	for _, p := range []int{0, -1, 65536} {
		if Port(p) == nil {
			t.Errorf("Port(%d) accepted", p)
		}
	}
	if Port(1) != nil || Port(65535) != nil {
		t.Error("valid ports refused")
	}
	for _, ok := range []string{"*", "", "127.0.0.10", "::"} {
		if err := BindAddress(ok); err != nil {
			t.Errorf("BindAddress(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"localhost", "1.2.3.4 #", "fe80::1%lo"} {
		if BindAddress(bad) == nil {
			t.Errorf("BindAddress(%q) accepted", bad)
		}
	}
}

func TestServerOptions(t *testing.T) {
	for _, ok := range []string{"", "inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100",
		"inter 100ms check no-backup", "inter 10", "inter 3s\tfastinter 1s"} {
		if err := ServerOptions(ok); err != nil {
			t.Errorf("ServerOptions(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"inter", "inter 3x", "rise -1", "rise 3 # comment", "bogus 1", "weight 1e3", "on-marked-down a\"b", "inter 3sm",
		// Split by strings.Fields, but one word to HAProxy (Unicode
		// spaces) or control characters: the line is written as it is.
		"inter 3s\u00a0fastinter 1s", "inter 3s\u0085fastinter 1s", "inter 3s\vfastinter 1s", "inter 3s\ffastinter 1s",
		"inter 3s\u2003fastinter 1s", "inter 3s\rfastinter 1s"} {
		if err := ServerOptions(bad); err == nil {
			t.Errorf("ServerOptions(%q) accepted", bad)
		}
	}
}

func TestWord(t *testing.T) {
	if Word("/primary") != nil {
		t.Error("/primary refused")
	}
	for _, bad := range []string{"", "/a b", "/a#b", "/a\"", "/a\n"} {
		if Word(bad) == nil {
			t.Errorf("Word(%q) accepted", bad)
		}
	}
}

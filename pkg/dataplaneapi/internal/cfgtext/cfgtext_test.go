package cfgtext

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/haproxytech/client-native/v5/models"
)

// The real API's answer for Pigsty's default-server line (fixture 01).
func TestParsePigstyDefaultServerMatchesRealAPI(t *testing.T) {
	b, err := os.ReadFile("../../testdata/fixtures/01-get-backends.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Response struct {
			Body struct {
				Data []struct {
					DefaultServer json.RawMessage `json:"default_server"`
				} `json:"data"`
			} `json:"body"`
		} `json:"response"`
	}
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	var want models.DefaultServer
	if err := json.Unmarshal(fx.Response.Body.Data[0].DefaultServer, &want); err != nil {
		t.Fatal(err)
	}
	got, err := ParseServerParams(strings.Fields("inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want.ServerParams) {
		gj, _ := json.Marshal(got)
		t.Fatalf("parsed %s\nreal API %s", gj, fx.Response.Body.Data[0].DefaultServer)
	}
	if back := Canonical(got); back != "inter 3s fastinter 1s downinter 5s rise 3 fall 3 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100" {
		t.Fatalf("rendered back as %q", back)
	}
}

func TestParseDuration(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		err  bool
	}{
		{"3s", 3000, false}, {"500ms", 500, false}, {"1m", 60000, false}, {"2h", 7200000, false},
		{"1d", 86400000, false}, {"30000", 30000, false}, {"1500us", 2, false}, {"x", 0, true}, {"-1s", 0, true}, {"", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDuration(tc.in)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("ParseDuration(%q) = %d, %v", tc.in, got, err)
			}
		})
	}
}

func TestParseServerParamsErrors(t *testing.T) {
	cases := map[string]string{
		"unknown option": "inter 3s frobnicate",
		"missing value":  "inter",
		"bad integer":    "rise three",
		"bad duration":   "inter soon",
	}
	for name, line := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseServerParams(strings.Fields(line)); err == nil {
				t.Fatalf("%q accepted", line)
			}
		})
	}
}

func TestServerLineRoundTrip(t *testing.T) {
	cases := []string{
		"pg-test-1 127.0.0.11:6432 check port 8008 weight 100 backup",
		"pg-test-2 127.0.0.12:5432 check port 8008 weight 100",
		"v6 [::1]:5432 check port 8008 maxconn 10 disabled",
	}
	for _, line := range cases {
		t.Run(line, func(t *testing.T) {
			s, err := ParseServerLine(strings.Fields(line))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(ServerLine(s), " "); got != line {
				t.Fatalf("round trip %q -> %q", line, got)
			}
		})
	}
	s, _ := ParseServerLine(strings.Fields("a 1.2.3.4:5 no-backup"))
	if s.Backup != "disabled" {
		t.Fatalf("no-backup parsed as %q", s.Backup)
	}
}

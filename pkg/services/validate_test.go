package services

import (
	"strings"
	"testing"
)

// TestValidateServiceMaxconn: HAProxy reads a frontend's maxconn into a C
// int; a service whose maxconn does not fit is never given to a target.
func TestValidateServiceMaxconn(t *testing.T) {
	for _, tc := range []struct {
		maxconn int
		want    string // "" = valid
	}{
		{0, ""},
		{5000, ""},
		{2147483647, ""},
		{2147483648, "maxconn 2147483648 is above 2147483647"},
		{-1, "maxconn -1 is negative"},
	} {
		s := Service{Cluster: "pg-test", Name: "pg-test-primary", Service: "primary", IP: "*", Port: 5433, Check: "/primary",
			Dest: "postgres", DestPort: 5432, Balance: "roundrobin", Maxconn: tc.maxconn, DefaultServer: DefaultServerOptions}
		err := ValidateService(&s)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("maxconn %d: %v, want valid", tc.maxconn, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("maxconn %d: %v, want an error containing %q", tc.maxconn, err, tc.want)
		}
	}
}

// TestValidateServerCAFile: the CA file is written into the server line
// (`check-ssl ca-file <path>`): a blank or a '#' there would end the word
// and start another keyword or a comment, so it is refused like every other
// word of the line.
func TestValidateServerCAFile(t *testing.T) {
	sv := Server{Name: "pg-1", Address: "10.0.0.1", Port: 5432, CheckPort: 8008, Weight: 100, CheckSSL: true, CAFile: "/pg/cert/ca.crt"}
	if err := ValidateServer(&sv); err != nil {
		t.Fatalf("Pigsty's CA file refused: %v", err)
	}
	for _, bad := range []string{"/pg/cert/ca.crt verify none", "/pg/ca#x", "/pg/ca\nserver x 1.2.3.4:1"} {
		sv.CAFile = bad
		if err := ValidateServer(&sv); err == nil {
			t.Errorf("ca-file %q accepted", bad)
		}
	}
}

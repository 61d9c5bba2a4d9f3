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

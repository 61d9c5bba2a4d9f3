package dataplaneapi_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/internal/cfgtext"
	"github.com/pgsvc/pgsvc/pkg/haproxyname"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// TestApplyRefusesUnvalidatedTokens (issue 12 row 1, defence in depth): the
// Data Plane API target checks every service with services.Validate before
// its first call: a hostile server name or address is refused and nothing is
// written to the API.
func TestApplyRefusesUnvalidatedTokens(t *testing.T) {
	f := newFixture(t)
	f.apply(t, cluster("pg-test", 0, 3, 1))
	for _, bad := range []services.Server{
		{Name: "pwn 127.4.0.99:5432 #", Address: "127.4.0.99", Port: 5432, CheckPort: 8008, Weight: 100},
		{Name: "pg-test-9", Address: "127.4.0.99 #", Port: 5432, CheckPort: 8008, Weight: 100},
		{Name: "pg-test-9", Address: "127.4.0.99", Port: 0, CheckPort: 8008, Weight: 100},
	} {
		desired := cluster("pg-test", 0, 3, 1)
		desired[0].Servers = append(desired[0].Servers, bad)
		f.srv.ResetRequests()
		_, err := f.tg.Apply(context.Background(), desired)
		if err == nil || !strings.Contains(err.Error(), "pg-test-primary") {
			t.Errorf("server %+v: Apply = %v, want an error naming the service", bad, err)
		}
		if w := f.srv.Writes(); len(w) != 0 {
			t.Errorf("server %+v: %d writes reached the API", bad, len(w))
		}
	}
}

// TestOptionVocabularyMatchesDriver: every default-server keyword the shared
// validator (and so plan) accepts, the Data Plane API driver can convert: plan
// never accepts options run cannot apply.
func TestOptionVocabularyMatchesDriver(t *testing.T) {
	for _, k := range haproxyname.ServerOptionKeywords() {
		words := []string{k}
		if haproxyname.ServerOptions(k) != nil {
			words = append(words, "1")
			if err := haproxyname.ServerOptions(strings.Join(words, " ")); err != nil {
				t.Errorf("%s: %v", k, err)
				continue
			}
		}
		if _, err := cfgtext.ParseServerParams(words); err != nil {
			t.Errorf("validator accepts %q but the driver does not: %v", strings.Join(words, " "), err)
		}
	}
}

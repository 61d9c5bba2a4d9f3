package dataplaneapi_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/services"
)

// TestRealAPIStaleTransactionsAndSecrets: on each real API, transactions a
// killed controller left open are deleted once outdated (and only then),
// and a wrong password never shows in an error.
func TestRealAPIStaleTransactionsAndSecrets(t *testing.T) {
	forEachRealAPI(t, func(t *testing.T, bin string, version int) {
		rs := startRealStack(t, bin, version)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		place := func(svcs []services.Service) []services.Service {
			for i := range svcs {
				svcs[i].IP = "127.0.0.1"
				svcs[i].Port = rs.svcPorts[i%4]
			}
			return svcs
		}
		weight := int64(20)
		bump := func() {
			// Another writer changes a section the controller does not own.
			v, err := rs.c.GetVersion(ctx)
			if err != nil {
				t.Fatal(err)
			}
			srv, _, err := rs.c.GetServer(ctx, "legacy-app", "app1")
			if err != nil {
				t.Fatal(err)
			}
			weight++
			srv.Weight = &weight
			if _, err := rs.c.ReplaceServer(ctx, "legacy-app", srv, dataplaneapi.AtVersion(v)); err != nil {
				t.Fatal(err)
			}
		}
		t.Run("stale transactions", func(t *testing.T) { testStaleTransactions(t, rs.c, place, bump) })

		t.Run("wrong password", func(t *testing.T) {
			const secret = "not-the-password-42"
			bad, err := dataplaneapi.New(strings.Replace(rs.base, "adminpwd", secret, 1), dataplaneapi.Options{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = bad.GetVersion(ctx)
			if err == nil || strings.Contains(err.Error(), secret) {
				t.Fatalf("wrong password: %v", err)
			}
			// Past detection too: a client told its version goes straight to the call.
			fixed, _ := dataplaneapi.New(strings.Replace(rs.base, "adminpwd", secret, 1), dataplaneapi.Options{APIVersion: []string{"", "", "v2", "v3"}[version]})
			_, err = fixed.GetVersion(ctx)
			if err == nil || strings.Contains(err.Error(), secret) {
				t.Fatalf("wrong password: %v", err)
			}
			t.Logf("v%d answers a wrong password with: %v", version, err)
		})
	})
}

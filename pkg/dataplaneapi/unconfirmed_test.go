package dataplaneapi

import (
	"testing"

	"github.com/pgsvc/pgsvc/pkg/services"
)

// The deactivations sent last are those of the twins of members the DCS
// does not report running, in services that take no writes only: in a
// role-dependent write service an old primary's outgoing twin keeps its
// place (incoming before outgoing, as any other flip).
func TestUnconfirmedTwinsOnlyInReadServices(t *testing.T) {
	gone := services.Server{Name: "m1.backup", Disabled: true, Unconfirmed: true}
	live := services.Server{Name: "m2", Disabled: true}
	active := services.Server{Name: "m3"}
	desired := []services.Service{
		{Name: "c-replica", Check: "/read-only", Servers: []services.Server{gone, live, active}},
		{Name: "c-writer", Check: "/primary", Servers: []services.Server{gone, live, active}},
	}
	got := unconfirmedTwins(desired)
	if !got["c-replica/m1.backup"] || len(got) != 1 {
		t.Errorf("unconfirmedTwins = %v, want only c-replica/m1.backup", got)
	}
}

package dataplaneapi_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgsvc/pgsvc/pkg/dataplaneapi"
	"github.com/pgsvc/pgsvc/pkg/dataplaneapi/dpapitest"
)

// onV3Double reports whether t runs under TestDriverOnV3Double, whose
// fixtures speak Data Plane API v3.
func onV3Double(t *testing.T) bool { return strings.HasPrefix(t.Name(), "TestDriverOnV3Double/") }

// TestDriverOnV3Double runs the driver tests again against the double
// speaking v3 (checked against the recorded 3.2.0 exchanges by dpapitest's
// conformance test): the client detects v3 and every path works the same.
func TestDriverOnV3Double(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"CreatesServicesInOneTransaction", TestApplyCreatesServicesInOneTransaction},
		{"SwitchoverIsOneTransactionOneReload", TestApplySwitchoverIsOneTransactionOneReload},
		{"WeightOnlyNeedsNoReload", TestApplyWeightOnlyNeedsNoReload},
		{"ManyWeightsInOneTransaction", TestApplyManyWeightsInOneTransaction},
		{"NoChangeMakesNoWrite", TestApplyNoChangeMakesNoWrite},
		{"ServiceSettingsChange", TestApplyServiceSettingsChange},
		{"CreatesMissingFrontend", TestApplyCreatesMissingFrontend},
		{"RetriesAfterConflict", TestApplyRetriesAfterConflict},
		{"GivesUpAfterRepeatedConflicts", TestApplyGivesUpAfterRepeatedConflicts},
		{"MidTransactionFailureLeavesNothing", TestApplyMidTransactionFailureLeavesNothing},
		{"FailedReloadIsRetryable", TestApplyFailedReloadIsRetryable},
		{"APIDownFailsFast", TestApplyAPIDownFailsFast},
		{"RawPathForLargeChange", TestApplyRawPathForLargeChange},
		{"LeavesForeignSectionsAlone", TestApplyLeavesForeignSectionsAlone},
		{"StatePreservedFalseWithoutStateFile", TestStatePreservedFalseWithoutStateFile},
		{"ForceUp", TestApplyForceUp},
		{"ForceDown", TestApplyForceDown},
		{"ResyncWithSameVersionReadsOnlyTheVersion", TestResyncWithSameVersionReadsOnlyTheVersion},
		{"OneClusterChangeCostsTheSameAtAnyFleetSize", TestOneClusterChangeCostsTheSameAtAnyFleetSize},
		{"SwitchoverReadsNoObjects", TestSwitchoverReadsNoObjects},
		{"OutsideEditTriggersOneFullRead", TestOutsideEditTriggersOneFullRead},
		{"WriteFenceNeverWaitsOnAFullRead", TestWriteFenceNeverWaitsOnAFullRead},
		{"FailedApplyReadsEverythingNextTime", TestFailedApplyReadsEverythingNextTime},
		{"StaleTransactionsDeletedOnceOutdated", TestStaleTransactionsDeletedOnceOutdated},
		{"WeightChangeDoesNotRideOnAReload", TestWeightChangeDoesNotRideOnAReload},
		{"OrphansFillingTheLimitAreDeletedOn429", TestOrphansFillingTheLimitAreDeletedOn429},
	} {
		t.Run(tc.name, tc.f)
	}
}

func TestAPIVersionDetectedAndConfigured(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, v := range []int{2, 3} {
		srv := dpapitest.NewServer(t, dpapitest.WithAPIVersion(v))
		c, err := dataplaneapi.New(srv.URL(), dataplaneapi.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := c.APIVersion(ctx); err != nil || got != v {
			t.Fatalf("v%d double: detected %d, %v", v, got, err)
		}
		if _, err := c.GetVersion(ctx); err != nil {
			t.Fatalf("v%d double: %v", v, err)
		}
		// Detection happens once per client.
		srv.ResetRequests()
		if _, err := c.GetVersion(ctx); err != nil || len(srv.Requests()) != 1 {
			t.Fatalf("v%d double: second call made %d requests (%v)", v, len(srv.Requests()), err)
		}
		// A configured version is used without asking; the wrong one fails
		// with the API's 404 rather than guessing.
		other := "v3"
		if v == 3 {
			other = "v2"
		}
		wrong, _ := dataplaneapi.New(srv.URL(), dataplaneapi.Options{APIVersion: other})
		srv.ResetRequests()
		if _, err := wrong.GetVersion(ctx); !dataplaneapi.IsNotFound(err) {
			t.Fatalf("v%d double with api_version %s: %v", v, other, err)
		}
		if r := srv.Requests(); len(r) != 1 || strings.HasSuffix(r[0].APIPath, "/info") {
			t.Fatalf("configured version still probed: %+v", r)
		}
	}
	if _, err := dataplaneapi.New("http://a:b@127.0.0.1:1", dataplaneapi.Options{APIVersion: "v4"}); err == nil {
		t.Fatal("api_version v4 accepted")
	}
}

func TestAPIVersionDetectionFailsOnBadPasswordWithoutLeakingIt(t *testing.T) {
	srv := dpapitest.NewServer(t, dpapitest.WithAPIVersion(3))
	bad, _ := dataplaneapi.New(strings.Replace(srv.URL(), "adminpwd", "s3cr3t-pw", 1), dataplaneapi.Options{})
	_, err := bad.GetVersion(context.Background())
	if err == nil || statusOf(err) != 401 || dataplaneapi.Retryable(err) || strings.Contains(err.Error(), "s3cr3t-pw") {
		t.Fatalf("bad password: %v", err)
	}
}

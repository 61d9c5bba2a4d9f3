package metrics

// These helpers do what prometheus/testutil's ToFloat64, GatherAndCompare and
// CollectAndLint do. testutil itself needs github.com/kylelemons/godebug in
// go.mod (it is in go.sum but not required there), and go.mod is frozen for
// now; once that line is added, these can be replaced by testutil.

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// toFloat64 returns the value of a collector that yields exactly one counter,
// gauge or untyped metric.
func toFloat64(c prometheus.Collector) (float64, error) {
	ch := make(chan prometheus.Metric, 16)
	go func() { c.Collect(ch); close(ch) }()
	var ms []prometheus.Metric
	for m := range ch {
		ms = append(ms, m)
	}
	if len(ms) != 1 {
		return 0, fmt.Errorf("collected %d metrics, want 1", len(ms))
	}
	var pb dto.Metric
	if err := ms[0].Write(&pb); err != nil {
		return 0, err
	}
	switch {
	case pb.Counter != nil:
		return pb.Counter.GetValue(), nil
	case pb.Gauge != nil:
		return pb.Gauge.GetValue(), nil
	case pb.Untyped != nil:
		return pb.Untyped.GetValue(), nil
	}
	return 0, fmt.Errorf("metric is neither counter, gauge nor untyped")
}

// gatherText renders the named families (all when none named) in the text
// exposition format.
func gatherText(g prometheus.Gatherer, names ...string) (string, error) {
	mfs, err := g.Gather()
	if err != nil {
		return "", err
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	sort.Slice(mfs, func(i, j int) bool { return mfs[i].GetName() < mfs[j].GetName() })
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if len(want) > 0 && !want[mf.GetName()] {
			continue
		}
		if err := enc.Encode(mf); err != nil {
			return "", err
		}
	}
	return buf.String(), nil
}

// gatherAndCompare compares the named families with want (text format,
// leading and trailing blank lines ignored).
func gatherAndCompare(g prometheus.Gatherer, want string, names ...string) error {
	got, err := gatherText(g, names...)
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != strings.TrimSpace(want) {
		return fmt.Errorf("metrics differ\n--- got:\n%s\n--- want:\n%s", got, strings.TrimSpace(want))
	}
	return nil
}

// collectAndLint lints what c collects with promlint.
func collectAndLint(c prometheus.Collector) ([]promlint.Problem, error) {
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	return promlint.NewWithMetricFamilies(mfs).Lint()
}

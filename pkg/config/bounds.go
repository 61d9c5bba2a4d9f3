package config

import (
	"fmt"
	"time"
)

// Bounds of the controller settings: below them the loop spins (a 1ns
// resync is a full re-apply per scheduler tick) or every apply times out
// before HAProxy can answer; above them a setting is a typo.
const (
	MinResyncInterval = time.Second
	MinApplyTimeout   = 100 * time.Millisecond
	MaxHistorySize    = 100000
)

// MaxDirectMaxconn bounds direct[].maxconn, HAProxy's global maxconn.
// HAProxy 2.6 parses it with atol and no check (`haproxy -c` passes any
// value, even a negative one), then at the start needs two file descriptors
// per connection plus a few per thread (maxsock, a C int) and refuses to
// start without them: "Cannot raise FD limit" (strict-limits, the default)
// or "Not enough memory to allocate N entries for fdtab". Linux gives a
// process at most 2147483584 descriptors (the largest fs.nr_open), so above
// this bound (that, less 64Ki for the per-thread ones, halved) no HAProxy
// starts; from 2^30 maxsock overflows and one may start with a wrong fd
// table (2147483647 does). Hosts usually refuse far lower values (their
// nr_open, their memory): those depend on the host, this one does not.
const MaxDirectMaxconn = (2147483584 - 1<<16) / 2

type fieldErr struct{ field, msg string }

// validate checks the controller settings once defaults are applied.
func (c Controller) validate() *fieldErr {
	atLeast := func(field string, d Duration, min time.Duration) *fieldErr {
		if d.Duration < min {
			return &fieldErr{field, fmt.Sprintf("%s is too short (at least %s)", d.Duration, min)}
		}
		return nil
	}
	for _, e := range []*fieldErr{
		atLeast("controller.resync_interval", c.ResyncInterval, MinResyncInterval),
		atLeast("controller.apply_timeout", c.ApplyTimeout, MinApplyTimeout),
	} {
		if e != nil {
			return e
		}
	}
	if c.HistorySize < 1 || c.HistorySize > MaxHistorySize {
		return &fieldErr{"controller.history_size", fmt.Sprintf("%d is out of range (1-%d)", c.HistorySize, MaxHistorySize)}
	}
	return nil
}

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

package controller

import (
	"go.uber.org/zap"

	"github.com/pgsvc/pgsvc/pkg/plan"
)

// reasonVanished freezes a cluster whose DCS keys all disappeared after it
// had live state.
const reasonVanished = "stale: every DCS key of the cluster is gone; keeping its last known roles"

// logNewWarnings logs each plan warning the previous plan did not have
// (a leader key naming no member, a skipped server, a bad DCS key...), once.
func (c *Controller) logNewWarnings(prev, next *plan.Plan) {
	old := map[string]bool{}
	if prev != nil {
		for _, cl := range prev.Clusters {
			for _, w := range cl.Warnings {
				old[cl.Name+"\x00"+w] = true
			}
		}
	}
	for _, cl := range next.Clusters {
		for _, w := range cl.Warnings {
			if !old[cl.Name+"\x00"+w] {
				c.log.Warn("cluster warning", zap.String("cluster", cl.Name), zap.String("warning", w))
			}
		}
	}
}

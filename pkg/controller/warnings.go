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
	var old map[string]int // cluster -> index in prev, built when the orders differ
	for i, cl := range next.Clusters {
		if len(cl.Warnings) == 0 {
			continue
		}
		var was []string
		switch {
		case prev == nil:
		case i < len(prev.Clusters) && prev.Clusters[i].Name == cl.Name:
			// Plans list the inventory's clusters in order: the same index
			// unless the inventory changed.
			was = prev.Clusters[i].Warnings
		default:
			if old == nil {
				old = make(map[string]int, len(prev.Clusters))
				for k, pcl := range prev.Clusters {
					old[pcl.Name] = k
				}
			}
			if k, ok := old[cl.Name]; ok {
				was = prev.Clusters[k].Warnings
			}
		}
		if len(was) == len(cl.Warnings) && &was[0] == &cl.Warnings[0] {
			continue // the same plan kept: nothing new
		}
		seen := make(map[string]bool, len(was))
		for _, w := range was {
			seen[w] = true
		}
		for _, w := range cl.Warnings {
			if !seen[w] {
				c.log.Warn("cluster warning", zap.String("cluster", cl.Name), zap.String("warning", w))
			}
		}
	}
}

package election

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchCandidates watches the election prefix: every campaign, resignation
// and lease expiry is an event, so a status cache can re-read Leader at once
// instead of polling. The channel closes when ctx ends.
func (e *Elector) WatchCandidates(ctx context.Context) clientv3.WatchChan {
	return e.cli.Watch(clientv3.WithRequireLeader(ctx), e.opts.Key+"/", clientv3.WithPrefix())
}

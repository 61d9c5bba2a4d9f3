// Package patroni decodes Patroni's DCS keys (as stored in etcd v3) into typed
// per-cluster state, and watches etcd for changes to them.
//
// Decoding is pure: it never panics on bad input, and every malformed value is
// reported as a KeyError naming the key, while the rest of the cluster is kept.
package patroni

import (
	"strings"
	"time"
)

// KV is one etcd key-value pair as the decoder sees it. It is the common shape
// of a live etcd range/watch answer and of an `etcdctl get -w json` snapshot.
type KV struct {
	Key            string
	Value          []byte
	CreateRevision int64
	ModRevision    int64
	Version        int64
	Lease          int64
}

// Normalised member roles. Patroni <= 3.x writes "master", 4.x "primary";
// both decode to RolePrimary. RawRole keeps what Patroni wrote.
const (
	RolePrimary       = "primary"
	RoleReplica       = "replica"
	RoleStandbyLeader = "standby_leader"
	RolePromoted      = "promoted"
	RoleDemoted       = "demoted"
	RoleUninitialized = "uninitialized"
)

// Member is what Patroni publishes about one member under members/<name>.
type Member struct {
	Name string `json:"name"`
	// Host and Port come from conn_url (postgres://host:port/db).
	Host string `json:"host"`
	Port int    `json:"port"`
	// APIURL is api_url as written; APIHost/APIPort are parsed from it.
	APIURL  string `json:"api_url"`
	APIHost string `json:"api_host"`
	APIPort int    `json:"api_port"`
	// Role is normalised (see the Role* constants); RawRole is as written.
	Role    string `json:"role"`
	RawRole string `json:"raw_role"`
	State   string `json:"state"`
	Version string `json:"version,omitempty"`
	// Timeline is 0 when Patroni did not publish one.
	Timeline int64 `json:"timeline"`
	// XLogLocation is nil when the member did not publish one (not running).
	XLogLocation *int64 `json:"xlog_location,omitempty"`
	// LagBytes is the leader's optime minus XLogLocation, nil when either is
	// unknown. The leader itself has lag 0.
	LagBytes         *int64         `json:"lag_bytes,omitempty"`
	ReplicationState string         `json:"replication_state,omitempty"`
	Tags             map[string]any `json:"tags,omitempty"`
	NoLoadBalance    bool           `json:"noloadbalance"`
	NoFailover       bool           `json:"nofailover"`
	// NoSync is Patroni's Tags.nosync: the nosync tag, or (4.1+) without it
	// a sync_priority <= 0 (never chosen as a sync standby).
	NoSync         bool `json:"nosync,omitempty"`
	PendingRestart bool `json:"pending_restart,omitempty"`
	Pause          bool `json:"pause,omitempty"`
	// ModRevision is the etcd revision that last wrote this member key.
	ModRevision int64 `json:"mod_revision"`
}

// ClusterState is the decoded DCS content of one Patroni cluster (scope).
type ClusterState struct {
	Scope string `json:"scope"`
	// Leader is the member holding the leader key; "" when the key is absent
	// (switchover in flight, bootstrap, no candidate, Patroni lost etcd).
	Leader string `json:"leader"`
	// LeaderRevision is the mod revision of the leader key (0 when absent).
	LeaderRevision int64 `json:"leader_revision"`
	// Members by name.
	Members map[string]*Member `json:"members"`
	// SyncLeader and SyncStandbys come from the sync key (empty when absent).
	SyncLeader   string   `json:"sync_leader,omitempty"`
	SyncStandbys []string `json:"sync_standbys,omitempty"`
	// SyncQuorum is the sync key's quorum (Patroni 4.x quorum commit), 0 when absent.
	SyncQuorum int `json:"sync_quorum,omitempty"`
	// LeaderOptime is the best known WAL position of the leader (status key
	// optime, optime/leader, or the leader member's xlog_location).
	LeaderOptime *int64 `json:"leader_optime,omitempty"`
	// StandbyCluster is true when the dynamic config has standby_cluster.
	StandbyCluster bool `json:"standby_cluster,omitempty"`
	// FailsafeMode mirrors config.failsafe_mode.
	FailsafeMode bool `json:"failsafe_mode,omitempty"`
	// Paused is true when the dynamic config has pause (maintenance mode).
	Paused bool `json:"paused,omitempty"`
	// ConfigRead is true when the config key was present and decoded; the
	// flags above and below come from it (false otherwise).
	ConfigRead bool `json:"config_read,omitempty"`
	// ConfigKept is true when the config key is absent or cannot be
	// decoded and the flags are those of its last value that decoded, as
	// the Watcher saw it: Patroni goes on with its last valid dynamic
	// config then (get_global_config), and its leader writes that back. An
	// undecodable key is still in Errors, whose text names the revision
	// kept. (Decode alone, a one-shot read, has no earlier value: the
	// flags are off there and the key error says so.)
	ConfigKept bool `json:"config_kept,omitempty"`
	// SynchronousMode is Patroni's is_synchronous_mode from the dynamic
	// config: synchronous_mode is true (parse_bool: true/on/yes/1) or
	// "quorum" (4.x quorum commit). QuorumCommit is true for "quorum".
	SynchronousMode bool `json:"synchronous_mode,omitempty"`
	QuorumCommit    bool `json:"quorum_commit,omitempty"`
	// Group is the Citus/MPP group number when this state comes from keys
	// <ns>/<scope>/<group>/...; such a state is keyed "<scope>/<group>" and
	// its Scope is "<scope>/<group>" too. Nil for ordinary clusters.
	Group *int `json:"group,omitempty"`
	// Revision is the highest mod revision among this cluster's keys.
	Revision int64 `json:"revision"`
	// Failover is the pending switchover/failover request (nil when none).
	Failover *Failover `json:"failover,omitempty"`
	// Errors lists keys of this cluster whose values could not be decoded.
	Errors []KeyError `json:"errors,omitempty"`
}

// KeyError reports one DCS key whose value could not be decoded.
type KeyError struct {
	Key string `json:"key"`
	Err string `json:"error"`
}

func (e KeyError) Error() string { return e.Key + ": " + e.Err }

// IsSync reports whether member name is a synchronous standby as Patroni
// itself decides it. Both of Patroni's rules must hold:
//
//   - ha.py is_sync_standby: a leader key is present, the sync key's leader
//     matches it, and name is listed in the sync key's sync_standby (both
//     comparisons case-insensitive, as Patroni >= 3.0.3 does, after
//     PostgreSQL's synchronous_standby_names). A sync key left by the old
//     leader after a failover, before the new leader rewrites it, names
//     nobody; so does a sync key without a leader.
//     While the leader key is absent (a switchover's gap, a leader key
//     expired) the sync key is taken as it stands, as Patroni's REST API
//     does for /sync (cluster.sync.matches, no leader check): the roles are
//     kept through such a gap (topology.Merge), and nothing is written in it,
//     so the last sync standbys hold every committed write; a strict rule
//     would empty a service selecting patroni_sync for every switchover.
//   - api.py, which answers HAProxy's /sync and /read-only-sync checks: the
//     member is a replica (not the leader) and the dynamic config enables
//     synchronous_mode. With synchronous_mode "quorum" (4.x) Patroni reports
//     such members as quorum_standby, never sync_standby, so /sync fails on
//     them: not sync here either. Patroni 4.x also ignores synchronous_mode
//     in a standby cluster. When the config key is missing or unreadable,
//     Patroni keeps using its last valid (or local) dynamic config: so do
//     the flags kept then (ConfigKept). With none known (Decode alone, or
//     a config never seen valid), the leader keeps a sync key naming
//     itself only in synchronous mode (it deletes the key when the mode is
//     turned off), so the sync key alone decides.
func (c *ClusterState) IsSync(name string) bool {
	if c == nil || name == "" || name == c.Leader {
		return false
	}
	if (c.ConfigRead || c.ConfigKept) && (!c.SynchronousMode || c.QuorumCommit || c.StandbyCluster) {
		return false
	}
	if c.SyncLeader == "" {
		return false
	}
	if c.Leader == "" {
		if strings.EqualFold(name, c.SyncLeader) {
			return false // the leader of the key is not its own standby
		}
	} else if strings.ToLower(c.SyncLeader) != strings.ToLower(c.Leader) {
		return false
	}
	lname := strings.ToLower(name)
	for _, s := range c.SyncStandbys {
		if strings.ToLower(s) == lname {
			return true
		}
	}
	return false
}

// Snapshot is the complete decoded DCS content of one namespace at one etcd
// revision, as a Watcher sends it. It is never partial: every Snapshot holds
// every cluster found under the namespace. Its maps are not mutated after it
// has been sent, so a receiver may keep it without copying.
type Snapshot struct {
	// Namespace is as given to the watcher, without a trailing slash.
	Namespace string
	// Revision is the etcd revision the snapshot reflects.
	Revision int64
	// Clusters by scope (see Decode).
	Clusters map[string]*ClusterState
	// At is when the watcher built the snapshot.
	At time.Time
}

// WatchStatus is the health of a Watcher's view of etcd.
type WatchStatus struct {
	// Connected is true while the last probe or request to etcd succeeded.
	Connected bool
	// LastContact is when etcd last answered a probe, list or watch.
	LastContact time.Time
	// LastError is the last error seen ("" after a success).
	LastError string
	// Revision is the revision of the last snapshot sent.
	Revision int64
	// Restarts counts watch restarts (re-lists after a lost or failed watch).
	Restarts int
	// Resyncs counts periodic full re-lists.
	Resyncs int
}

// Failover is a switchover or failover request from the failover key.
type Failover struct {
	// Leader is the member to move the primary away from ("" for a failover
	// that names only a candidate).
	Leader string `json:"leader,omitempty"`
	// Member is the requested candidate ("" = any).
	Member string `json:"member,omitempty"`
	// ScheduledAt is the requested time (ISO 8601), "" for now.
	ScheduledAt string `json:"scheduled_at,omitempty"`
}

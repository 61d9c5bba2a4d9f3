// Package patroni decodes Patroni's DCS keys (as stored in etcd v3) into typed
// per-cluster state, and watches etcd for changes to them.
//
// Decoding is pure: it never panics on bad input, and every malformed value is
// reported as a KeyError naming the key, while the rest of the cluster is kept.
package patroni

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
	PendingRestart   bool           `json:"pending_restart,omitempty"`
	Pause            bool           `json:"pause,omitempty"`
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
	// LeaderOptime is the best known WAL position of the leader (status key
	// optime, optime/leader, or the leader member's xlog_location).
	LeaderOptime *int64 `json:"leader_optime,omitempty"`
	// StandbyCluster is true when the dynamic config has standby_cluster.
	StandbyCluster bool `json:"standby_cluster,omitempty"`
	// FailsafeMode mirrors config.failsafe_mode.
	FailsafeMode bool `json:"failsafe_mode,omitempty"`
	// Revision is the highest mod revision among this cluster's keys.
	Revision int64 `json:"revision"`
	// Errors lists keys of this cluster whose values could not be decoded.
	Errors []KeyError `json:"errors,omitempty"`
}

// KeyError reports one DCS key whose value could not be decoded.
type KeyError struct {
	Key string `json:"key"`
	Err string `json:"error"`
}

func (e KeyError) Error() string { return e.Key + ": " + e.Err }

// IsSync reports whether member name is listed as a sync standby.
func (c *ClusterState) IsSync(name string) bool {
	for _, s := range c.SyncStandbys {
		if s == name {
			return true
		}
	}
	return false
}

package patroni

// The decoder before it kept decoded values instead of raw ones (commit
// 5b64261), word for word but for the names: the reference of
// TestDecodeIsRefDecode.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/pgsvc/pgsvc/pkg/haproxyname"
)

// refDecode is decode as it was before assemble (5b64261), kept as the
// reference the new one is compared with: decode is Decode with lastConfig (nil: none), which gives the flags of a
// scope's last config value that decoded: a scope whose config key is
// absent or cannot be decoded takes them, with ConfigKept set.
func refDecode(namespace string, kvs []KV, lastConfig func(scope string) (configFlags, bool)) map[string]*ClusterState {
	prefix := Prefix(namespace)
	sorted := make([]KV, len(kvs))
	copy(sorted, kvs)
	// Sorting makes Errors deterministic whatever order the caller's cache has.
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Key < sorted[j].Key })

	out := map[string]*ClusterState{}
	type pending struct {
		status, optimeLeader *int64
		hasStatus, hasOptime bool
		hasConfig            bool
	}
	extra := map[string]*pending{}

	for _, kv := range sorted {
		scope, sub, group, ok := splitKey(prefix, kv.Key)
		if !ok {
			continue
		}
		cs := out[scope]
		if cs == nil {
			cs = &ClusterState{Scope: scope, Members: map[string]*Member{}, Group: group}
			out[scope] = cs
			extra[scope] = &pending{}
		}
		if kv.ModRevision > cs.Revision {
			cs.Revision = kv.ModRevision
		}
		p := extra[scope]
		fail := func(err error) {
			cs.Errors = append(cs.Errors, KeyError{Key: kv.Key, Err: err.Error()})
		}

		switch {
		case len(sub) == 1 && sub[0] == keyLeader:
			// Patroni takes the value as written (etcd3.py: a Member named
			// leader['value'], matched exactly against the member keys):
			// "a\n" is not member a, whose own Patroni then sees the lock
			// held by someone else and demotes. Trimmed, a stray value would
			// make a write primary that Patroni does not.
			name := string(kv.Value)
			if strings.TrimSpace(name) == "" {
				// "" is no lock holder to Patroni (is_unlocked); a blank
				// name names no member either.
				fail(errors.New("empty leader name"))
				continue
			}
			if strings.TrimSpace(name) != name {
				fail(fmt.Errorf("leader name %s has leading or trailing white space: Patroni matches it against member names as written", haproxyname.QuoteShort(name)))
			}
			cs.Leader = name
			cs.LeaderRevision = kv.ModRevision
		case len(sub) == 2 && sub[0] == keyMembers:
			if sub[1] == "" {
				fail(errors.New("empty member name"))
				continue
			}
			if err := haproxyname.Identifier(sub[1]); err != nil {
				// The name becomes an HAProxy server name: never let it in.
				fail(fmt.Errorf("member skipped: %w", err))
				continue
			}
			m, err := decodeMember(sub[1], kv.Value)
			if err != nil {
				fail(err)
				continue
			}
			m.ModRevision = kv.ModRevision
			if m.Timeline < 0 {
				fail(fmt.Errorf("member %q: negative timeline %d ignored", m.Name, m.Timeline))
				m.Timeline = 0
			}
			if m.XLogLocation != nil && *m.XLogLocation < 0 {
				fail(fmt.Errorf("member %q: negative xlog_location %d ignored", m.Name, *m.XLogLocation))
				m.XLogLocation = nil
			}
			cs.Members[m.Name] = m
		case len(sub) == 1 && sub[0] == keySync:
			if err := decodeSync(cs, kv.Value); err != nil {
				fail(err)
			}
		case len(sub) == 1 && sub[0] == keyConfig:
			p.hasConfig = true
			if err := refDecodeConfig(cs, kv.Value); err != nil {
				// Patroni (ClusterConfig.from_node, get_global_config)
				// goes on with its last valid dynamic config.
				if last, ok := lastGood(lastConfig, scope); ok {
					last.apply(cs)
					fail(fmt.Errorf("%w; keeping the last valid config (revision %d: %s), as Patroni does", err, last.revision, last))
				} else {
					fail(fmt.Errorf("%w; no valid config seen: failsafe_mode, pause, synchronous_mode and standby_cluster read as off", err))
				}
			}
		case len(sub) == 1 && sub[0] == keyStatus:
			p.hasStatus = true
			opt, err := decodeStatus(kv.Value)
			if err != nil {
				fail(err)
				continue
			}
			p.status = opt
		case len(sub) == 2 && sub[0] == keyOptime && sub[1] == keyOptimeLeader:
			p.hasOptime = true
			n, err := parseLSN(strings.TrimSpace(string(kv.Value)))
			if err != nil {
				fail(fmt.Errorf("optime: %w", err))
				continue
			}
			p.optimeLeader = &n
		case len(sub) == 1 && sub[0] == keyFailover:
			f, err := decodeFailover(kv.Value)
			if err != nil {
				fail(err)
				continue
			}
			cs.Failover = f
		case len(sub) == 1 && (sub[0] == keyHistory ||
			sub[0] == keyInitialize || sub[0] == keyFailsafe):
			// Known keys the controller does not need; only their revision counts.
		}
	}

	for scope, cs := range out {
		p := extra[scope]
		if !p.hasConfig {
			// An absent config key is no error, but Patroni goes on with
			// its last valid dynamic config then too (get_global_config:
			// "protect from the case when DCS was wiped out"), and its
			// leader writes that back at its next cycle.
			if last, ok := lastGood(lastConfig, scope); ok {
				last.apply(cs)
			}
		}
		// Patroni prefers status over the legacy optime/leader key.
		switch {
		case p.status != nil:
			cs.LeaderOptime = p.status
		case p.optimeLeader != nil:
			cs.LeaderOptime = p.optimeLeader
		default:
			if l := cs.Members[cs.Leader]; l != nil && l.XLogLocation != nil {
				v := *l.XLogLocation
				cs.LeaderOptime = &v
			}
		}
		for name, m := range cs.Members {
			switch {
			case name == cs.Leader:
				zero := int64(0)
				m.LagBytes = &zero
			case cs.LeaderOptime != nil && m.XLogLocation != nil:
				lag := *cs.LeaderOptime - *m.XLogLocation
				// A replica can report a position past the last optime the
				// leader wrote (status is written once per loop): that is no lag.
				if lag < 0 {
					lag = 0
				}
				m.LagBytes = &lag
			}
		}
	}
	return out
}

func refDecodeConfig(cs *ClusterState, value []byte) error {
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("config: invalid JSON object: %w", err)
	}
	// Patroni's json.loads takes nothing after the value ("Extra data"):
	// such a config is not valid to it, whose flags would be kept.
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("config: invalid JSON object: trailing data")
	}
	if raw == nil {
		return errors.New("config: not a JSON object")
	}
	// Patroni's is_standby_cluster: standby_cluster is a dict with a host,
	// port or restore_command.
	if sc, ok := raw["standby_cluster"].(map[string]any); ok {
		cs.StandbyCluster = truthy(sc["host"]) || truthy(sc["port"]) || truthy(sc["restore_command"])
	}
	cs.FailsafeMode = parseBool(raw["failsafe_mode"])
	cs.Paused = parseBool(raw["pause"])
	// Patroni 4.x global_config: is_quorum_commit_mode is
	// str(synchronous_mode).lower() == 'quorum'; is_synchronous_mode is
	// parse_bool(synchronous_mode) or quorum.
	if s, ok := raw["synchronous_mode"].(string); ok && strings.ToLower(s) == "quorum" {
		cs.QuorumCommit = true
	}
	cs.SynchronousMode = cs.QuorumCommit || parseBool(raw["synchronous_mode"])
	cs.ConfigRead = true
	return nil
}

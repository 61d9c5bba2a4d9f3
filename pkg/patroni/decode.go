package patroni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unique"

	"github.com/pgsvc/pgsvc/pkg/haproxyname"
)

// Key names Patroni uses under /<namespace>/<scope>/.
const (
	keyLeader       = "leader"
	keyMembers      = "members"
	keySync         = "sync"
	keyConfig       = "config"
	keyStatus       = "status"
	keyFailover     = "failover"
	keyHistory      = "history"
	keyInitialize   = "initialize"
	keyFailsafe     = "failsafe"
	keyOptime       = "optime"
	keyOptimeLeader = "leader" // optime/leader
)

// DefaultNamespace is Patroni's default DCS namespace.
const DefaultNamespace = "/service"

// NormalizeNamespace returns ns with one leading slash and no trailing slash
// ("" and "/" give "", the root). Patroni itself joins '/' + namespace + scope
// and squeezes repeated slashes, so "pg", "/pg" and "/pg/" are the same place.
func NormalizeNamespace(ns string) string {
	ns = strings.Trim(ns, "/")
	if ns == "" {
		return ""
	}
	return "/" + ns
}

// Prefix returns the etcd key prefix that holds every key of namespace ns,
// with a trailing slash (so "/pg" does not also match "/pgx/...").
func Prefix(ns string) string {
	return NormalizeNamespace(ns) + "/"
}

// Decode decodes Patroni's DCS keys under namespace into per-cluster state,
// keyed by scope. Keys outside the namespace are ignored; so are keys Patroni
// does not define (they still count towards Revision).
//
// Citus/MPP clusters keep each group under a numeric level,
// <ns>/<scope>/<group>/...: such keys are decoded into their own
// ClusterState keyed (and scoped) "<scope>/<group>", with Group set, so a
// group's leader is never mistaken for the coordinator's or read as a member.
//
// Decode never panics on bad input: a value that cannot be decoded adds a
// KeyError to its cluster's Errors, and a malformed member is left out of
// Members while the rest of the cluster is kept. The result does not share
// memory with kvs.
//
// Decode reads one moment and knows no earlier one: a config key that cannot
// be decoded leaves the dynamic config flags off, and its KeyError says so
// (a Watcher keeps the last valid ones instead, as Patroni does).
func Decode(namespace string, kvs []KV) map[string]*ClusterState {
	return decode(namespace, kvs, nil)
}

// decode is Decode with lastConfig (nil: none), which gives the flags of a
// scope's last config value that decoded: a scope whose config key is
// absent or cannot be decoded takes them, with ConfigKept set.
func decode(namespace string, kvs []KV, lastConfig func(scope string) (configFlags, bool)) map[string]*ClusterState {
	items := make([]item, len(kvs))
	for i, kv := range kvs {
		items[i] = item{key: kv.Key, rev: kv.ModRevision, dec: rawValue(kv.Value)}
	}
	return assemble(Prefix(namespace), items, lastConfig)
}

// item is one key as assemble reads it: its name, its mod revision, and its
// value, either raw (a rawValue) or as decodeValue decoded it already.
type item struct {
	key string
	rev int64
	dec any
}

// rawValue is a value not decoded yet.
type rawValue []byte

// withErrs is decodeValue's result for a key with key errors: the value
// decoded (nil: none) and the errors, in the order found.
type withErrs struct {
	val  any
	errs []string
}

func result(val any, errs []string) any {
	if len(errs) == 0 {
		return val
	}
	return &withErrs{val: val, errs: errs}
}

func unwrap(dec any) (any, []string) {
	if w, ok := dec.(*withErrs); ok {
		return w.val, w.errs
	}
	return dec, nil
}

// syncValue is a sync key that names a leader.
type syncValue struct {
	leader   string
	standbys []string
	quorum   int
}

// decodeValue decodes the value of one key (its path under the scope sub,
// its mod revision rev): what the key brings to its scope's state whatever
// the scope's other keys, and the key errors it causes (but for a config
// that cannot be decoded, whose error names the flags kept: see assemble).
// What it returns is never modified afterwards: assemble copies what a
// state may change.
func decodeValue(sub []string, value []byte, rev int64) any {
	switch {
	case len(sub) == 1 && sub[0] == keyLeader:
		// Patroni takes the value as written (etcd3.py: a Member named
		// leader['value'], matched exactly against the member keys):
		// "a\n" is not member a, whose own Patroni then sees the lock
		// held by someone else and demotes. Trimmed, a stray value would
		// make a write primary that Patroni does not.
		name := string(value)
		if strings.TrimSpace(name) == "" {
			// "" is no lock holder to Patroni (is_unlocked); a blank
			// name names no member either.
			return result(nil, []string{"empty leader name"})
		}
		if strings.TrimSpace(name) != name {
			return result(name, []string{fmt.Sprintf("leader name %s has leading or trailing white space: Patroni matches it against member names as written", haproxyname.QuoteShort(name))})
		}
		return name
	case len(sub) == 2 && sub[0] == keyMembers:
		if sub[1] == "" {
			return result(nil, []string{"empty member name"})
		}
		if err := haproxyname.Identifier(sub[1]); err != nil {
			// The name becomes an HAProxy server name: never let it in.
			return result(nil, []string{fmt.Errorf("member skipped: %w", err).Error()})
		}
		m, err := decodeMember(sub[1], value)
		if err != nil {
			return result(nil, []string{err.Error()})
		}
		var errs []string
		m.ModRevision = rev
		if m.Timeline < 0 {
			errs = append(errs, fmt.Sprintf("member %q: negative timeline %d ignored", m.Name, m.Timeline))
			m.Timeline = 0
		}
		if m.XLogLocation != nil && *m.XLogLocation < 0 {
			errs = append(errs, fmt.Sprintf("member %q: negative xlog_location %d ignored", m.Name, *m.XLogLocation))
			m.XLogLocation = nil
		}
		return result(m, errs)
	case len(sub) == 1 && sub[0] == keySync:
		var cs ClusterState
		if err := decodeSync(&cs, value); err != nil {
			return result(nil, []string{err.Error()})
		}
		if cs.SyncLeader == "" {
			return nil // no leader: the key names nobody
		}
		return &syncValue{leader: cs.SyncLeader, standbys: cs.SyncStandbys, quorum: cs.SyncQuorum}
	case len(sub) == 1 && sub[0] == keyConfig:
		c, err := decodeConfig(value)
		if err != nil {
			return &configValue{err: err.Error()}
		}
		return c
	case len(sub) == 1 && sub[0] == keyStatus:
		opt, err := decodeStatus(value)
		if err != nil {
			return result(nil, []string{err.Error()})
		}
		return opt // nil: no optime
	case len(sub) == 2 && sub[0] == keyOptime && sub[1] == keyOptimeLeader:
		n, err := parseLSN(strings.TrimSpace(string(value)))
		if err != nil {
			return result(nil, []string{fmt.Errorf("optime: %w", err).Error()})
		}
		return &n
	case len(sub) == 1 && sub[0] == keyFailover:
		f, err := decodeFailover(value)
		if err != nil {
			return result(nil, []string{err.Error()})
		}
		return f // nil: none requested
	}
	// Known keys the controller does not need (history, initialize,
	// failsafe) and unknown ones: only their revision counts.
	return nil
}

// assemble decodes the keys of items (prefix is the namespace's) into
// per-scope state: Decode's answer. An item whose value is raw is decoded
// (decodeValue) and its dec set to the result, which assemble may use again
// for the same key and value; a member key's result is then the member of
// the state returned (a later assemble copies it, as a state is never
// modified once returned).
func assemble(prefix string, items []item, lastConfig func(scope string) (configFlags, bool)) map[string]*ClusterState {
	// Sorting makes Errors deterministic whatever order the caller's cache has.
	sort.SliceStable(items, func(i, j int) bool { return items[i].key < items[j].key })

	out := map[string]*ClusterState{}
	type pending struct {
		status, optimeLeader *int64
		hasStatus, hasOptime bool
		hasConfig            bool
	}
	extra := map[string]*pending{}

	for i := range items {
		it := &items[i]
		scope, sub, group, ok := splitKey(prefix, it.key)
		if !ok {
			continue
		}
		cs := out[scope]
		if cs == nil {
			cs = &ClusterState{Scope: scope, Members: map[string]*Member{}, Group: group}
			out[scope] = cs
			extra[scope] = &pending{}
		}
		if it.rev > cs.Revision {
			cs.Revision = it.rev
		}
		p := extra[scope]
		raw, fresh := it.dec.(rawValue)
		if fresh {
			it.dec = decodeValue(sub, raw, it.rev)
		}
		val, errs := unwrap(it.dec)
		for _, e := range errs {
			cs.Errors = append(cs.Errors, KeyError{Key: it.key, Err: e})
		}

		switch {
		case len(sub) == 1 && sub[0] == keyLeader:
			if name, ok := val.(string); ok {
				cs.Leader = name
				cs.LeaderRevision = it.rev
			}
		case len(sub) == 2 && sub[0] == keyMembers:
			m, _ := val.(*Member)
			if m == nil {
				continue
			}
			if !fresh {
				// A member of a state returned earlier: a copy, its lag
				// worked out below again.
				c := *m
				c.LagBytes = nil
				m = &c
				it.dec = result(m, errs)
			}
			cs.Members[m.Name] = m
		case len(sub) == 1 && sub[0] == keySync:
			if s, _ := val.(*syncValue); s != nil {
				cs.SyncLeader = s.leader
				cs.SyncQuorum = s.quorum
				cs.SyncStandbys = append(cs.SyncStandbys, s.standbys...)
			}
		case len(sub) == 1 && sub[0] == keyConfig:
			p.hasConfig = true
			c, _ := val.(*configValue)
			if c == nil {
				continue
			}
			if c.err == "" {
				c.apply(cs)
				continue
			}
			// Patroni (ClusterConfig.from_node, get_global_config)
			// goes on with its last valid dynamic config.
			var msg string
			if last, ok := lastGood(lastConfig, scope); ok {
				last.apply(cs)
				msg = fmt.Sprintf("%s; keeping the last valid config (revision %d: %s), as Patroni does", c.err, last.revision, last)
			} else {
				msg = c.err + "; no valid config seen: failsafe_mode, pause, synchronous_mode and standby_cluster read as off"
			}
			cs.Errors = append(cs.Errors, KeyError{Key: it.key, Err: msg})
		case len(sub) == 1 && sub[0] == keyStatus:
			p.hasStatus = true
			if len(errs) == 0 {
				p.status = copyInt(val.(*int64))
			}
		case len(sub) == 2 && sub[0] == keyOptime && sub[1] == keyOptimeLeader:
			p.hasOptime = true
			if len(errs) == 0 {
				p.optimeLeader = copyInt(val.(*int64))
			}
		case len(sub) == 1 && sub[0] == keyFailover:
			if len(errs) == 0 {
				f, _ := val.(*Failover)
				if f != nil {
					c := *f
					f = &c
				}
				cs.Failover = f
			}
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

// copyInt returns a new copy of *p (nil for nil): what a state holds is its own.
func copyInt(p *int64) *int64 {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// splitKey splits a key under prefix into the scope Decode files it under
// ("<scope>" or "<scope>/<group>"), the rest of its path, and the Citus
// group; ok is false for a key Decode ignores.
func splitKey(prefix, key string) (scope string, sub []string, group *int, ok bool) {
	if !strings.HasPrefix(key, prefix) {
		return "", nil, nil, false
	}
	parts := strings.Split(key[len(prefix):], "/")
	if len(parts) < 2 || parts[0] == "" {
		return "", nil, nil, false
	}
	scope, sub = parts[0], parts[1:]
	if len(sub) >= 2 && isDigits(sub[0]) {
		g, err := strconv.Atoi(sub[0])
		if err == nil {
			group = &g
			scope = scope + "/" + sub[0]
			sub = sub[1:]
		}
	}
	return scope, sub, group, true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// memberJSON is the member value as Patroni writes it. Numbers that Patroni
// always writes as JSON integers are typed; a wrong type makes the member
// malformed rather than silently zero.
type memberJSON struct {
	ConnURL          *string        `json:"conn_url"`
	APIURL           *string        `json:"api_url"`
	State            string         `json:"state"`
	Role             string         `json:"role"`
	Version          string         `json:"version"`
	XLogLocation     *int64         `json:"xlog_location"`
	Timeline         *int64         `json:"timeline"`
	ReplicationState string         `json:"replication_state"`
	Tags             map[string]any `json:"tags"`
	PendingRestart   any            `json:"pending_restart"`
	Pause            any            `json:"pause"`
}

// canonical returns the one copy of s: a member's role, state and version
// are a handful of values across a fleet, and a decoded state is kept
// until its cluster's keys change (a mass failover decodes every member
// 3-4 times; each copy outlived the garbage around it).
func canonical(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

func decodeMember(name string, value []byte) (*Member, error) {
	var mj memberJSON
	trimmed := bytes.TrimSpace(value)
	if bytes.HasPrefix(trimmed, []byte("postgres")) {
		// Legacy value: a bare connection URL with the API URL in
		// application_name (Patroni's Member.from_node still accepts it).
		s := string(trimmed)
		mj.ConnURL = &s
		if u, err := url.Parse(s); err == nil {
			if a := u.Query().Get("application_name"); a != "" {
				mj.APIURL = &a
			}
			u.RawQuery = ""
			c := u.String()
			mj.ConnURL = &c
		}
	} else {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.UseNumber() // tags such as failover_priority keep their exact value
		if err := dec.Decode(&mj); err != nil {
			return nil, fmt.Errorf("member %q: invalid JSON: %w", name, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("member %q: invalid JSON: trailing data", name)
		}
	}
	m := &Member{
		Name:             name,
		RawRole:          canonical(mj.Role),
		Role:             NormalizeRole(mj.Role),
		State:            canonical(mj.State),
		Version:          canonical(mj.Version),
		XLogLocation:     mj.XLogLocation,
		ReplicationState: canonical(mj.ReplicationState),
		Tags:             mj.Tags,
		PendingRestart:   truthy(mj.PendingRestart),
		Pause:            truthy(mj.Pause),
	}
	if mj.Timeline != nil {
		m.Timeline = *mj.Timeline
	}
	if mj.ConnURL == nil || *mj.ConnURL == "" {
		return nil, fmt.Errorf("member %q: conn_url missing", name)
	}
	host, port, err := parseURLHostPort(*mj.ConnURL, 5432, "postgres", "postgresql")
	if err != nil {
		return nil, fmt.Errorf("member %q: conn_url: %w", name, err)
	}
	if err := haproxyname.Address(host); err != nil {
		return nil, fmt.Errorf("member %q: conn_url: %w", name, err)
	}
	m.Host, m.Port = host, port
	if mj.APIURL != nil && *mj.APIURL != "" {
		m.APIURL = *mj.APIURL
		defPort := 80
		if strings.HasPrefix(m.APIURL, "https:") {
			defPort = 443
		}
		h, p, err := parseURLHostPort(m.APIURL, defPort, "http", "https")
		if err != nil {
			return nil, fmt.Errorf("member %q: api_url: %w", name, err)
		}
		if err := haproxyname.Address(h); err != nil {
			return nil, fmt.Errorf("member %q: api_url: %w", name, err)
		}
		m.APIHost, m.APIPort = h, p
		if m.Host == h {
			// One text for both (Host alone would keep the whole
			// conn_url alive, APIHost is part of APIURL, kept anyway).
			m.Host = h
		}
	}
	m.NoLoadBalance = truthy(mj.Tags["noloadbalance"])
	m.NoSync = boolTag(mj.Tags, "nosync", "sync_priority")
	m.NoFailover = boolTag(mj.Tags, "nofailover", "failover_priority")
	return m, nil
}

// NormalizeRole maps Patroni's role spellings onto the Role* constants:
// "master" (<= 3.x) and "primary" (4.x) both become RolePrimary. Other
// values are lowercased and kept, so a role added by a later Patroni is not
// lost.
func NormalizeRole(raw string) string {
	r := strings.ToLower(strings.TrimSpace(raw))
	switch r {
	case "master", "primary":
		return RolePrimary
	case "standby-leader":
		return RoleStandbyLeader
	}
	return r
}

// parseURLHostPort returns host and port of a URL whose scheme is one of
// schemes, defPort when the URL has no port.
func parseURLHostPort(raw string, defPort int, schemes ...string) (string, int, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// (url.Error repeats the whole URL, and its cause may quote a
		// part of it: only the start of the cause is kept.)
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		msg := err.Error()
		if c := haproxyname.Cut(msg, 2*haproxyname.MaxQuoted); c != msg {
			msg = c + "..."
		}
		return "", 0, fmt.Errorf("invalid URL %s: %s", haproxyname.QuoteShort(raw), msg)
	}
	ok := false
	for _, s := range schemes {
		if strings.EqualFold(u.Scheme, s) {
			ok = true
		}
	}
	if !ok {
		return "", 0, fmt.Errorf("invalid URL %s: scheme %s, want %s", haproxyname.QuoteShort(raw), haproxyname.QuoteShort(u.Scheme), strings.Join(schemes, " or "))
	}
	host := u.Hostname()
	if host == "" {
		return "", 0, fmt.Errorf("invalid URL %s: no host", haproxyname.QuoteShort(raw))
	}
	if strings.ContainsAny(host, ",") {
		return "", 0, fmt.Errorf("invalid URL %s: several hosts", haproxyname.QuoteShort(raw))
	}
	port := defPort
	if ps := u.Port(); ps != "" {
		p, err := strconv.Atoi(ps)
		if err != nil || p < 1 || p > 65535 {
			return "", 0, fmt.Errorf("invalid URL %s: bad port %s", haproxyname.QuoteShort(raw), haproxyname.QuoteShort(ps))
		}
		port = p
	} else if _, _, err := net.SplitHostPort(u.Host); err == nil {
		// "host:" with an empty port.
		return "", 0, fmt.Errorf("invalid URL %s: empty port", haproxyname.QuoteShort(raw))
	}
	return host, port, nil
}

// truthy is Python's bool() on a JSON value, which is what Patroni applies to
// the boolean tags (noloadbalance, nosync, nofailover) and member flags: any
// non-empty string is true, including "false" -- Patroni's own REST health
// checks then treat the member the same way, so we must too.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case json.Number:
		f, err := x.Float64()
		return err != nil || f != 0
	case float64:
		return x != 0
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

// boolTag follows Patroni's Tags._bool_tag (tags.py), behind nofailover
// (with failover_priority) and, from 4.1, nosync (with sync_priority): the
// boolean tag wins when present (even when false); otherwise a priority
// <= 0 means the same as the tag set.
func boolTag(tags map[string]any, boolName, priorityName string) bool {
	if v, ok := tags[boolName]; ok && v != nil {
		return truthy(v)
	}
	if p, ok := parseIntLoose(tags[priorityName]); ok {
		return p <= 0
	}
	return false
}

// parseIntLoose accepts a JSON integer or a string holding one.
func parseIntLoose(v any) (int64, bool) {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n, true
		}
		if f, err := x.Float64(); err == nil && f >= math.MinInt64 && f <= math.MaxInt64 {
			return int64(f), true
		}
	case float64:
		return int64(x), true
	case string:
		if n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64); err == nil {
			return n, true
		}
	}
	return 0, false
}

// parseBool is Patroni's parse_bool for dynamic config switches
// (failsafe_mode, pause, synchronous_mode): booleans, and on/off,
// true/false, yes/no, 1/0 in any case. Like Patroni (str(value).lower()) it
// does not trim: " on" is not on.
func parseBool(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case string:
		switch strings.ToLower(x) {
		case "on", "true", "yes", "1":
			return true
		}
		return false
	case json.Number:
		n, err := x.Int64()
		return err == nil && n == 1
	}
	return false
}

func decodeSync(cs *ClusterState, value []byte) error {
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("sync: invalid JSON object: %w", err)
	}
	// Patroni's json.loads takes nothing after the value ("Extra data"): to
	// it such a sync key names nobody (SyncState.from_node: empty).
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("sync: invalid JSON object: trailing data")
	}
	if raw == nil {
		return errors.New("sync: not a JSON object")
	}
	leader, ok := raw["leader"].(string)
	if raw["leader"] != nil && !ok {
		return fmt.Errorf("sync: leader is %T, want string", raw["leader"])
	}
	var standbys string
	switch s := raw["sync_standby"].(type) {
	case nil:
	case string:
		standbys = s
	default:
		return fmt.Errorf("sync: sync_standby is %T, want string or null", raw["sync_standby"])
	}
	quorum := 0
	if q := raw["quorum"]; q != nil {
		n, ok := parseIntLoose(q)
		if !ok || n < 0 || n > math.MaxInt32 {
			return fmt.Errorf("sync: quorum %s is not a non-negative integer", haproxyname.QuoteShort(fmt.Sprint(q)))
		}
		quorum = int(n)
	}
	// Patroni treats a sync key without a leader as empty. It compares the
	// leader as written (lowercased, not trimmed): " a" is not "a".
	if strings.TrimSpace(leader) == "" {
		return nil
	}
	cs.SyncLeader = leader
	cs.SyncQuorum = quorum
	for _, s := range strings.Split(standbys, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cs.SyncStandbys = append(cs.SyncStandbys, s)
		}
	}
	return nil
}

// configValue is a config key's value: the dynamic config flags it sets,
// or why it cannot be decoded (err).
type configValue struct {
	err string
	// standbySet: standby_cluster is a dict (standby tells whether it
	// names a host, port or restore_command); syncMode is
	// parse_bool(synchronous_mode).
	standbySet, standby, failsafe, paused, quorum, syncMode bool
}

func decodeConfig(value []byte) (*configValue, error) {
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("config: invalid JSON object: %w", err)
	}
	// Patroni's json.loads takes nothing after the value ("Extra data"):
	// such a config is not valid to it, whose flags would be kept.
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("config: invalid JSON object: trailing data")
	}
	if raw == nil {
		return nil, errors.New("config: not a JSON object")
	}
	c := &configValue{}
	// Patroni's is_standby_cluster: standby_cluster is a dict with a host,
	// port or restore_command.
	if sc, ok := raw["standby_cluster"].(map[string]any); ok {
		c.standbySet = true
		c.standby = truthy(sc["host"]) || truthy(sc["port"]) || truthy(sc["restore_command"])
	}
	c.failsafe = parseBool(raw["failsafe_mode"])
	c.paused = parseBool(raw["pause"])
	// Patroni 4.x global_config: is_quorum_commit_mode is
	// str(synchronous_mode).lower() == 'quorum'; is_synchronous_mode is
	// parse_bool(synchronous_mode) or quorum.
	if s, ok := raw["synchronous_mode"].(string); ok && strings.ToLower(s) == "quorum" {
		c.quorum = true
	}
	c.syncMode = parseBool(raw["synchronous_mode"])
	return c, nil
}

// apply sets cs's flags from a config value that decoded.
func (c *configValue) apply(cs *ClusterState) {
	if c.standbySet {
		cs.StandbyCluster = c.standby
	}
	cs.FailsafeMode = c.failsafe
	cs.Paused = c.paused
	if c.quorum {
		cs.QuorumCommit = true
	}
	cs.SynchronousMode = cs.QuorumCommit || c.syncMode
	cs.ConfigRead = true
}

// configFlags are the dynamic config flags a ClusterState carries, as
// decoded from the config value of mod revision revision.
type configFlags struct {
	revision                                               int64
	standbyCluster, failsafeMode, paused, syncMode, quorum bool
}

func flagsOf(cs *ClusterState, revision int64) configFlags {
	return configFlags{revision: revision, standbyCluster: cs.StandbyCluster, failsafeMode: cs.FailsafeMode,
		paused: cs.Paused, syncMode: cs.SynchronousMode, quorum: cs.QuorumCommit}
}

// apply sets cs's flags to f, kept from an earlier config value.
func (f configFlags) apply(cs *ClusterState) {
	cs.StandbyCluster, cs.FailsafeMode, cs.Paused = f.standbyCluster, f.failsafeMode, f.paused
	cs.SynchronousMode, cs.QuorumCommit = f.syncMode, f.quorum
	cs.ConfigRead, cs.ConfigKept = false, true
}

func (f configFlags) String() string {
	onOff := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	sync := onOff(f.syncMode)
	if f.quorum {
		sync = "quorum"
	}
	return "failsafe_mode " + onOff(f.failsafeMode) + ", pause " + onOff(f.paused) +
		", synchronous_mode " + sync + ", standby_cluster " + onOff(f.standbyCluster)
}

func lastGood(lastConfig func(string) (configFlags, bool), scope string) (configFlags, bool) {
	if lastConfig == nil {
		return configFlags{}, false
	}
	return lastConfig(scope)
}

// decodeStatus returns the optime of a status value: {"optime":N,...}, or a
// bare integer (legacy). nil when the object has no optime.
func decodeStatus(value []byte) (*int64, error) {
	var raw any
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("status: invalid JSON: %w", err)
	}
	switch x := raw.(type) {
	case json.Number:
		n, err := parseLSN(x.String())
		if err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
		return &n, nil
	case map[string]any:
		o, ok := x["optime"]
		if !ok || o == nil {
			return nil, nil
		}
		var s string
		switch v := o.(type) {
		case json.Number:
			s = v.String()
		case string:
			s = v
		default:
			return nil, fmt.Errorf("status: optime is %T, want integer", o)
		}
		n, err := parseLSN(s)
		if err != nil {
			return nil, fmt.Errorf("status: optime: %w", err)
		}
		return &n, nil
	}
	return nil, fmt.Errorf("status: %T, want object or integer", raw)
}

func parseLSN(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s is not an integer LSN", haproxyname.QuoteShort(s))
	}
	if n < 0 {
		return 0, fmt.Errorf("negative LSN %d", n)
	}
	return n, nil
}

// decodeFailover reads the failover key: {"leader","member","scheduled_at"}
// while a switchover/failover is requested, {} (or empty) once it was used.
func decodeFailover(value []byte) (*Failover, error) {
	if len(bytes.TrimSpace(value)) == 0 {
		return nil, nil
	}
	var raw map[string]any
	if err := json.Unmarshal(value, &raw); err != nil {
		return nil, fmt.Errorf("failover: invalid JSON object: %w", err)
	}
	if raw == nil {
		return nil, errors.New("failover: not a JSON object")
	}
	f := &Failover{}
	for field, dst := range map[string]*string{"leader": &f.Leader, "member": &f.Member, "scheduled_at": &f.ScheduledAt} {
		switch v := raw[field].(type) {
		case nil:
		case string:
			*dst = v
		default:
			return nil, fmt.Errorf("failover: %s is %T, want string", field, raw[field])
		}
	}
	if f.Leader == "" && f.Member == "" {
		return nil, nil
	}
	return f, nil
}

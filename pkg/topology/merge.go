package topology

import (
	"fmt"
	"sort"
	"strings"
	"unique"

	"github.com/pgsvc/pgsvc/pkg/patroni"
)

// MergeOptions tunes Merge.
type MergeOptions struct {
	// IncludeUnknown serves members Patroni reports that the inventory lacks.
	IncludeUnknown bool
	// LastKnownLeader is the leader seen before the leader key vanished; used
	// for roles while the DCS has no leader key, so a switchover in flight or
	// a DCS outage does not tear down the write path.
	LastKnownLeader string
	// Released is the member the caller saw Patroni move the primary away
	// from (Patroni stopping its PostgreSQL, its /primary no longer 200, or
	// its leader key gone): it is Fenced, and write services force it DOWN
	// (no new connections, its sessions cut). The caller decides how long
	// this lasts. Several members are separated by commas (a member that
	// held the leader key for a moment in the same switchover or failover
	// is fenced as the old primary is); member names never contain one
	// (haproxyname.Name).
	Released string
	// Promoted is the member the caller saw take the leader key from
	// another one a moment ago; it is marked Promoted while it holds the
	// key and Patroni reports it running as primary.
	Promoted string
	// PromotedConfirmed says the caller saw Promoted's REST API answer
	// /primary 200 read-write: it is marked Promoted while it holds the key
	// even though its member key does not say running primary yet (Patroni
	// rewrites it up to loop_wait later).
	PromotedConfirmed bool
	// PromotedPending says Promoted holds the leader key but the caller has
	// not seen its PostgreSQL read-write yet (Patroni's /primary answers 200
	// as soon as it holds the leader lock, before pg_ctl promote is done,
	// and HAProxy's checks would bring it UP on that): it is Fenced while
	// it holds the key, so write services keep it DOWN until it can take
	// writes.
	PromotedPending bool
}

// Merge combines a cluster's inventory with Patroni's live state (nil when
// there is none) into the view selectors run over. It is pure: the inputs are
// not modified and the result shares no mutable maps with them except nested
// inventory values, which selectors only read.
//
// Roles, in order:
//   - no live state: the inventory role;
//   - the member holding the leader key (or, while the key is absent, the
//     last known leader): primary;
//   - leader key absent and no last known leader: the inventory role;
//   - any other member Patroni reports: offline if the inventory says
//     offline, else replica;
//   - a member Patroni does not report: its inventory role, except that an
//     inventory primary becomes replica when someone else leads (never two
//     primaries).
//
// Members Patroni reports that the inventory lacks come after the inventory
// members, by name, with Known=false and Served=opts.IncludeUnknown.
func Merge(c *Cluster, st *patroni.ClusterState, opts MergeOptions) *View {
	v := merge(c, st, opts)
	if st == nil {
		return v
	}
	for _, m := range v.Members {
		switch {
		case opts.Promoted == "" || m.Name != opts.Promoted || st.Leader != m.Name || m.Live == nil:
		case opts.PromotedPending:
			m.Fenced, m.FenceRising = true, true
			m.FenceReason = "it holds the leader key but PostgreSQL is not read-write yet (Patroni answers /primary 200 before the promotion is done): no writes until it is"
		case opts.PromotedConfirmed || m.Live.Role == patroni.RolePrimary && m.Live.State == "running":
			m.Promoted = true
		}
		if opts.Released != "" && releasedHas(opts.Released, m.Name) {
			m.Fenced = true
			m.FenceReason = "Patroni is moving the primary away from it (its PostgreSQL stopping, its /primary no longer 200 or its leader key gone): no writes"
		}
	}
	return v
}

func merge(c *Cluster, st *patroni.ClusterState, opts MergeOptions) *View {
	v := &View{Cluster: c}
	if c == nil {
		return v
	}
	if st != nil {
		v.Live = true
		v.Leader = st.Leader
		v.RoleLeader = st.Leader
		if st.Leader == "" {
			v.Leaderless = true
			v.RoleLeader = opts.LastKnownLeader
		}
	}
	known := make(map[string]bool, len(c.Members))
	for _, m := range c.Members {
		known[m.Name] = true
		var live *patroni.Member
		if st != nil {
			live = st.Members[m.Name]
		}
		role, reason := mergeRole(v, m.Name, m.Role, live)
		mv := &MemberView{
			Name:          m.Name,
			Address:       m.Host,
			InventoryRole: m.Role,
			Role:          role,
			RoleReason:    reason,
			Known:         true,
			Served:        true,
			Live:          live,
			Inv:           m,
			PgPort:        m.PgPort,
			PgbouncerPort: m.PgbouncerPort,
			PatroniPort:   m.PatroniPort,
			Weight:        m.Weight,
		}
		mv.Vars = selectorDoc(m.Vars, mv, st)
		mv.Vars["pg_inventory_role"] = m.Role
		v.Members = append(v.Members, mv)
	}
	if st == nil {
		return v
	}
	var unknown []string
	for name := range st.Members {
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	sort.Strings(unknown)
	for _, name := range unknown {
		live := st.Members[name]
		if live == nil {
			continue
		}
		v.Members = append(v.Members, unknownMember(v, st, name, live, opts))
	}
	refuseTwinNames(v)
	return v
}

// BackupTwinSuffix names a member's backup twin in the twin layout:
// "pg-test-1" is the member as a normal server, "pg-test-1.backup" the same
// member as a backup server (see services.Twins).
const BackupTwinSuffix = ".backup"

// refuseTwinNames leaves unserved an unknown member whose name is another
// member's backup twin name (pg-test-1.backup beside pg-test-1): served, the
// two would share one HAProxy server name in the twin layout, and a
// target's layout of every cluster would fail. Only that member of that
// cluster is refused (TwinClash names it; plan warns). Inventory members are
// named <pg_cluster>-<pg_seq> and never end in the suffix.
func refuseTwinNames(v *View) {
	names := make(map[string]bool, len(v.Members))
	for _, m := range v.Members {
		names[m.Name] = true
	}
	for _, m := range v.Members {
		if m.Known || !m.Served {
			continue
		}
		if base, ok := strings.CutSuffix(m.Name, BackupTwinSuffix); ok && names[base] {
			m.Served = false
			m.TwinClash = base
			m.RoleReason += "; not served: its name is the backup twin name of member " + base
		}
	}
}

// mergeRole applies the live-role merge rule to one inventory member.
func mergeRole(v *View, name, invRole string, live *patroni.Member) (role, reason string) {
	switch {
	case !v.Live:
		return invRole, "no live data; inventory role"
	case v.RoleLeader == name && v.Leaderless:
		return "primary", "no leader key in DCS; keeping last known leader " + name
	case v.RoleLeader == name:
		if live != nil && live.Role == patroni.RoleStandbyLeader {
			return "primary", "holds the leader key (standby leader)"
		}
		return "primary", "holds the leader key"
	case v.RoleLeader == "":
		if live == nil {
			return invRole, "no leader key in DCS; not reported by Patroni; inventory role"
		}
		return invRole, "no leader key in DCS; inventory role"
	case live != nil:
		role = "replica"
		if invRole == "offline" {
			role = "offline"
		}
		reason = "Patroni " + describeLiveRole(live)
		if invRole != role {
			reason += "; inventory says " + invRole
		}
		// One copy of each text (a few across a fleet): the plan keeps
		// it, and a mass failover plans every member 3-4 times.
		return role, unique.Make(reason).Value()
	case invRole == "primary":
		return "replica", fmt.Sprintf("not reported by Patroni; inventory primary, but %s %s", v.RoleLeader, leaderVerb(v))
	default:
		return invRole, "not reported by Patroni; inventory role"
	}
}

func leaderVerb(v *View) string {
	if v.Leaderless {
		return "was the last known leader"
	}
	return "holds the leader key"
}

// describeLiveRole names a non-leader's Patroni role for a RoleReason.
func describeLiveRole(live *patroni.Member) string {
	switch r := normRole(live.Role); r {
	case patroni.RoleReplica:
		return "replica"
	case patroni.RolePrimary, patroni.RoleStandbyLeader:
		// Member keys lag the leader key (e.g. a demoted primary that has
		// not rewritten its member key yet): the leader key wins.
		return r + " without the leader key"
	case "":
		return "member with no role"
	default:
		return "member in role " + r
	}
}

// normRole maps Patroni <= 3.x "master" to "primary", in case a caller built
// the state without the decoder's normalisation.
func normRole(r string) string {
	if r == "master" {
		return patroni.RolePrimary
	}
	return r
}

// unknownMember builds the view of a member Patroni reports that the
// inventory lacks, from the cluster variables and the live facts.
func unknownMember(v *View, st *patroni.ClusterState, name string, live *patroni.Member, opts MergeOptions) *MemberView {
	c := v.Cluster
	role, reason := "replica", "not in the inventory; Patroni "+describeLiveRole(live)
	if v.RoleLeader == name {
		role = "primary"
		if v.Leaderless {
			reason = "not in the inventory; no leader key in DCS; keeping last known leader " + name
		} else {
			reason = "not in the inventory; holds the leader key"
		}
	}
	if !opts.IncludeUnknown {
		reason += "; not served (unknown members are excluded)"
	}
	addr := live.Host
	if addr == "" {
		addr = live.APIHost
	}
	mv := &MemberView{
		Name:          name,
		Address:       addr,
		Role:          role,
		RoleReason:    reason,
		Known:         false,
		Served:        opts.IncludeUnknown,
		Live:          live,
		PgPort:        varInt(c.Vars, "pg_port", defaultPgPort),
		PgbouncerPort: varInt(c.Vars, "pgbouncer_port", defaultPgbouncerPort),
		PatroniPort:   varInt(c.Vars, "patroni_port", defaultPatroniPort),
		Weight:        varInt(c.Vars, "pg_weight", defaultWeight),
	}
	if live.Port > 0 {
		mv.PgPort = live.Port
	}
	if live.APIPort > 0 {
		mv.PatroniPort = live.APIPort
	}
	doc := selectorDoc(c.Vars, mv, st)
	// No pg_seq: the member's name is Patroni's, not <pg_cluster>-<pg_seq>.
	delete(doc, "pg_seq")
	doc["inventory_hostname"] = addr
	doc["pg_port"] = float64(mv.PgPort)
	doc["patroni_port"] = float64(mv.PatroniPort)
	doc["pg_inventory_role"] = nil
	mv.Vars = doc
	return mv
}

// varInt reads an integer from JSON-shaped vars, with a default.
func varInt(vars map[string]any, key string, def int) int {
	if f, ok := vars[key].(float64); ok {
		return int(f)
	}
	return def
}

// selectorDoc copies base (already JSON-shaped) and adds the merged role and
// the live facts; see docs/selector-fields.md.
func selectorDoc(base map[string]any, mv *MemberView, st *patroni.ClusterState) map[string]any {
	doc := make(map[string]any, len(base)+14)
	for k, val := range base {
		doc[k] = val
	}
	doc["pg_role"] = mv.Role
	doc["pg_instance"] = mv.Name
	live := mv.Live
	doc["patroni_live"] = live != nil
	doc["patroni_leader"] = st != nil && st.Leader != "" && st.Leader == mv.Name
	doc["patroni_sync"] = st != nil && st.IsSync(mv.Name)
	tags := map[string]any{}
	if live == nil {
		doc["patroni_role"] = nil
		doc["patroni_state"] = nil
		doc["patroni_timeline"] = nil
		doc["patroni_lag"] = nil
		doc["patroni_tags"] = tags
		doc["patroni_noloadbalance"] = false
		doc["patroni_nofailover"] = false
		return doc
	}
	doc["patroni_role"] = nullIfEmpty(normRole(live.Role))
	doc["patroni_state"] = nullIfEmpty(live.State)
	doc["patroni_timeline"] = nil
	if live.Timeline > 0 {
		doc["patroni_timeline"] = float64(live.Timeline)
	}
	doc["patroni_lag"] = nil
	if live.LagBytes != nil {
		doc["patroni_lag"] = float64(*live.LagBytes)
	}
	if len(live.Tags) > 0 {
		tags = normalizeMap(live.Tags)
	}
	doc["patroni_tags"] = tags
	// The flags also live in tags; honour either in case the state was
	// built without the decoder lifting them out.
	doc["patroni_noloadbalance"] = live.NoLoadBalance || tags["noloadbalance"] == true
	doc["patroni_nofailover"] = live.NoFailover || tags["nofailover"] == true
	return doc
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// releasedHas reports whether name is one of the comma-separated members
// of released (MergeOptions.Released).
func releasedHas(released, name string) bool {
	for released != "" {
		m, rest, _ := strings.Cut(released, ",")
		if m == name {
			return true
		}
		released = rest
	}
	return false
}

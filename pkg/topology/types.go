// Package topology loads a Pigsty (Ansible YAML) inventory into typed clusters
// and merges live Patroni state into them. Everything here is pure.
package topology

import (
	"github.com/jmespath/go-jmespath"

	"github.com/pgsvc/pgsvc/pkg/patroni"
)

// Inventory is a loaded, validated Pigsty inventory.
type Inventory struct {
	// File is the path the inventory was read from (used in error messages).
	File string
	// Clusters in the order the inventory lists them.
	Clusters []*Cluster
	// PigstyVersion is V3 or V4, the version rendered for (see
	// ParseOptions); VersionReason says why in words.
	PigstyVersion string
	VersionReason string
	// Hosts are every host of the inventory in the order they first appear
	// (Ansible's hostvars order); see also GroupHosts.
	Hosts  []string
	groups map[string]groupInfo
}

// Cluster is one PostgreSQL cluster of the inventory: every host whose merged
// pg_cluster is Name, whatever groups list them.
type Cluster struct {
	Name string
	// Namespace is pg_namespace ("/pg" by default), without a trailing slash.
	Namespace string
	// Mode is pg_mode ("pgsql" when unset).
	Mode string
	// Citus is true for pg_mode citus: Patroni runs the cluster as scope
	// Shard (pg_shard), Citus group Group (pg_group), so its keys are
	// <namespace>/<pg_shard>/<pg_group>/...; Name (pg_cluster) still names
	// the members and the services.
	Citus bool
	Shard string
	Group int
	// Scope is Patroni's scope: Name, or Shard for Citus.
	Scope string
	// DCSKey is the key of this cluster's state in a decoded DCS snapshot
	// (patroni.Decode): Name, or "<pg_shard>/<pg_group>" for Citus.
	DCSKey string
	// DefaultServer is the default-server line of services without
	// options: v3's fixed timing, or v4's from pg_rto and pg_rto_plan.
	DefaultServer string
	// PatroniSSL is patroni_ssl_enabled: Patroni's REST API speaks https,
	// checked against PatroniCAFile (Pigsty's /pg/cert/ca.crt); "" when off.
	PatroniSSL    bool
	PatroniCAFile string
	// ServiceProvider is pg_service_provider ("" = every member's HAProxy).
	ServiceProvider string
	// Vars are the cluster-level merged variables: defaults < all.vars < group vars.
	// Values are JSON-shaped (numbers float64, maps with string keys).
	Vars map[string]any
	// Members in inventory order.
	Members []*Member
	// Services are pg_default_services + pg_services, validated, selectors compiled.
	Services []*ServiceDef
	// Warnings are accepted oddities found at load (see validate.go).
	Warnings []string
}

// Member is one instance of a cluster as the inventory declares it.
type Member struct {
	// Name is <pg_cluster>-<pg_seq>: the Patroni member name and HAProxy server name.
	Name string
	// Host is the inventory host key (inventory_hostname), the instance address.
	Host string
	Seq  int
	// Role is the inventory pg_role: primary, replica or offline.
	Role string
	// Weight is pg_weight (0-255, default 100).
	Weight        int
	PgPort        int
	PgbouncerPort int
	PatroniPort   int
	// Vars are all merged variables of this host: defaults < all.vars < group vars < host vars,
	// plus inventory_hostname. Values are JSON-shaped (numbers float64, maps
	// with string keys) so selectors can use them as they are.
	Vars map[string]any
}

// ServiceDef is one entry of pg_default_services / pg_services, validated.
type ServiceDef struct {
	Name string
	// FullName is <pg_cluster>-<name>, the HAProxy section name, set at
	// load (one copy for every plan of the cluster); "" in definitions
	// built by hand (services.Build then makes it).
	FullName string
	Port     int
	IP       string // default "*"
	Selector string
	Backup   string // "" when absent
	Dest     string // default|postgres|pgbouncer|<port>, as written ("default" when absent)
	Check    string // default "/"
	Maxconn  int    // default 5000
	Balance  string // default roundrobin
	Options  string // replaces the whole default-server line when set
	// Compiled selectors (compiled once at load time).
	SelectorExpr *jmespath.JMESPath
	BackupExpr   *jmespath.JMESPath // nil when Backup is ""
	// Source says where the definition came from, e.g. "pg_services[0]",
	// and Line its line in the inventory (0 for built-in defaults), for
	// messages about the service.
	Source string
	Line   int
}

// View is one cluster with live Patroni state merged into the inventory.
type View struct {
	Cluster *Cluster
	// Leader is the live leader ("" when Patroni reports none or there is no live data).
	Leader string
	// Live is true when Patroni state for this cluster was available.
	Live bool
	// Leaderless is true when live data exists but has no leader key; the
	// inventory/last-known roles were kept.
	Leaderless bool
	// RoleLeader is the member the merge made primary: Leader, or the last
	// known leader (MergeOptions.LastKnownLeader) when Leaderless; "" when
	// roles came from the inventory.
	RoleLeader string
	// Members: inventory members in inventory order, then members Patroni
	// reports that the inventory lacks (Known=false), by name.
	Members []*MemberView
}

// MemberView is one member after the merge: what selectors see.
type MemberView struct {
	Name    string
	Address string
	// InventoryRole is pg_role as the inventory says; Role the merged role.
	InventoryRole string
	Role          string
	// RoleReason says in words why Role is what it is.
	RoleReason string
	// Known is false for a member Patroni reports that the inventory lacks.
	Known bool
	// Served is false when the member must not appear in any service
	// (unknown members, unless the include-unknown option is set, or one
	// named like another member's backup twin: see TwinClash).
	Served bool
	// TwinClash, for an unknown member left unserved because its name is
	// the backup twin name of another member, names that member.
	TwinClash string
	// Live is Patroni's view of the member (nil when Patroni does not report it).
	Live *patroni.Member
	// Inventory member (nil for unknown members).
	Inv *Member
	// Vars is the selector document for this member: all merged inventory
	// variables with pg_role replaced by the merged role, plus the live facts
	// (documented in docs/selector-fields.md). Numbers are float64, as
	// JMESPath expects.
	Vars map[string]any
	// Ports and weight the member is served with: the inventory's values, or
	// for an unknown member the live conn_url/api_url ports and the cluster
	// defaults.
	PgPort        int
	PgbouncerPort int
	PatroniPort   int
	Weight        int
	// Fenced is true for the member that released the leader key and has
	// not led again since (Patroni is demoting it): write services force it
	// DOWN at runtime and cut its sessions. FenceReason says so in words.
	Fenced      bool
	FenceReason string
	// FenceRising is set with Fenced on a new leader that is not read-write
	// yet: HAProxy's checks pass on it (Patroni's early /primary 200), so
	// the fence must be re-applied even while HAProxy still has it DOWN.
	FenceRising bool
	// Promoted is true for the member that just took the leader key (see
	// MergeOptions.Promoted) while Patroni reports it running as primary.
	Promoted bool
}

// Package services evaluates service definitions (JMESPath selectors) over a
// merged cluster view and produces the desired HAProxy services. Pure.
package services

// Service is one desired HAProxy service: a frontend+backend pair named Name.
type Service struct {
	Cluster string `json:"-"`
	// Name is <pg_cluster>-<service>, the HAProxy section name.
	Name string `json:"name"`
	// Service is the short name from the definition (primary, replica, ...).
	Service string `json:"service"`
	IP      string `json:"ip"`
	Port    int    `json:"port"`
	Check   string `json:"check"`
	// Dest is the resolved destination: "pgbouncer", "postgres" or a port number as text.
	Dest     string `json:"dest"`
	DestPort int    `json:"dest_port"`
	Balance  string `json:"balance"`
	Maxconn  int    `json:"maxconn"`
	// DefaultServer is the whole default-server line (options), without the keyword.
	DefaultServer string   `json:"default_server"`
	Servers       []Server `json:"servers"`
	// Layout is "" for Pigsty's layout (servers are the members the
	// selectors chose) or LayoutTwins (see Twins).
	Layout string `json:"layout,omitempty"`
	// RoleDependent is set by Build when the definition has a backup
	// selector or a selector other than `[]`: live roles can then move a
	// member between normal, backup and absent.
	RoleDependent bool `json:"-"`
	// BackupIsPrimary is set by Build on a role-dependent service whose
	// selector is `[]` and whose backup selector is Pigsty's replica one
	// (`[? pg_role == `+"`primary`"+` || pg_role == `+"`offline`"+` ]`, or without
	// the offline term) in a cluster whose served members are none of them
	// offline in the inventory: a member is then its backup server exactly
	// while it is the primary, whatever the roles do (an inventory fact:
	// the merged role is offline only for an inventory offline member).
	// Twins then lets the backup twins track the primary service's
	// servers (TrackSources).
	BackupIsPrimary bool `json:"-"`
	// BackupIsReplicas is set by Build on a role-dependent service whose
	// selector and backup selector are Pigsty's offline ones
	// (`[? pg_role == `+"`offline`"+` || pg_offline_query ]`, backup
	// `[? pg_role == `+"`replica`"+` && !pg_offline_query]`) in a cluster whose
	// served members are none of them offline (in the inventory or merged)
	// nor have pg_offline_query set: it then selects no member, and a
	// member is its backup server exactly while it is no primary, whatever
	// the roles do (inventory facts). Twins then lets its backup twins track
	// the replica service's normal twins (TrackSources).
	BackupIsReplicas bool `json:"-"`
	// BackupAddrs are the addresses of the members the backup selector
	// returned, in its order, when that order is not the backup servers'
	// (Servers lists the selected ones in the selector's order): Pigsty's
	// "# service backups" comment lists them in the backup selector's
	// order. nil when the backup servers' order is that order (nearly
	// always: filters keep the members' order).
	BackupAddrs []string `json:"-"`
	// Candidates are every served member as a plain (non-backup) server, in
	// member order, set by Build: what Twins needs to keep a fixed set of
	// servers whatever the roles.
	Candidates []Server `json:"-"`
}

// Server is one server line of a backend.
type Server struct {
	Name      string `json:"name"`
	Address   string `json:"address"`
	Port      int    `json:"port"`
	CheckPort int    `json:"check_port"`
	// CAFile is what CheckSSL checks Patroni's certificate against.
	CAFile string `json:"ca_file,omitempty"`
	// Track is "backend/server" when the server has no check of its own
	// and takes the state of that server (HAProxy's `track`): in the twin
	// layout, a write service with the same members and check as an
	// earlier one of its cluster (Pigsty's default beside its primary; see
	// Track). "" otherwise.
	Track  string `json:"track,omitempty"`
	Weight int    `json:"weight"`
	// CheckSSL checks Patroni over TLS against CAFile (patroni_ssl_enabled:
	// "check-ssl ca-file /pg/cert/ca.crt" before "check port").
	//
	// The bools come in two runs (after Weight, after Reason) so that a
	// Server is 152 bytes, not 168: a 1,000-cluster fleet keeps ~70,000
	// of them (plans, twin layouts, a driver's read). JSON follows the
	// field order: ca_file now comes before weight, check_ssl after it
	// (both omitempty); a decoder reads them by name.
	CheckSSL bool `json:"check_ssl,omitempty"`
	Backup   bool `json:"backup"`
	// ForceUp asks the target to mark the server UP at once if its health
	// check still has it DOWN: in a write service, the member that just took
	// the leader key and that Patroni reports running as primary. Saves the
	// `rise` checks after `downinter` of a failover; never set otherwise.
	ForceUp bool `json:"force_up,omitempty"`
	// ForceDown asks the target to mark the server DOWN at once (runtime
	// health, never the file) and cut its established sessions: in a write
	// service, the old primary from the moment Patroni stops its PostgreSQL
	// (the write fence). Re-asserted while set; once it is no longer set
	// the server is left to HAProxy's checks. Never set otherwise.
	ForceDown bool `json:"force_down,omitempty"`
	// HoldDown (with ForceDown) asks the target to force it DOWN at every
	// apply even while HAProxy has it DOWN: its checks pass (a new leader
	// whose PostgreSQL is not read-write yet) and a forced DOWN resets their
	// rise count. Targets never set it on what they read.
	HoldDown bool `json:"hold_down,omitempty"`
	// Writable is set, in a write service, on the server of the member
	// that holds the leader key, is not fenced and that Patroni reports
	// running as primary (read-write). Targets that hold a new leader with
	// an admin state (the Data Plane API driver's drain) lift one they
	// find on it, even one a crashed controller left behind.
	Writable bool `json:"-"`
	// Disabled marks an inactive twin (LayoutTwins): `disabled` in the
	// file, admin state drain or maint at runtime (Service.InactiveState).
	Disabled bool `json:"disabled,omitempty"`
	// Member is the cluster member a twin stands for ("" outside twins).
	Member string `json:"member,omitempty"`
	// Admin is the runtime admin state a target read back: "ready",
	// "drain" or "maint" ("" = not read). Never set in desired.
	Admin string `json:"-"`
	// Reason says why the server is in the service and why it is (not) backup.
	Reason string `json:"reason"`
	// Unconfirmed is set on Build's candidates when the DCS has live data
	// for the cluster but does not report this member running: Twins never
	// activates its twins (`ready` is UP at once, before any check), and
	// keeps the flag on both (inactive) twins, so that a target can send
	// their deactivations last in services that take no writes: every
	// role check goes through the member's Patroni REST API, which passes
	// none while its PostgreSQL is not running (and a crashed member
	// answers nothing), so HAProxy's own checks have such a twin DOWN and
	// its deactivation moves no traffic.
	Unconfirmed bool `json:"-"`
	// Primary is set on Build's candidates of the member whose merged role
	// is primary (the leader key's holder; the last known leader while the
	// key is absent; the inventory primary without live data). In a write
	// service (WriteCheck) Twins activates no twin of any other member:
	// HAProxy's check passes on the primary only, so Pigsty's layout never
	// routes there, while an activation (`ready`) is UP at once, before any
	// check (a replica whose PostgreSQL comes back in a service with every
	// member and the primary as backup would take writes until its checks
	// fail).
	Primary bool `json:"-"`
	// Down is set by targets on servers they read back: the live health
	// check has the server DOWN (not in maintenance). Never set in desired.
	Down bool `json:"-"`
	// Selected is true when the member matched the service's selector; a
	// backup server with Selected=false was added by the backup selector only.
	Selected bool `json:"selected"`
}

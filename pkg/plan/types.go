// Package plan computes the desired services of every cluster from an
// inventory and the live Patroni state: the pure heart of pgsvc.
package plan

import "github.com/pgsvc/pgsvc/pkg/services"

// Plan is the desired state of every cluster. Its JSON form is a public
// interface (controller plan --format json, GET /status).
type Plan struct {
	Clusters []Cluster `json:"clusters"`
}

// Cluster is one cluster's merged view and desired services.
type Cluster struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Scope and CitusGroup are Patroni's scope and Citus group of a Citus
	// cluster (pg_mode citus: pg_shard and pg_group); omitted otherwise.
	Scope      string `json:"scope,omitempty"`
	CitusGroup *int   `json:"citus_group,omitempty"`
	// DCSKey is the cluster's key in a decoded DCS snapshot (see
	// topology.Cluster.DCSKey).
	DCSKey string `json:"-"`
	// Leader is the live leader, "" when unknown.
	Leader string `json:"leader"`
	// Live is true when Patroni state was available for this cluster.
	Live bool `json:"live"`
	// Leaderless is true when Patroni reports no leader key (roles kept).
	Leaderless bool               `json:"leaderless,omitempty"`
	Members    []Member           `json:"members"`
	Services   []services.Service `json:"services"`
	// Warnings are things an operator should know (unknown members, DCS key errors...).
	Warnings []string `json:"warnings,omitempty"`
}

// Member is one member of a cluster after the merge.
type Member struct {
	Name          string `json:"name"`
	Address       string `json:"address"`
	InventoryRole string `json:"inventory_role"`
	Role          string `json:"role"`
	RoleReason    string `json:"role_reason"`
	Known         bool   `json:"known"`
	Served        bool   `json:"served"`
	// Live facts (empty when Patroni does not report the member).
	PatroniRole string         `json:"patroni_role,omitempty"`
	State       string         `json:"state,omitempty"`
	Timeline    int64          `json:"timeline,omitempty"`
	LagBytes    *int64         `json:"lag_bytes,omitempty"`
	SyncStandby bool           `json:"sync_standby,omitempty"`
	Tags        map[string]any `json:"tags,omitempty"`
}

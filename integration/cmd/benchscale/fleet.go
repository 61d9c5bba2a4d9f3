package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgsvc/pgsvc/pkg/patroni"
	"github.com/pgsvc/pgsvc/pkg/plan"
	"github.com/pgsvc/pgsvc/pkg/services"
	"github.com/pgsvc/pgsvc/pkg/topology"
)

// fleet is N Pigsty clusters of 3 members on loopback: cluster i has its
// services on one address and its members on the next three; nobody
// listens on the members' addresses, so HAProxy's checks fail (connection
// refused), as in the measurements of issue 9.
type fleet struct {
	n     int
	octet int // second octet of every address: 127.<octet>.x.y
	// leader is each cluster's current leader seq (1..3) as written to etcd.
	leader []int
	// timeline is each cluster's Patroni timeline.
	timeline []int
	// gone is the seq of a member whose key vanished (a crashed member), 0 if none.
	gone  []int
	lease clientv3.LeaseID
}

func newFleet(n, octet int) *fleet {
	f := &fleet{n: n, octet: octet, leader: make([]int, n), timeline: make([]int, n), gone: make([]int, n)}
	for i := range f.leader {
		f.leader[i], f.timeline[i] = 1, 1
	}
	return f
}

// clusterName is the Pigsty cluster (and Patroni scope) name of cluster i.
func (f *fleet) clusterName(i int) string { return fmt.Sprintf("pg-b%04d", i) }

// memberName is Pigsty's <pg_cluster>-<pg_seq>, which Patroni uses as its name.
func (f *fleet) memberName(i, seq int) string { return fmt.Sprintf("%s-%d", f.clusterName(i), seq) }

// addr is the loopback address of cluster i's services (k=0) or member k
// (1..3): never .0 or .255, all within 127.<octet>.0.0/16 for up to 15,000
// clusters.
func (f *fleet) addr(i, k int) string {
	idx := i*4 + k
	return fmt.Sprintf("127.%d.%d.%d", f.octet, idx/250, idx%250+1)
}

// Service ports (Pigsty's defaults) and the member ports behind them.
const (
	portPrimary, portReplica, portDefault, portOffline = 5433, 5434, 5436, 5438
)

// benchOptions are Pigsty's default-server options (services.
// DefaultServerOptions) with `fall 60` instead of `fall 3`. Nobody answers
// the Patroni checks of most members here, so a new primary the controller
// forces UP would go DOWN again after three failed checks (~3-5 s), and
// the replica service's backup twins that track it with it: the benchmark
// would measure the fleet's silence, not the controller. In a real fleet
// the new primary passes its checks and stays UP; `fall 60` keeps it UP
// for a minute, past every read of a phase. Nothing else changes: rise,
// the intervals, and what a forced DOWN (the fence, a hold) does.
const benchOptions = "inter 3s fastinter 1s downinter 5s rise 3 fall 60 on-marked-down shutdown-sessions slowstart 30s maxconn 3000 maxqueue 128 weight 100"

// inventory is the Pigsty inventory: Pigsty's four default services per
// cluster, each bound on the cluster's own service address (one HAProxy
// carries every cluster, so *:5433 cannot be shared), inventory roles as
// Patroni starts (seq 1 primary), with benchOptions.
func (f *fleet) inventory() string {
	var b strings.Builder
	b.WriteString("# Pigsty inventory written by benchscale: N clusters x 3 members on loopback.\nall:\n  children:\n")
	for i := 0; i < f.n; i++ {
		ip := f.addr(i, 0)
		fmt.Fprintf(&b, "    %s:\n      hosts:\n", f.clusterName(i))
		for seq := 1; seq <= 3; seq++ {
			role := "replica"
			if seq == 1 {
				role = "primary"
			}
			fmt.Fprintf(&b, "        %s: { pg_seq: %d, pg_role: %s }\n", f.addr(i, seq), seq, role)
		}
		fmt.Fprintf(&b, "      vars:\n        pg_cluster: %s\n        pg_default_services:\n", f.clusterName(i))
		fmt.Fprintf(&b, "          - { name: primary, port: %d, ip: %q, options: %q, dest: default, check: /primary, selector: \"[]\" }\n", portPrimary, ip, benchOptions)
		fmt.Fprintf(&b, "          - { name: replica, port: %d, ip: %q, options: %q, dest: default, check: /read-only, selector: \"[]\", backup: \"[? pg_role == `primary` || pg_role == `offline` ]\" }\n", portReplica, ip, benchOptions)
		fmt.Fprintf(&b, "          - { name: default, port: %d, ip: %q, options: %q, dest: postgres, check: /primary, selector: \"[]\" }\n", portDefault, ip, benchOptions)
		fmt.Fprintf(&b, "          - { name: offline, port: %d, ip: %q, options: %q, dest: postgres, check: /replica, selector: \"[? pg_role == `offline` || pg_offline_query ]\", backup: \"[? pg_role == `replica` && !pg_offline_query]\" }\n", portOffline, ip, benchOptions)
	}
	b.WriteString("  vars:\n    pg_namespace: /pg\n    pg_default_service_dest: pgbouncer\n")
	return b.String()
}

// Key and value shapes are those of the real Patroni 3.0.2 DCS dumps in
// ../shared/fixtures/patroni-3.0.2 (dcs-initial.json, dcs-after-*.json).
const patroniConfig = `{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,"postgresql":{"use_pg_rewind":true,"use_slots":true,"parameters":{"max_connections":100,"wal_level":"replica","hot_standby":"on","wal_log_hints":"on","max_wal_senders":10,"max_replication_slots":10,"wal_keep_size":"256MB"}}}`

func (f *fleet) key(i int, rest string) string { return "/pg/" + f.clusterName(i) + "/" + rest }

// memberValue is members/<name> as Patroni 3.0.2 writes it.
func (f *fleet) memberValue(i, seq int, role string) string {
	a := f.addr(i, seq)
	return fmt.Sprintf(`{"conn_url":"postgres://%s:5432/postgres","api_url":"http://%s:8008/patroni","state":"running","role":%q,"version":"3.0.2","xlog_location":%d,"timeline":%d}`,
		a, a, role, f.optime(i), f.timeline[i])
}

// writer commits Patroni key changes in etcd transactions of at most
// maxOps operations (etcd's default --max-txn-ops is 128), never splitting
// a group: a group is what Patroni changes in one revision (a lease expiry
// deletes a leader key and its member key at once).
type writer struct{ cli *clientv3.Client }

const maxOps = 128

// commit writes the groups in order and returns when the last transaction
// was acknowledged.
func (w *writer) commit(ctx context.Context, groups [][]clientv3.Op) (time.Time, error) {
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, err := w.cli.Txn(cctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("etcd txn: %w", err)
		}
		ops = ops[:0]
		return nil
	}
	for _, g := range groups {
		if len(ops)+len(g) > maxOps {
			if err := flush(); err != nil {
				return time.Time{}, err
			}
		}
		ops = append(ops, g...)
	}
	if err := flush(); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}

// put and del build operations; leader and member keys ride on one long
// lease as Patroni's do (nothing here reads leases: the lease keeps the
// keys' shape).
func (f *fleet) put(k, v string, leased bool) clientv3.Op {
	if leased && f.lease != 0 {
		return clientv3.OpPut(k, v, clientv3.WithLease(f.lease))
	}
	return clientv3.OpPut(k, v)
}

func (f *fleet) del(k string) clientv3.Op { return clientv3.OpDelete(k) }

func (f *fleet) optime(i int) int { return 71531312 + f.timeline[i]*1000000 }

// initial is what a running 3-member Patroni cluster has in etcd, one
// group per cluster.
func (f *fleet) initial() [][]clientv3.Op {
	groups := make([][]clientv3.Op, 0, f.n)
	for i := 0; i < f.n; i++ {
		g := []clientv3.Op{
			f.put(f.key(i, "config"), patroniConfig, false),
			f.put(f.key(i, "initialize"), fmt.Sprintf("77124583769254%05d", i), false),
			f.put(f.key(i, "leader"), f.memberName(i, f.leader[i]), true),
		}
		for seq := 1; seq <= 3; seq++ {
			g = append(g, f.put(f.key(i, "members/"+f.memberName(i, seq)), f.memberValue(i, seq, f.roleOf(i, seq)), true))
		}
		g = append(g, f.put(f.key(i, "status"), fmt.Sprintf(`{"optime":%d}`, f.optime(i)), false))
		groups = append(groups, g)
	}
	return groups
}

func (f *fleet) roleOf(i, seq int) string {
	if seq == f.leader[i] {
		return "master"
	}
	return "replica"
}

// switchover moves the model of cluster i to its next member and returns
// Patroni's switchover, step by step in Patroni's order: the failover key;
// the old leader releases the leader key and marks itself demoted (its
// member key stays: the controller's write fence applies); the candidate
// takes the key and promotes (step leaderStep); the failover key is reset
// and the old leader rejoins as a replica.
func (f *fleet) switchover(i int) (steps [][]clientv3.Op, leaderStep int) {
	old := f.leader[i]
	next := old%3 + 1
	steps = append(steps,
		[]clientv3.Op{f.put(f.key(i, "failover"), fmt.Sprintf(`{"leader":%q,"member":%q}`, f.memberName(i, old), f.memberName(i, next)), false)},
		[]clientv3.Op{f.del(f.key(i, "leader")), f.put(f.key(i, "members/"+f.memberName(i, old)), f.memberValue(i, old, "demoted"), true)})
	f.leader[i] = next
	f.timeline[i]++
	steps = append(steps, []clientv3.Op{f.put(f.key(i, "leader"), f.memberName(i, next), true),
		f.put(f.key(i, "members/"+f.memberName(i, next)), f.memberValue(i, next, "master"), true)})
	last := []clientv3.Op{f.put(f.key(i, "failover"), "{}", false)}
	for seq := 1; seq <= 3; seq++ {
		if seq != next {
			last = append(last, f.put(f.key(i, "members/"+f.memberName(i, seq)), f.memberValue(i, seq, "replica"), true))
		}
	}
	last = append(last, f.put(f.key(i, "status"), fmt.Sprintf(`{"optime":%d}`, f.optime(i)), false))
	steps = append(steps, last)
	return steps, 2
}

// massFailover moves the model of every cluster to its next member as a
// crash failover shows in Patroni's keys: the leader's lease expires (its
// leader key and member key vanish in one revision, one group per
// cluster: expire), then the next member takes the leader key and
// promotes (promote). The dead member stays gone.
func (f *fleet) massFailover() (expire, promote [][]clientv3.Op) {
	for i := 0; i < f.n; i++ {
		dead := f.leader[i]
		expire = append(expire, []clientv3.Op{f.del(f.key(i, "leader")), f.del(f.key(i, "members/"+f.memberName(i, dead)))})
		next := dead%3 + 1
		f.gone[i] = dead
		f.leader[i] = next
		f.timeline[i]++
		promote = append(promote, []clientv3.Op{
			f.put(f.key(i, "leader"), f.memberName(i, next), true),
			f.put(f.key(i, "members/"+f.memberName(i, next)), f.memberValue(i, next, "master"), true),
			f.put(f.key(i, "history"), fmt.Sprintf(`[[%d,%d,"no recovery target specified","%s","%s"]]`,
				f.timeline[i]-1, f.optime(i), time.Now().UTC().Format(time.RFC3339Nano), f.memberName(i, next)), false),
		})
	}
	return expire, promote
}

// kvs is the model's Patroni keys (the ones the controller reads) of the
// clusters in only (all when nil), as the watcher would decode them.
func (f *fleet) kvs(only map[int]bool) []patroni.KV {
	var out []patroni.KV
	for i := 0; i < f.n; i++ {
		if only != nil && !only[i] {
			continue
		}
		out = append(out, patroni.KV{Key: f.key(i, "config"), Value: []byte(patroniConfig)},
			patroni.KV{Key: f.key(i, "leader"), Value: []byte(f.memberName(i, f.leader[i]))})
		for seq := 1; seq <= 3; seq++ {
			if seq != f.gone[i] {
				out = append(out, patroni.KV{Key: f.key(i, "members/"+f.memberName(i, seq)), Value: []byte(f.memberValue(i, seq, f.roleOf(i, seq)))})
			}
		}
	}
	return out
}

// modelWanted is what the running HAProxy must show once the controller
// applied the model's state, for the clusters in only (all when nil).
func (f *fleet) modelWanted(inv *topology.Inventory, only map[int]bool) (wanted, error) {
	p, err := plan.Compute(inv, patroni.Decode("/pg", f.kvs(only)), plan.Options{})
	if err != nil {
		return nil, err
	}
	var names map[string]bool
	if only != nil {
		names = map[string]bool{}
		for i := range only {
			names[f.clusterName(i)] = true
		}
	}
	return wantedOf(p, names), nil
}

// trackingTwins lays the fleet's plan out in twins (services.Twins) and
// returns its tracking twins that take traffic by health (tr,
// backend/server: those tracking a server that is no twin), their backends
// (bs), and every tracking twin (all).
func (f *fleet) trackingTwins(inv *topology.Inventory) (tr, bs, all map[string]bool, err error) {
	p, err := plan.Compute(inv, patroni.Decode("/pg", f.kvs(nil)), plan.Options{})
	if err != nil {
		return nil, nil, nil, err
	}
	tr, bs, all = map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, c := range p.Clusters {
		tw, err := services.Twins(c.Services)
		if err != nil {
			return nil, nil, nil, err
		}
		twins := map[string]bool{}
		for _, s := range tw {
			twins[s.Name] = s.Layout == services.LayoutTwins
		}
		for _, s := range tw {
			if s.Layout != services.LayoutTwins {
				continue
			}
			for _, sv := range s.Servers {
				// A tracker of a flipped twin (the offline service's
				// backups track the replica service's normal twins)
				// takes its drain or maint (IDRAIN, IMAINT in `show
				// servers state`): it is judged as that twin is, by
				// admin state.
				if sv.Track != "" {
					all[s.Name+"/"+sv.Name] = true
				}
				if tb, _, _ := strings.Cut(sv.Track, "/"); sv.Track != "" && !twins[tb] {
					tr[s.Name+"/"+sv.Name], bs[s.Name] = true, true
				}
			}
		}
	}
	return tr, bs, all, nil
}

// modelWeights is every server's planned weight, by backend/address:port.
func (f *fleet) modelWeights(inv *topology.Inventory) (map[string]int, error) {
	p, err := plan.Compute(inv, patroni.Decode("/pg", f.kvs(nil)), plan.Options{})
	if err != nil {
		return nil, err
	}
	m := map[string]int{}
	for _, c := range p.Clusters {
		for _, s := range c.Services {
			for _, sv := range s.Servers {
				m[fmt.Sprintf("%s/%s:%d", s.Name, sv.Address, sv.Port)] = sv.Weight
			}
		}
	}
	return m, nil
}

// wanted is what the running HAProxy must show for a cluster's services:
// per backend, the active (not in maintenance or drain) servers by
// address:port and whether each is a backup. Comparing addresses rather
// than server names keeps the check valid for layouts that keep a member
// under several names (only the active one counts).
type wanted map[string]map[string]bool

// expected computes what the controller should have applied: the plan of
// the inventory with the Patroni keys as they are in etcd now.
func expected(ctx context.Context, cli *clientv3.Client, inv *topology.Inventory, only map[string]bool) (wanted, error) {
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	resp, err := cli.Get(cctx, "/pg/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcd get /pg/: %w", err)
	}
	kvs := make([]patroni.KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		kvs = append(kvs, patroni.KV{Key: string(kv.Key), Value: kv.Value, CreateRevision: kv.CreateRevision,
			ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease})
	}
	p, err := plan.Compute(inv, patroni.Decode("/pg", kvs), plan.Options{})
	if err != nil {
		return nil, err
	}
	return wantedOf(p, only), nil
}

func wantedOf(p *plan.Plan, only map[string]bool) wanted {
	w := wanted{}
	for _, c := range p.Clusters {
		if only != nil && !only[c.Name] {
			continue
		}
		for _, s := range c.Services {
			w[s.Name] = serverSet(s.Servers)
		}
	}
	return w
}

func serverSet(svs []services.Server) map[string]bool {
	m := make(map[string]bool, len(svs))
	for _, sv := range svs {
		m[fmt.Sprintf("%s:%d", sv.Address, sv.Port)] = sv.Backup
	}
	return m
}

// goneInTwinServices lists, for the twins layout, every crashed member's
// servers in the services whose membership depends on roles (replica and
// offline here), as backend/address:port.
func (f *fleet) goneInTwinServices() map[string]bool {
	m := map[string]bool{}
	for i := 0; i < f.n; i++ {
		if f.gone[i] == 0 {
			continue
		}
		a := f.addr(i, f.gone[i])
		m[fmt.Sprintf("%s-replica/%s:%d", f.clusterName(i), a, 6432)] = true
		m[fmt.Sprintf("%s-offline/%s:%d", f.clusterName(i), a, 5432)] = true
	}
	return m
}

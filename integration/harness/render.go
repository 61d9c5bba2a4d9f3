package harness

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// PgBinDir is where Debian's postgresql-15 puts the server binaries.
const PgBinDir = "/usr/lib/postgresql/15/bin"

// memberPaths are the files of one member under BaseDir/<member>/.
type memberPaths struct {
	Dir, Data, Socket, PatroniCfg, PatroniLog     string
	BouncerDir, BouncerCfg, BouncerUsers, Bouncer string
	Pgpass                                        string
}

func pathsFor(base, member string) memberPaths {
	dir := filepath.Join(base, member)
	bd := filepath.Join(dir, "pgbouncer")
	return memberPaths{
		Dir:          dir,
		Data:         filepath.Join(dir, "data"),
		Socket:       filepath.Join(dir, "socket"),
		PatroniCfg:   filepath.Join(dir, "patroni.yml"),
		PatroniLog:   filepath.Join(dir, "patroni.log"),
		Pgpass:       filepath.Join(dir, "pgpass"),
		BouncerDir:   bd,
		BouncerCfg:   filepath.Join(bd, "pgbouncer.ini"),
		BouncerUsers: filepath.Join(bd, "userlist.txt"),
		Bouncer:      filepath.Join(bd, "pgbouncer.log"),
	}
}

// postBootstrapScript creates the business user and database. Patroni runs
// it once, on the bootstrapping member, with a superuser DSN as $1 (over
// the member's unix socket) before it takes the leader key.
func postBootstrapScript() string {
	psql := filepath.Join(PgBinDir, "psql")
	return fmt.Sprintf(`#!/bin/sh
# Written by pgsvc's integration harness.
set -e
%s "$1" -v ON_ERROR_STOP=1 -q \
  -c "CREATE ROLE %s LOGIN PASSWORD '%s'" \
  -c "CREATE DATABASE %s OWNER %s"
`, psql, MetaUser, MetaPassword, MetaDB, MetaUser)
}

// patroniConfig renders one member's Patroni 3.0.2 YAML configuration.
func patroniConfig(cfg Config, cl ClusterSpec, m MemberSpec, postBootstrap string) ([]byte, error) {
	p := pathsFor(cfg.BaseDir, m.Name)
	pg := net.JoinHostPort(m.Addr, strconv.Itoa(PgPort))
	api := net.JoinHostPort(m.Addr, strconv.Itoa(PatroniPort))
	doc := map[string]any{
		"scope":     cl.Name,
		"namespace": DefaultNamespace,
		"name":      m.Name,
		"log":       map[string]any{"level": "INFO"},
		"restapi":   map[string]any{"listen": api, "connect_address": api},
		"etcd3":     map[string]any{"hosts": cfg.EtcdClient, "protocol": "http"},
		"bootstrap": map[string]any{
			"dcs": map[string]any{
				"ttl":                     cl.TTL,
				"loop_wait":               cl.LoopWait,
				"retry_timeout":           cl.RetryTimeout,
				"maximum_lag_on_failover": 1048576,
				"postgresql": map[string]any{
					"use_pg_rewind": true,
					"use_slots":     true,
					"parameters": map[string]any{
						"max_connections":       100,
						"wal_level":             "replica",
						"hot_standby":           "on",
						"wal_log_hints":         "on",
						"max_wal_senders":       10,
						"max_replication_slots": 10,
						"wal_keep_size":         "128MB",
					},
				},
			},
			"initdb":         []any{map[string]any{"encoding": "UTF8"}, map[string]any{"locale": "C.UTF-8"}, "data-checksums"},
			"post_bootstrap": postBootstrap,
		},
		"postgresql": map[string]any{
			"listen":          pg,
			"connect_address": pg,
			"data_dir":        p.Data,
			"bin_dir":         PgBinDir,
			"pgpass":          p.Pgpass,
			"use_pg_rewind":   true,
			// The default spread checkpoint made each replica's
			// pg_basebackup wait ~90 s on an idle primary.
			"basebackup": []any{map[string]any{"checkpoint": "fast"}},
			"authentication": map[string]any{
				"superuser":   map[string]any{"username": SuperUser, "password": SuperPassword},
				"replication": map[string]any{"username": ReplicatorUser, "password": ReplicatorPass},
				"rewind":      map[string]any{"username": SuperUser, "password": SuperPassword},
			},
			"parameters": map[string]any{
				// Every member listens on :5432 of its own address, so the
				// default socket path would collide.
				"unix_socket_directories": p.Socket,
				"shared_buffers":          "32MB",
				"logging_collector":       "off",
			},
			"pg_hba": []string{
				"local all all trust",
				"host replication " + ReplicatorUser + " 127.0.0.0/8 md5",
				"host all all 127.0.0.0/8 md5",
			},
		},
	}
	if cl.SynchronousMode {
		doc["bootstrap"].(map[string]any)["dcs"].(map[string]any)["synchronous_mode"] = true
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("render patroni config of %s: %w", m.Name, err)
	}
	return append([]byte("# Written by pgsvc's integration harness.\n"), b...), nil
}

// pgbouncerConfig renders one member's pgbouncer.ini: transaction pooling as
// in Pigsty, md5 auth with a plaintext userlist (pgbouncer then answers the
// server's scram itself), and a 1 s login retry so clients recover quickly
// after the backend restarts.
func pgbouncerConfig(base string, m MemberSpec) string {
	p := pathsFor(base, m.Name)
	var b strings.Builder
	fmt.Fprintf(&b, "; Written by pgsvc's integration harness.\n")
	fmt.Fprintf(&b, "[databases]\n%s = host=%s port=%d dbname=%s\n\n", MetaDB, m.Addr, PgPort, MetaDB)
	fmt.Fprintf(&b, "[pgbouncer]\n")
	fmt.Fprintf(&b, "listen_addr = %s\nlisten_port = %d\n", m.Addr, PgbouncerPort)
	fmt.Fprintf(&b, "unix_socket_dir = %s\n", p.BouncerDir)
	fmt.Fprintf(&b, "auth_type = md5\nauth_file = %s\n", p.BouncerUsers)
	fmt.Fprintf(&b, "pool_mode = transaction\nserver_login_retry = 1\n")
	fmt.Fprintf(&b, "max_client_conn = 200\ndefault_pool_size = 10\n")
	fmt.Fprintf(&b, "ignore_startup_parameters = extra_float_digits\n")
	fmt.Fprintf(&b, "admin_users = %s\n", MetaUser)
	return b.String()
}

func pgbouncerUserlist() string {
	return fmt.Sprintf("%q %q\n", MetaUser, MetaPassword)
}

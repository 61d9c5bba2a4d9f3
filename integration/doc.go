// Package integration holds end-to-end tests against real etcd, Patroni,
// PostgreSQL, pgbouncer and HAProxy processes. They carry the build tag
// `integration` and need root (the harness starts Postgres as user postgres):
//
//	go test -tags integration -race -count=1 -timeout 25m ./integration/...
package integration

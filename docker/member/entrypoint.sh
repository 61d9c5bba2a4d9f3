#!/bin/bash
# Runs pgbouncer and Patroni side by side. When either exits, the other is
# stopped and the container exits with that status, so the restart policy
# brings the member back whole instead of leaving a pooler without a database
# (or the reverse) behind a passing health check.
set -uo pipefail

cfg=/etc/patroni/patroni.yml
if [ ! -r "$cfg" ]; then
    echo "pgsvc-member: $cfg is missing: docker-compose.yml bind-mounts docker/member/patroni/<member>.yml there" >&2
    exit 2
fi

pgbouncer /etc/pgbouncer/pgbouncer.ini &
bouncer=$!
patroni "$cfg" &
patroni=$!

# Patroni stops PostgreSQL cleanly on TERM; forward it to both.
stop() { kill -TERM "$patroni" "$bouncer" 2>/dev/null || true; }
trap stop TERM INT

wait -n "$patroni" "$bouncer"
status=$?
stop
wait
exit "$status"

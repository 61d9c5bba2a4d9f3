#!/bin/bash
# Runs the HAProxy 2.6 master (master-worker, foreground) and the Data Plane
# API side by side. When either exits, the other is stopped and the container
# exits, so the restart policy restarts the pair together.
set -uo pipefail

cfg=/usr/local/etc/haproxy/haproxy.cfg
api_cfg=/usr/local/etc/haproxy/dataplaneapi.yml

mkdir -p /var/run/haproxy /var/lib/haproxy /var/lib/dataplaneapi/transactions
# Sockets left by a previous run of this container would make the wait below
# end before HAProxy has bound them again.
rm -f /var/run/haproxy/admin.sock /var/run/haproxy/master.sock
# An empty state file is valid ("load-server-state-from-file" then loads
# nothing) and avoids a startup warning. One left by the last reload is
# loaded: after a restart of this container HAProxy runs the states it
# dumped, not the roles the controller set since, under the same pid (this
# pid namespace starts it the same way every time); the controller tells
# the restarted process apart by its start time (GET /runtime/info's
# uptime) and sets the roles again.
[ -e /var/lib/haproxy/server-state ] || : >/var/lib/haproxy/server-state

haproxy -W -db -S /var/run/haproxy/master.sock -f "$cfg" -p /var/run/haproxy/haproxy.pid &
haproxy=$!

# The API needs the admin socket at start; give HAProxy up to 30 s.
for _ in $(seq 1 150); do
    [ -S /var/run/haproxy/admin.sock ] && break
    if ! kill -0 "$haproxy" 2>/dev/null; then
        wait "$haproxy"
        exit $?
    fi
    sleep 0.2
done
if [ ! -S /var/run/haproxy/admin.sock ]; then
    echo "pgsvc-haproxy: /var/run/haproxy/admin.sock did not appear within 30 s" >&2
    kill -TERM "$haproxy"
    exit 1
fi

dataplaneapi-pgsvc -f "$api_cfg" &
api=$!

# USR1 is HAProxy's soft stop: sessions finish, listeners close.
stop() { kill -USR1 "$haproxy" 2>/dev/null || true; kill -TERM "$api" 2>/dev/null || true; }
trap stop TERM INT

wait -n "$haproxy" "$api"
status=$?
stop
wait
exit "$status"

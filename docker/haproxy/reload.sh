#!/bin/sh
# reload_cmd and restart_cmd of the Data Plane API (it runs this without a
# shell, so everything lives here). Dump the live server states first, so the
# new worker starts every server as it was (see "The reload hazard" in the
# project's Data Plane API notes), then ask the 2.6 master to reload.
# A failed dump fails the reload: reloading without fresh state would start
# every server UP, and the API reports a failed reload the controller retries.
set -eu

admin=/var/run/haproxy/admin.sock
master=/var/run/haproxy/master.sock
state=/var/lib/haproxy/server-state

tmp="$state.tmp.$$"
if ! echo "show servers state" | socat -t 5 stdio "unix-connect:$admin" >"$tmp"; then
    rm -f "$tmp"
    echo "pgsvc-haproxy-reload: show servers state on $admin failed; not reloading" >&2
    exit 1
fi
# The dump starts with the file format version line ("1"); anything else is
# an error text from HAProxy.
if [ "$(head -n 1 "$tmp")" != "1" ]; then
    echo "pgsvc-haproxy-reload: unexpected answer to show servers state: $(head -n 1 "$tmp")" >&2
    rm -f "$tmp"
    exit 1
fi
mv "$tmp" "$state"

# HAProxy 2.6's master answers "reload" with nothing and reloads
# asynchronously; the Data Plane API validated the file with haproxy -c first,
# but a bind that fails (an address something else holds) only shows when the
# master loads it. Wait for the master to finish: `show proc` gives its reload
# count and "[failed: N]", the failures since the last success. Exit 1 when it
# refused the file, so the API reports the reload failed and puts its previous
# file back (the controller then holds back the cluster that caused it).
master_reloads() {
    echo "show proc;quit" | socat -t 5 stdio "unix-connect:$master" 2>/dev/null |
        awk '$2 == "master" { f = $5; gsub(/[^0-9]/, "", f); print $3, f; exit }'
}
before=$(master_reloads | cut -d' ' -f1)
if [ -z "$before" ]; then
    echo "pgsvc-haproxy-reload: show proc on $master failed; not reloading" >&2
    exit 1
fi
echo "reload" | socat -t 5 stdio "unix-connect:$master"
i=0
while [ "$i" -lt 400 ]; do
    sleep 0.05
    set -- $(master_reloads) ""
    if [ -n "$1" ] && [ "$1" -gt "$before" ]; then
        if [ "${2:-0}" -gt 0 ]; then
            echo "pgsvc-haproxy-reload: HAProxy refused the new configuration (reload failed; the previous workers keep serving)" >&2
            exit 1
        fi
        exit 0
    fi
    i=$((i + 1))
done
echo "pgsvc-haproxy-reload: the master did not finish the reload within 20 s" >&2
exit 1

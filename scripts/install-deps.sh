#!/bin/sh
# Installs what the integration tests and `make demo` run, on Debian 12:
# etcd 3.4, Patroni 3.0.2, PostgreSQL 15, pgbouncer 1.18 and HAProxy 2.6.
# Idempotent and quiet: apt runs only when something is missing. Needs root.
#
# Debian's postgresql-common creates a default cluster 15/main on port 5432.
# It must never run here (it would take 127.0.0.1:5432), so package
# maintainer scripts are not allowed to start services (policy-rc.d), and
# the cluster is set to manual start.
set -eu

packages="etcd-server etcd-client patroni postgresql-15 postgresql-client-15 pgbouncer haproxy"

missing=""
for p in $packages; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing:$missing; run as root" >&2
	exit 1
fi

echo "install-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive

# Forbid service starts during installation; restore what was there after.
policy=/usr/sbin/policy-rc.d
had_policy=0
if [ -e "$policy" ]; then
	had_policy=1
else
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi

apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y -qq $missing >/dev/null

if [ "$had_policy" -eq 0 ]; then
	rm -f "$policy"
	trap - EXIT
fi

# Keep the default cluster from ever being started by pg_ctlcluster tooling.
conf=/etc/postgresql/15/main/start.conf
if [ -f "$conf" ]; then
	echo manual >"$conf"
fi
if command -v pg_lsclusters >/dev/null 2>&1 && pg_lsclusters -h 2>/dev/null | awk '$1=="15" && $2=="main" && $4=="online" {f=1} END {exit !f}'; then
	echo "install-deps: warning: the default cluster 15/main is running; stop it with: pg_ctlcluster 15 main stop" >&2
fi

#!/usr/bin/env bash
# make demo / make demo-down: a real local pgsvc setup on loopback addresses.
#
#   bash scripts/demo.sh up     etcd + Patroni/PostgreSQL 15 + pgbouncer (pg-test on 127.0.0.11-13,
#                               pg-duo on 127.0.0.21-22), HAProxy (services on 127.0.0.10 and
#                               127.0.0.20) and `controller run` in direct mode; then a switchover
#                               of pg-test that the controller follows. Leaves it all running.
#   bash scripts/demo.sh down   stops what `up` started, by recorded PID. Idempotent.
#
# Needs root (the harness runs PostgreSQL as the postgres user) on Debian 12.
# Everything lives in /var/tmp/pgsvc-demo (PGSVC_DEMO_DIR overrides it).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${PGSVC_DEMO_DIR:-/var/tmp/pgsvc-demo}
HDIR=$DIR/haproxy
CONTROLLER=$ROOT/bin/controller
DEMOCLUSTER=$ROOT/bin/democluster
# How the closing message names the binaries: relative when run from the
# repository (as make does).
if [ "$PWD" = "$ROOT" ]; then SHOW_BIN=bin; else SHOW_BIN=$ROOT/bin; fi
STATUS_ADDR=127.0.0.1:9876
STATUS_URL=http://$STATUS_ADDR
ETCD=http://127.0.0.1:2379
INVENTORY=$DIR/pigsty.yml
CTL_PID=$DIR/controller.pid
CTL_LOG=$DIR/controller.log
HA_CFG=$HDIR/haproxy.cfg
HA_PID=$HDIR/haproxy.pid
HA_LOG=$HDIR/haproxy.log
# Switchover demo: pg-test's services bind this address.
VIP=127.0.0.10
export PATH=$PATH:/usr/local/go/bin
# A small, predictable environment for PostgreSQL and Patroni tools: no PG*
# variables or python shims from the caller.
CLEAN_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 LC_ALL=C.UTF-8)

T0=$(date +%s)
step() { printf '\n==> [%3ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
info() { printf '    %s\n' "$*"; }
die() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}

# pid_is PIDFILE WORD...: prints the PID in PIDFILE when that process is alive
# and its command line contains every WORD, so a stale file never makes us
# signal a recycled PID.
pid_is() {
	local file=$1 pid cmd w
	shift
	[ -r "$file" ] || return 1
	pid=$(tr -dc '0-9' <"$file")
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
	cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	for w in "$@"; do
		case "$cmd" in *"$w"*) ;; *) return 1 ;; esac
	done
	echo "$pid"
}

# stop_pid NAME PID: SIGTERM, wait up to 20 s, then SIGKILL.
stop_pid() {
	local name=$1 pid=$2
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 100); do
		[ -d "/proc/$pid" ] || {
			info "stopped $name (PID $pid)"
			return 0
		}
		# A zombie is as good as gone (its parent reaps it).
		if [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
			info "stopped $name (PID $pid)"
			return 0
		fi
		sleep 0.2
	done
	info "$name (PID $pid) ignored SIGTERM for 20 s: SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
}

controller_pid() { pid_is "$CTL_PID" controller run "$INVENTORY"; }
haproxy_pid() { pid_is "$HA_PID" haproxy "$HA_CFG"; }

build_democluster() {
	(cd "$ROOT" && go build -o "$DEMOCLUSTER" ./integration/cmd/democluster) ||
		die "building integration/cmd/democluster failed"
}

# do_down stops the controller, HAProxy, then the cluster; returns non-zero
# when something could not be stopped (its record is then kept).
do_down() {
	local pid out stopped=0
	if pid=$(controller_pid); then
		stop_pid controller "$pid"
		stopped=1
	fi
	rm -f "$CTL_PID"
	if pid=$(haproxy_pid); then
		# The master stops its workers before it exits.
		stop_pid "haproxy master" "$pid"
		stopped=1
	fi
	rm -f "$HA_PID"
	if [ -f "$DIR/state.json" ]; then
		[ -x "$DEMOCLUSTER" ] || build_democluster
		if ! out=$("$DEMOCLUSTER" down -dir "$DIR" 2>>"$DIR/democluster.log"); then
			info "democluster down failed (see $DIR/democluster.log): $out"
			return 1
		fi
		info "democluster: $out"
		rm -f "$DIR/state.json"
		stopped=1
	fi
	[ "$stopped" -eq 1 ] || info "nothing was running"
}

down() {
	[ "$(id -u)" -eq 0 ] || die "run as root (make demo-down)"
	if [ ! -d "$DIR" ]; then
		echo "demo: nothing to stop ($DIR does not exist)"
		return 0
	fi
	echo "demo: stopping the demo in $DIR"
	do_down || die "some processes could not be stopped; see above"
	echo "demo: stopped (logs and data stay in $DIR; the next 'make demo' replaces them)"
}

# listening ADDR:PORT: prints who listens there, if anyone.
listening() {
	ss -Hltnp "src $1" 2>/dev/null | head -1 |
		sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1, PID \2/p'
}

# in_use: every address the demo needs, and who holds it.
in_use() {
	local a who
	for a in 127.0.0.1:2379 $STATUS_ADDR $VIP:5433 127.0.0.20:5433 127.0.0.11:5432 127.0.0.11:8008 127.0.0.21:5432; do
		who=$(listening "$a")
		[ -z "$who" ] || echo "$a ($who)"
	done
}

# psql_at PORT [QUERY]: one query through HAProxy on the pg-test VIP, retried
# while HAProxy's health checks catch up (a few seconds after a reload or a
# role change); prints its one-line answer.
psql_at() {
	local port=$1 q=${2:-"select inet_server_addr(), pg_is_in_recovery()"} out
	for _ in $(seq 1 40); do
		if out=$("${CLEAN_ENV[@]}" PGPASSWORD=DBUser.Meta PGCONNECT_TIMEOUT=3 \
			psql -h "$VIP" -p "$port" -U dbuser_meta meta -Atc "$q" 2>&1); then
			echo "$out"
			return 0
		fi
		sleep 0.5
	done
	echo "FAILED: $out"
	return 1
}

# helper: reads /status and HAProxy's stats socket (python3 comes with
# Patroni, so the demo needs neither jq nor socat).
helper() { python3 "$ROOT/scripts/demo-helper.py" "$@"; }

UP_OK=0
UP_STARTED=0
on_up_exit() {
	local rc=$?
	if [ "$UP_OK" -eq 1 ] || [ "$UP_STARTED" -eq 0 ]; then
		return
	fi
	printf '\ndemo: FAILED (exit %s); stopping what was started. Logs stay in %s:\n' "$rc" "$DIR" >&2
	for f in "$CTL_LOG" "$HA_LOG" "$DIR/democluster.log"; do
		if [ -s "$f" ]; then
			printf -- '--- last lines of %s\n' "$f" >&2
			tail -n 15 "$f" >&2
		fi
	done
	do_down >&2 || true
}

up() {
	[ "$(id -u)" -eq 0 ] || die "run as root: the demo starts PostgreSQL as the postgres user (sudo make demo)"
	trap on_up_exit EXIT

	step "1/8 dependencies and binaries"
	bash "$ROOT/scripts/install-deps.sh"
	command -v go >/dev/null || die "go is not in PATH (nor in /usr/local/go/bin)"
	(cd "$ROOT" && go build -o "$CONTROLLER" ./cmd/controller) || die "building cmd/controller failed"
	build_democluster
	info "etcd $(etcd --version | awk '/etcd Version/ {print $3}'), $(patroni --version), $(/usr/lib/postgresql/15/bin/postgres --version), $(pgbouncer --version | head -1), $(haproxy -v | awk 'NR==1 {print $1, $3}')"

	step "2/8 is a demo already running?"
	local pid busy
	if pid=$(controller_pid); then die "a demo is already running (controller PID $pid): 'make demo-down' first"; fi
	if pid=$(haproxy_pid); then die "a demo is already running (HAProxy PID $pid): 'make demo-down' first"; fi
	busy=$(in_use)
	if [ -n "$busy" ]; then
		die "addresses the demo needs are in use (a demo, or an integration test, is running?):
    ${busy//$'\n'/$'\n'    }
  'make demo-down' stops a demo; wait for other tests to finish"
	fi
	info "no"

	step "3/8 etcd + Patroni + PostgreSQL 15 + pgbouncer (democluster up; ~20 s)"
	UP_STARTED=1
	local uplog
	uplog=$(mktemp /var/tmp/pgsvc-demo-up.XXXXXX)
	if ! "$DEMOCLUSTER" up -dir "$DIR" 2>"$uplog" | sed 's/^/    /'; then
		tail -n 20 "$uplog" >&2
		rm -f "$uplog"
		die "democluster up failed"
	fi
	mv "$uplog" "$DIR/democluster.log"
	cp "$DIR/inventory.yml" "$INVENTORY"
	info "inventory: $INVENTORY"

	step "4/8 render haproxy.cfg and start HAProxy (master-worker)"
	mkdir -p "$HDIR"
	# An empty state file with its version line: HAProxy warns on a missing one.
	echo 1 >"$HDIR/server-state"
	"$CONTROLLER" render --inventory "$INVENTORY" --stats-socket "$HDIR/admin.sock" \
		--server-state-file "$HDIR/server-state" >"$HA_CFG"
	info "$HA_CFG: $(grep -c '^frontend ' "$HA_CFG") frontends"
	local hap
	hap=$(command -v haproxy)
	"$hap" -c -q -f "$HA_CFG" || die "haproxy -c rejected $HA_CFG"
	"$hap" -W -D -S "$HDIR/master.sock" -f "$HA_CFG" -p "$HA_PID" >"$HA_LOG" 2>&1 ||
		die "haproxy did not start (see $HA_LOG)"
	for _ in $(seq 1 50); do
		pid=$(haproxy_pid) && [ -S "$HDIR/master.sock" ] && [ -S "$HDIR/admin.sock" ] && break
		sleep 0.1
	done
	pid=$(haproxy_pid) || die "haproxy exited (see $HA_LOG)"
	info "haproxy master PID $pid, master socket $HDIR/master.sock"

	step "5/8 start the controller (direct mode: it owns $HA_CFG)"
	# setsid: its own session, so it outlives this script and terminal
	# signals. The inner shell writes its own PID, then becomes the controller.
	# shellcheck disable=SC2016 # expanded by the inner shell
	setsid bash -c 'echo $$ >"$0"; exec "$@"' "$CTL_PID" \
		"$CONTROLLER" run --inventory "$INVENTORY" --etcd "$ETCD" \
		--haproxy-config "$HA_CFG" --stats-socket "$HDIR/admin.sock" --master-socket "$HDIR/master.sock" \
		--server-state-file "$HDIR/server-state" --haproxy-bin "$hap" \
		--listen "$STATUS_ADDR" --log-format console \
		</dev/null >"$CTL_LOG" 2>&1 &
	local deadline=$(($(date +%s) + 60)) code=
	while :; do
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$STATUS_URL/readyz" || true)
		[ "$code" = 200 ] && break
		if [ -s "$CTL_PID" ] && ! controller_pid >/dev/null; then die "the controller exited (see $CTL_LOG)"; fi
		[ "$(date +%s)" -lt "$deadline" ] || die "the controller was not ready within 60 s (readyz: $code)"
		sleep 0.2
	done
	info "controller PID $(controller_pid), $STATUS_URL/readyz answers 200"

	step "6/8 what the controller sees (bin/controller status)"
	"$CONTROLLER" status --url "$STATUS_URL" | sed 's/^/    /'

	step "7/8 switchover of pg-test, and the controller following it"
	local leader candidate m
	leader=$(helper leader "$STATUS_URL" pg-test)
	[ -n "$leader" ] || die "pg-test has no leader"
	# The candidate: a replica that does not take offline queries (the last
	# member, pg-test-3, does).
	for m in pg-test-1 pg-test-2; do
		[ "$m" = "$leader" ] || {
			candidate=$m
			break
		}
	done
	info "before: 5433 (primary) -> $(psql_at 5433)   5434 (replica) -> $(psql_at 5434)"
	local since out
	since=$(date -u +%Y-%m-%dT%H:%M:%S)
	info "patronictl switchover --leader $leader --candidate $candidate --force"
	out=$("${CLEAN_ENV[@]}" patronictl -c "$DIR/$leader/patroni.yml" switchover pg-test \
		--leader "$leader" --candidate "$candidate" --force 2>&1) || die "patronictl switchover failed:
$out"
	echo "$out" | grep -i 'switched over' | sed 's/^/    /' || true
	deadline=$(($(date +%s) + 60))
	until helper converged "$STATUS_URL" pg-test "$leader" "$candidate" "$since"; do
		[ "$(date +%s)" -lt "$deadline" ] || die "the controller did not follow the switchover within 60 s"
		sleep 0.5
	done
	info "the controller followed ($leader -> $candidate):"
	helper changes "$STATUS_URL" "$since" | sed 's/^/      /'
	# The transition's record comes once it settled (fence_hold after the new leader).
	deadline=$(($(date +%s) + 20))
	until out=$(helper timeline "$STATUS_URL" pg-test "$since"); do
		[ "$(date +%s)" -lt "$deadline" ] || break
		sleep 0.5
	done
	echo "$out" | sed 's/^/      /'
	# HAProxy's own health checks (rise 3) take a few more seconds to agree.
	deadline=$(($(date +%s) + 30))
	until helper settled "$HDIR/admin.sock" pg-test-; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			info "(HAProxy's checks have not all settled after 30 s; showing them as they are)"
			break
		fi
		sleep 0.5
	done
	info ""
	info "bin/controller status, after:"
	"$CONTROLLER" status --url "$STATUS_URL" | sed 's/^/    /'
	info ""
	info "HAProxy's own view of pg-test (show stat on $HDIR/admin.sock):"
	helper haproxy "$HDIR/admin.sock" pg-test- | sed 's/^/      /'
	info ""
	info "real traffic through HAProxy on $VIP (inet_server_addr | pg_is_in_recovery):"
	info "  5433 primary -> $(psql_at 5433)"
	for _ in 1 2 3 4; do info "  5434 replica -> $(psql_at 5434)"; done
	info "  (the old primary $leader just became a replica: HAProxy's slowstart 30s ramps up its share of 5434)"
	info "  5436 default -> $(psql_at 5436)"
	info "  5438 offline -> $(psql_at 5438)"

	step "8/8 the demo keeps running"
	UP_OK=1
	cat <<EOF
    status (JSON)      curl -s $STATUS_URL/status      (also /healthz, /readyz, /metrics)
    status (table)     $SHOW_BIN/controller status
    plan from a file   $SHOW_BIN/controller plan --inventory $INVENTORY
    cluster processes  $SHOW_BIN/democluster status -dir $DIR
    psql, pg-test      PGPASSWORD=DBUser.Meta psql -h 127.0.0.10 -p 5433 -U dbuser_meta meta   (primary, via pgbouncer)
                       PGPASSWORD=DBUser.Meta psql -h 127.0.0.10 -p 5434 -U dbuser_meta meta   (replica, via pgbouncer)
                       PGPASSWORD=DBUser.Meta psql -h 127.0.0.10 -p 5436 -U dbuser_meta meta   (default, direct to postgres)
                       PGPASSWORD=DBUser.Meta psql -h 127.0.0.10 -p 5438 -U dbuser_meta meta   (offline, direct to postgres)
    psql, pg-duo       the same ports on 127.0.0.20
    try a switchover   patronictl -c $DIR/$candidate/patroni.yml switchover pg-test --leader $candidate --candidate $leader --force
    try a failover     kill -9 the leader's Patroni (PIDs: $SHOW_BIN/democluster status -dir $DIR)
    logs               $CTL_LOG
                       $HA_LOG, $DIR/<member>/patroni.log, $DIR/democluster.log
    haproxy.cfg        $HA_CFG (owned by the controller)
    stop it all        make demo-down
EOF
	printf '\ndemo: up in %ss\n' "$(($(date +%s) - T0))"
}

case "${1:-}" in
up) up ;;
down) down ;;
*)
	echo "usage: $0 up|down" >&2
	exit 2
	;;
esac

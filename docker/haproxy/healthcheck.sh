#!/bin/sh
# Healthy when the HAProxy master answers on its CLI and the Data Plane API
# answers HTTP (401 without credentials is an answer: the check needs none).
set -eu
echo "show proc" | socat -t 2 stdio unix-connect:/var/run/haproxy/master.sock | grep -q master
code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5555/v2/info || true)
case "$code" in
200|401) exit 0 ;;
*) echo "dataplaneapi answered $code" >&2; exit 1 ;;
esac

#!/usr/bin/env python3
"""Helper of scripts/demo.sh: reads the controller's /status document and
HAProxy's stats socket, so the demo needs neither jq nor socat (python3 comes
with Patroni).

  demo-helper.py leader URL CLUSTER              print the cluster's leader
  demo-helper.py converged URL CLUSTER OLD NEW SINCE
                                                 exit 0 once the controller
                                                 followed the switchover
  demo-helper.py changes URL SINCE               print what was applied since
  demo-helper.py timeline URL CLUSTER SINCE      print the cluster's switchover/failover
                                                 timelines since (exit 1: none yet)
  demo-helper.py haproxy SOCKET PREFIX           print HAProxy's servers
  demo-helper.py settled SOCKET PREFIX           exit 0 once HAProxy's checks
                                                 agree with the roles
"""

import csv
import io
import json
import socket
import sys
import urllib.request


def status(url):
    with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=5) as r:
        return json.load(r)


def cluster(st, name):
    for c in st["clusters"]:
        if c["name"] == name:
            return c
    raise SystemExit("demo-helper: cluster %s is not in the controller's status" % name)


def leader(url, name):
    print(cluster(status(url), name).get("leader") or "")


def converged(url, name, old, new, since):
    """The controller names the new leader, the old one runs again as a
    replica, the replica service has the new primary as its backup, every
    target is in sync, and a change to this cluster was applied since."""
    try:
        st = status(url)
    except OSError:
        return 1
    c = cluster(st, name)
    mem = {m["name"]: m for m in c["members"]}
    rep = [s for s in c["services"] if s["service"] == "replica"]
    backup = {s["name"]: s["backup"] for s in rep[0]["servers"]} if rep else {}
    applied = [e for e in st.get("history") or [] if e["kind"] == "applied" and e["at"] >= since
               and any(ch["backend"].startswith(name + "-") for ch in e.get("changes") or [])]
    ok = (c.get("leader") == new and old in mem and mem[old].get("state") == "running"
          and mem[old].get("role") == "replica" and backup.get(new)
          and all(t["in_sync"] for t in st["targets"]) and applied)
    return 0 if ok else 1


def changes(url, since):
    for e in status(url).get("history") or []:
        if e["at"] < since or e["kind"] != "applied":
            continue
        how = []
        if e.get("convergence_ns"):
            how.append("%.0f ms after the DCS change" % (e["convergence_ns"] / 1e6))
        how.append("reload %s" % e["reload_id"] if e.get("reloaded") else "runtime API, no reload")
        print("applied to %s (%s):" % (e.get("target", "?"), ", ".join(how)))
        for ch in e.get("changes") or []:
            print("  %-14s %s/%s  %s" % (ch["kind"], ch["backend"], ch.get("server", ""), ch.get("detail", "")))


def parse_time(v):
    """RFC 3339 with nanoseconds -> seconds since the epoch (float)."""
    import datetime
    if not v or v.startswith("0001-"):
        return None
    date, frac = v.rstrip("Z"), "0"
    if "." in date:
        date, frac = date.split(".", 1)
    t = datetime.datetime.strptime(date, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return t.timestamp() + float("0." + frac)


def timeline(url, name, since):
    found = 1
    try:
        st = status(url)
    except OSError:
        return 1
    for e in st.get("history") or []:
        tl = e.get("transition")
        if e["kind"] != "transition" or not tl or tl["cluster"] != name or e["at"] < since:
            continue
        found = 0
        print("%s -> %s (%s), as the controller saw it:" % (tl["from"], tl.get("to") or "?", tl["cause"]))
        start = parse_time(tl["start"])
        for key, what in (("start", "transition seen in the DCS"), ("requested", "switchover requested"),
                          ("old_primary_off", "old primary off: " + tl.get("off_reason", "")),
                          ("fenced_applied", "old primary forced DOWN in HAProxy, sessions cut"),
                          ("leader_key", "new leader key"),
                          ("new_primary_on", "new primary on: " + tl.get("on_reason", "")),
                          ("forced_up", "new primary forced UP in HAProxy")):
            at = parse_time(tl.get(key))
            if at is not None:
                print("  %+8.0f ms  %s" % ((at - start) * 1000, what))
        if tl.get("write_downtime_ns"):
            print("  write path without a primary (old off -> new forced UP): %.0f ms" % (tl["write_downtime_ns"] / 1e6))
    return found


def show_stat(sock_path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(3)
    s.connect(sock_path)
    s.sendall(b"show stat\n")
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
    return [r for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")]


def haproxy(sock_path, prefix):
    rows = [r for r in show_stat(sock_path) if r["pxname"].startswith(prefix)]
    print("%-18s %-10s %-8s %-7s %s" % ("BACKEND", "SERVER", "STATUS", "BACKUP", "LAST CHECK"))
    for r in rows:
        print("%-18s %-10s %-8s %-7s %s" % (r["pxname"], r["svname"], r["status"],
                                           "backup" if r["bck"] == "1" else "", r["check_status"]))


def settled(sock_path, prefix):
    """Every check has a verdict, none is in transition (UP 1/3), and the
    primary backend has exactly one server UP."""
    try:
        rows = [r for r in show_stat(sock_path) if r["pxname"].startswith(prefix)]
    except OSError:
        return 1
    if not rows:
        return 1
    for r in rows:
        if r["status"] not in ("UP", "DOWN") or r["check_status"].lstrip("* ") in ("", "INI", "UNK"):
            return 1
    primary = [r for r in rows if r["pxname"] == prefix + "primary" and r["status"] == "UP"]
    return 0 if len(primary) == 1 else 1


def main(argv):
    cmds = {
        "leader": (leader, 2), "converged": (converged, 5), "changes": (changes, 2),
        "haproxy": (haproxy, 2), "settled": (settled, 2), "timeline": (timeline, 3),
    }
    if len(argv) < 1 or argv[0] not in cmds or len(argv) - 1 != cmds[argv[0]][1]:
        sys.stderr.write(__doc__)
        return 2
    fn, _ = cmds[argv[0]]
    return fn(*argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

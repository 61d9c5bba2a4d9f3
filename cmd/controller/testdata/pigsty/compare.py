#!/usr/bin/env python3
"""Compare pgsvc with Pigsty's own template on every conf of a Pigsty checkout.

  compare.py PIGSTY_CHECKOUT CONTROLLER_BIN TAG [TAG...]

For each tag (e.g. v3.7.0 v4.5.0): every conf/**/*.yml of that tag, every
cluster in it (hosts by merged pg_cluster), rendered by Pigsty's
roles/pgsql/templates/service.cfg on the cluster's first member (render.py)
and by `controller plan --format json` (inventory roles) put in Pigsty's
listen form; compared line by line after dropping blank lines, trailing
blanks and "# Ansible managed", with v4's fractional fastinter (0.5s, 1.5s)
written as pgsvc writes it (500ms, 1500ms: HAProxy takes no fractions).
Prints how many clusters are identical and the first differing line of the
others. Not run by the tests (needs a Pigsty checkout).
"""
import glob
import json
import os
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import render  # noqa: E402

CHECKOUT, CTL = sys.argv[1], sys.argv[2]
TAGS = sys.argv[3:]
TMP = tempfile.mkdtemp(prefix="pigsty-compare-")
for tag in TAGS:
    for src, dst in (("roles/pgsql/templates/service.cfg", "service"), ("roles/pgsql/defaults/main.yml", "defaults")):
        with open(os.path.join(TMP, f"{dst}-{tag}"), "w") as f:
            f.write(subprocess.run(["git", "-C", CHECKOUT, "show", f"refs/tags/{tag}:{src}"], capture_output=True, text=True, check=True).stdout)
    os.makedirs(os.path.join(TMP, tag))
    subprocess.run(f"git -C {CHECKOUT} archive refs/tags/{tag} conf | tar -x -C {os.path.join(TMP, tag)}", shell=True, check=True)

def pigsty_text(tag, inv_path, host, cluster):
    out = subprocess.run([sys.executable, os.path.join(HERE, 'render.py'),
        os.path.join(TMP, f'service-{tag}'), os.path.join(TMP, f'defaults-{tag}'), inv_path, host, cluster], capture_output=True, text=True)
    if out.returncode != 0:
        return None, out.stderr.strip().splitlines()[-1] if out.stderr else 'error'
    return out.stdout, None

def norm(text):
    out=[]
    for l in text.split('\n'):
        l=l.rstrip(' ')
        if not l or l.startswith('## ') or l=='# Ansible managed': continue
        out.append(l)
    return out

def ours(svc, host):
    L=[]
    sel=[s['address'] for s in svc['servers'] if s.get('selected')]
    bk=[s['address'] for s in svc['servers'] if s['backup']]
    L.append('#'+'-'*69)
    L.append(f"# service: {svc['name']} @ {host}:{svc['port']}")
    L.append('#'+'-'*69)
    L.append(('# service instances '+', '.join(sel)).rstrip())
    L.append(('# service backups   '+', '.join(bk)).rstrip())
    L.append(f"listen {svc['name']}")
    L.append(f"    bind {svc['ip'] or '*'}:{svc['port']}")
    L.append("    mode tcp")
    L.append(f"    maxconn {svc['maxconn']}")
    L.append(f"    balance {svc['balance']}")
    L.append("    option httpchk")
    L.append("    option http-keep-alive")
    L.append(f"    http-check send meth OPTIONS uri {svc['check']}")
    L.append("    http-check expect status 200")
    L.append(f"    default-server {svc['default_server']}")
    L.append("    # servers")
    for s in svc['servers']:
        ssl = f" check-ssl ca-file {s['ca_file']}" if s.get('check_ssl') else ''
        L.append(f"    server {s['name']} {s['address']}:{s['port']}{ssl} check port {s['check_port']} weight {s['weight']}" + (' backup' if s['backup'] else ''))
    return L

total=same=0
bad_parse=[]
diffs=[]
for tag in TAGS:
    for inv_path in sorted(glob.glob(os.path.join(TMP, tag, 'conf', '**', '*.yml'), recursive=True)):
        r = subprocess.run([CTL,'plan','--format','json','--inventory',inv_path], capture_output=True, text=True)
        try:
            inv = yaml.safe_load(open(inv_path))
        except yaml.YAMLError as e:
            print('SKIP (PyYAML cannot read it)', inv_path, str(e).splitlines()[0])
            continue
        try:
            hv = render.hostvars_of(inv)
        except Exception as e:
            print('PYFAIL', inv_path, e); continue
        clusters={}
        for h,v in hv.items():
            if v.get('pg_cluster'):
                clusters.setdefault(v['pg_cluster'], h)
        if r.returncode != 0:
            bad_parse.append((inv_path, r.stderr.strip()[:300], len(clusters)))
            total += len(clusters)
            continue
        plan=json.loads(r.stdout)
        byname={c['name']:c for c in plan['clusters']}
        for cl,host in clusters.items():
            total+=1
            ptxt, err = pigsty_text(tag, inv_path, host, cl)
            if ptxt is None:
                diffs.append((inv_path, cl, 'pigsty render failed: '+err)); continue
            ptxt = ptxt.replace(' fastinter 0.5s ', ' fastinter 500ms ').replace(' fastinter 1.5s ', ' fastinter 1500ms ')
            if cl not in byname:
                diffs.append((inv_path, cl, 'missing in pgsvc')); continue
            mine=[]
            for s in byname[cl]['services']:
                mine += ours(s, host)
            theirs=norm(ptxt)
            if mine==theirs: same+=1
            else:
                first=next((i for i in range(min(len(mine),len(theirs))) if mine[i]!=theirs[i]), min(len(mine),len(theirs)))
                diffs.append((inv_path, cl, f'line {first}: ours {mine[first] if first<len(mine) else None!r} pigsty {theirs[first] if first<len(theirs) else None!r}'))
print(f'identical {same} of {total}')
for b in bad_parse: print('PARSE', b)
for d in diffs: print('DIFF', d)

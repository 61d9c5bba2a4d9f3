#!/usr/bin/env python3
"""Render what Pigsty's own template gives for one cluster of an inventory.

Used once to write the golden files next to this script (they are committed;
tests never run it). It is an independent implementation of what Ansible does
when Pigsty's pgsql role runs roles/pgsql/tasks/service_local.yml on one member
(HOST) of CLUSTER:

  * every host's inventory variables merged as Ansible merges them (all.vars <
    groups by depth, ansible_group_priority, name < host vars, a host listed
    twice keeping both places' vars), which is what `hostvars` holds; role
    defaults are NOT in other hosts' hostvars (hence the template's
    `host.pg_port|default(5432)` and friends);
  * the rendering host's own variables: the pgsql role defaults
    (roles/pgsql/defaults/main.yml of the same Pigsty tag) < its inventory vars;
  * the template roles/pgsql/templates/service.cfg of that tag, rendered with
    Jinja2 as Ansible's template module does (trim_blocks=True), json_query =
    jmespath.search, bool = Ansible's boolean filter, ansible_managed =
    "Ansible managed", once per service of pg_default_services + pg_services,
    a later service named like an earlier one replacing its text (its file)
    in the earlier one's place.

Pigsty's template and defaults are read from a checkout of pgsty/pigsty at the
tag (not copied here):

  git -C pigsty show v4.5.0:roles/pgsql/templates/service.cfg > /tmp/service.cfg
  git -C pigsty show v4.5.0:roles/pgsql/defaults/main.yml    > /tmp/defaults.yml
  render.py /tmp/service.cfg /tmp/defaults.yml INVENTORY HOST CLUSTER > golden.cfg

Needs python3 with jinja2, jmespath and PyYAML (Debian: python3-jinja2,
python3-jmespath, python3-yaml).
"""
import sys

import jinja2
import jmespath
import yaml


def ansible_bool(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        return v.strip().lower() in ("yes", "on", "1", "true", "t", "y")
    return v in (1, 1.0)


def hostvars_of(inv):
    groups = {}   # name -> {vars, parents, hosts}
    hosts = {}    # name -> vars (merged over occurrences), insertion order = hostvars order
    host_groups = {}

    def add_hosts(hmap, gname):
        for h, hv in (hmap or {}).items():
            hosts.setdefault(h, {}).update(hv or {})
            host_groups.setdefault(h, [])
            if gname and gname not in host_groups[h]:
                host_groups[h].append(gname)

    def walk(children, parent):
        for name, g in (children or {}).items():
            gr = groups.setdefault(name, {"vars": {}, "parents": []})
            if parent and parent not in gr["parents"]:
                gr["parents"].append(parent)
            g = g or {}
            for key, val in g.items():  # file order, as Ansible's yaml plugin
                if key == "vars":
                    gr["vars"].update(val or {})
                elif key == "hosts":
                    add_hosts(val, name)
                elif key == "children":
                    walk(val, name)

    all_ = inv["all"]
    all_vars = {}
    for key, val in all_.items():
        if key == "vars":
            all_vars = val or {}
        elif key == "hosts":
            add_hosts(val, None)
        elif key == "children":
            walk(val, None)

    def depth(name):
        ps = groups[name]["parents"]
        return 1 if not ps else 1 + max(depth(p) for p in ps)

    def ancestors(name):
        out = []
        for p in groups[name]["parents"]:
            for a in [p] + ancestors(p):
                if a not in out:
                    out.append(a)
        return out

    result = {}
    for h, hv in hosts.items():
        gs = []
        for g in host_groups[h]:
            for a in [g] + ancestors(g):
                if a not in gs:
                    gs.append(a)
        gs.sort(key=lambda n: (depth(n), groups[n]["vars"].get("ansible_group_priority", 1), n))
        merged = dict(all_vars)
        for g in gs:
            merged.update(groups[g]["vars"])
        merged.update(hv)
        merged["inventory_hostname"] = h
        result[h] = merged
    return result


def main():
    template_path, defaults_path, inv_path, host, cluster = sys.argv[1:6]
    with open(template_path) as f:
        template_text = f.read()
    with open(defaults_path) as f:
        defaults = yaml.safe_load(f)
    with open(inv_path) as f:
        inv = yaml.safe_load(f)
    hostvars = hostvars_of(inv)
    me = dict(defaults)
    me.update(hostvars[host])
    assert me["pg_cluster"] == cluster, (me["pg_cluster"], cluster)

    env = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.Undefined)
    env.filters["json_query"] = lambda data, expr: jmespath.search(expr, data)
    env.filters["bool"] = ansible_bool
    tpl = env.from_string(template_text)
    # service_local.yml renders each service into conf.d/<cluster>-<name>.cfg:
    # a later service of the same name overwrites the earlier one's file.
    # A dict keeps the first one's place and the last one's text.
    out = {}
    for service in me["pg_default_services"] + me["pg_services"]:
        ctx = dict(me)
        ctx.update(
            hostvars=hostvars,
            service=service,
            pg_cluster_members_query="[@.*][0][?pg_cluster=='%s']" % cluster,
            ansible_managed="Ansible managed",
        )
        out[service["name"]] = tpl.render(ctx)
    sys.stdout.write("".join(out.values()))


if __name__ == "__main__":
    main()

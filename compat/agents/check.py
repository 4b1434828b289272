"""Asserts an agent's workload came back through Kiln's query API.

usage: check.py BASE_URL APP FUNCTION TAG=VALUE [TYPE…]

FUNCTION must appear in the first TYPE's flamegraph (default: cpu). Reads with the API key in
KILN_READ_KEY when set (a daemon with auth on).
"""
import json
import os
import sys
import urllib.parse
import urllib.request

base, app, function, tag = sys.argv[1:5]
types = sys.argv[5:] or ["cpu"]
key, value = tag.split("=", 1)


def get(path, **params):
    req = urllib.request.Request(base + path + "?" + urllib.parse.urlencode(params))
    if os.environ.get("KILN_READ_KEY"):
        req.add_header("Authorization", "Bearer " + os.environ["KILN_READ_KEY"])
    with urllib.request.urlopen(req) as r:
        return json.load(r)


# The function must show in the first type named (cpu for most agents, wall for Node's).
first = types[0]
r = get("/render", query=f'{app}.{first}{{{key}="{value}"}}', **{"from": "now-10m", "until": "now+1m"})
names = r["flamebearer"]["names"]
assert any(function in n for n in names), f"{function} not in {app}.{first}{{{tag}}}: {names[:40]}"
assert value in get("/label-values", label=key), f"{key}={value} missing from /label-values"
apps = {a["name"] for a in get("/api/apps")}
for t in types:
    assert f"{app}.{t}" in apps, f"{app}.{t} missing from {sorted(apps)}"

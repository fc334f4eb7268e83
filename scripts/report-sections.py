#!/usr/bin/env python3
"""Copies sections of a pruneforge report.md, one heading level down, for docs/RESULTS.md.

    scripts/report-sections.py pruneforge-out/report.md "KL to the base model" "Training dose"
"""
import re
import sys


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    text = open(sys.argv[1], encoding="utf-8").read()
    sections = {}
    for part in re.split(r"(?m)^## ", text)[1:]:
        title, _, body = part.partition("\n")
        sections[title.strip()] = re.sub(r"(?m)^### ", "#### ", body.strip("\n"))
    missing = [t for t in sys.argv[2:] if t not in sections]
    if missing:
        print(f"not in {sys.argv[1]}: {missing}; it has {list(sections)}", file=sys.stderr)
        return 1
    print("\n".join(f"### {t}\n\n{sections[t]}\n" for t in sys.argv[2:]), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

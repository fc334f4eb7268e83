#!/usr/bin/env python3
"""Paired comparison of two evaluations of the same items, from their items.jsonl.

    scripts/compare-evals.py VARIANT_EVAL_DIR REFERENCE_EVAL_DIR [--label NAME]

For two eval stage artifacts (directories holding items.jsonl) that scored the same rows, e.g.
the same variant from two jobs that differ in one setting, prints one Markdown row per metric:
Δ = variant − reference over the rows both scored, mean with a paired-bootstrap 95 % CI
(10,000 resamples, seed 0) and a two-sided paired-t p (normal approximation, fine for n ≥ 30).
Metrics: `kl` (per-row KL per token), `answer_nll` (NLL per answer token), and for the
multiple-choice tasks the item score (accuracy) and log p(gold | choices). A job's own report
already pairs variants within the job; this script is for pairs across jobs.
Standard library only.
"""

import argparse
import json
import math
import random
import sys
from pathlib import Path

METRICS = {"kl": "kl", "answer_nll": "nll_per_token"}
CHOICE_METRICS = (("score", "accuracy"), ("logp_gold", "log p(gold)"))


def rows(eval_dir: Path) -> dict:
    out = {}
    path = eval_dir / "items.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        sys.exit(f"error: {path}: {e}; give an eval stage's artifact directory")
    for n, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            sys.exit(f"error: {path}:{n}: not JSON ({e})")
        task, idx = item.get("task"), item.get("idx")
        if task in METRICS:
            value = item.get(METRICS[task])
            if value is not None:
                out[(task, METRICS[task], idx)] = float(value)
        else:
            for key, _ in CHOICE_METRICS:
                if item.get(key) is not None:
                    out[(task, key, idx)] = float(item[key])
    return out


def paired(d: list, resamples: int = 10_000) -> tuple:
    n = len(d)
    mean = sum(d) / n
    rng = random.Random(0)
    boots = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo, hi = boots[int(0.025 * resamples)], boots[int(0.975 * resamples) - 1]
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    se = math.sqrt(var / n)
    p = math.erfc(abs(mean / se) / math.sqrt(2)) if se > 0 else (1.0 if mean == 0 else 0.0)
    return mean, lo, hi, p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant", type=Path)
    ap.add_argument("reference", type=Path)
    ap.add_argument("--label", default="", help="first column of every row")
    args = ap.parse_args()
    a, b = rows(args.variant), rows(args.reference)
    names = dict(CHOICE_METRICS) | {v: v for v in METRICS.values()}
    groups = sorted({(t, m) for (t, m, _) in a})
    for task, metric in groups:
        d = [a[k] - b[k] for k in a if k[:2] == (task, metric) and k in b]
        if len(d) < 2:
            continue
        mean, lo, hi, p = paired(d)
        verdict = "not distinguishable" if lo <= 0 <= hi else ("variant higher" if lo > 0 else "variant lower")
        print(
            f"| {args.label} | {task} | {names[metric]} | {len(d)} | {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] | {p:.2g} | {verdict} |"
        )


if __name__ == "__main__":
    main()

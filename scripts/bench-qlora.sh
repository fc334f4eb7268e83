#!/usr/bin/env bash
# QLoRA against LoRA on the float base, side by side: `pruneforge bench train` (4 x 256
# tokens, r 16, alpha 32, all seven projections, AdamW) once per base format, the formats
# alternated for ROUNDS rounds, each in its own process so that its peak RSS is its own.
# Prints step time (median of the timed steps), tokens/s, peak RSS and the quantized bytes.
# Usage: scripts/bench-qlora.sh [ROUNDS] [FORMATS...]   (default: 2 rounds; float q4_1 nf4 q8_0)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
shift || true
formats=("$@")
[ ${#formats[@]} -eq 0 ] && formats=(float q4_1 nf4 q8_0)
bin=${PRUNEFORGE_BIN:-target/release/pruneforge}
out=$(mktemp -d)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) threads"
for r in $(seq 1 "$rounds"); do
  for f in "${formats[@]}"; do
    args=()
    [ "$f" != float ] && args=(--base-quantization "$f")
    "$bin" bench --log-format json --json "$out/$f-$r.json" train --repeats 5 "${args[@]}" >/dev/null 2>"$out/$f-$r.log"
  done
done
python3 - "$out" "$rounds" "${formats[@]}" <<'PY'
import json, sys, statistics
out, rounds, formats = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(f"{'base':6} {'run':>3} {'step s':>7} {'tok/s':>7} {'loaded RSS MiB':>14} {'peak RSS MiB':>12} {'quantized MiB':>13} {'foreign cores':>13} {'loss first->last':>17}")
for f in formats:
    for r in range(1, rounds + 1):
        j = json.load(open(f"{out}/{f}-{r}.json"))
        q = j.get("quantized_base")
        qm = f"{q['bytes'] / 2**20:.1f}" if q else "-"
        fc = statistics.median(j["foreign_cores"]) if j["foreign_cores"] else float("nan")
        print(f"{f:6} {r:>3} {j['median_s']:7.3f} {j['tok_s']:7.1f} {j['loaded_rss_bytes'] / 2**20:14.0f} {j['peak_rss_bytes'] / 2**20:12.0f} {qm:>13} {fc:13.2f} {j['losses'][0]:8.4f}->{j['losses'][-1]:.4f}")
PY
rm -rf "$out"

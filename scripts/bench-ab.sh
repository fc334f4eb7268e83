#!/usr/bin/env bash
# Two pruneforge binaries (e.g. before and after a change) alternated on the same work items,
# on this machine, so that a change is measured against the drift of a shared machine: forward
# 8x128, greedy decoding at batch 1/8/16 (64 new tokens) and a LoRA step 4x256 r16. f32, 2
# threads. Each round runs every item with both binaries (A first in odd rounds, B first in
# even ones) and records the CPU the hypervisor took meanwhile (steal ticks in /proc/stat).
# It prints each run, the ratio B/A of the medians over all runs, and over the quiet runs only
# (less than 0.1 core stolen; busy runs are marked *).
#
# Usage: scripts/bench-ab.sh A_BINARY B_BINARY [ROUNDS (default 3)] [OUT_DIR]
# Environment: MODEL (default the f32 import bench-vs-pytorch.sh makes), SHARED (../shared).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -ge 2 ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
A="$1"; B="$2"; ROUNDS="${3:-3}"; OUT="${4:-$(mktemp -d)}"
for b in "$A" "$B"; do [ -x "$b" ] || { echo "bench-ab: not an executable: $b" >&2; exit 1; }; done
SHARED="${SHARED:-$ROOT/../shared}"
MODEL="${MODEL:-${PRUNEFORGE_CACHE:-$HOME/.cache/pruneforge}/smollm2-135m-instruct-hf}"
HELDOUT="$SHARED/reference/heldout_ids.safetensors"
[ -f "$MODEL/model.safetensors" ] || { echo "bench-ab: no f32 model in $MODEL (run scripts/bench-vs-pytorch.sh --setup-only, or set MODEL)" >&2; exit 1; }
[ -f "$HELDOUT" ] || { echo "bench-ab: missing $HELDOUT (set SHARED)" >&2; exit 1; }
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2
mkdir -p "$OUT"
steal() { awk '/^cpu /{print $9}' /proc/stat; }
LOG="$OUT/steal.log"; : >"$LOG"
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order=(a b); else order=(b a); fi
  for side in "${order[@]}"; do
    if [ "$side" = a ]; then bin="$A"; else bin="$B"; fi
    common=("$bin" bench --model "$MODEL")
    for item in fwd gen1 gen8 gen16 train; do
      json="$OUT/$item-$side-$r.json"
      s0=$(steal); t0=$(date +%s.%N)
      case $item in
        fwd) "${common[@]}" --device cpu --dtype f32 --json "$json" forward --batch 8 --seq 128 --repeats 5 ;;
        gen*) "${common[@]}" --device cpu --dtype f32 --json "$json" generate --batch "${item#gen}" --new-tokens 64 --repeats 2 ;;
        train) "${common[@]}" --json "$json" train --batch 4 --seq 256 --rank 16 --alpha 32 --dropout 0 --repeats 3 --tokens "$HELDOUT" ;;
      esac >"$OUT/$item-$side-$r.log" 2>&1 || { tail -5 "$OUT/$item-$side-$r.log" >&2; exit 1; }
      s1=$(steal); t1=$(date +%s.%N)
      echo "$item $side $r $(awk -v a="$s0" -v b="$s1" -v t="$t0" -v u="$t1" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", (b-a)/hz/(u-t)}')" | tee -a "$LOG" >&2
    done
  done
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
steal = {tuple(l.split()[:3]): float(l.split()[3]) for l in open(f"{out}/steal.log")}
rows = [("fwd", "forward 8×128 with LM head", "tok_s"), ("gen1", "decode, batch 1", "decode_tok_s"),
        ("gen8", "decode, batch 8", "decode_tok_s"), ("gen16", "decode, batch 16", "decode_tok_s"),
        ("gen16", "generate, batch 16, incl. prefill", "tok_s"), ("train", "LoRA step 4×256 r16", "tok_s")]
print("| work item (tok/s) | A: runs | B: runs | B/A, all runs | B/A, quiet runs (n A, n B) |")
print("|---|---|---|---|---|")
med = statistics.median
for item, label, key in rows:
    runs = {s: [(json.load(open(f"{out}/{item}-{s}-{r}.json"))[key], steal[(item, s, str(r))])
                for r in range(1, rounds + 1)] for s in "ab"}
    quiet = {s: [x for x, st in runs[s] if st < 0.1] for s in "ab"}
    fmt = lambda v: " / ".join(f"{x:.1f}" + ("*" if st >= 0.1 else "") for x, st in v)
    q = (f"{med(quiet['b']) / med(quiet['a']):.2f} ({len(quiet['a'])}, {len(quiet['b'])})"
         if quiet["a"] and quiet["b"] else "no quiet pair")
    print(f"| {label} | {fmt(runs['a'])} | {fmt(runs['b'])} | "
          f"{med([x for x, _ in runs['b']]) / med([x for x, _ in runs['a']]):.2f} | {q} |")
PY

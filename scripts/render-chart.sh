#!/usr/bin/env bash
# Renders and checks the Helm chart offline with Helm's own Go SDK (PyPI helm-python-sdk, which
# ships libhelm_c.so: Helm v4's template engine, values.schema.json validation and lint) and
# validates every manifest with kubernetes-validate (Kubernetes 1.32, strict).
#
#   scripts/render-chart.sh [--install] [OUTDIR]
#
# $PYTHON    the interpreter (default python3).
# --install  first installs the pinned Python tools with pip (CI does this in scripts/test.sh).
# OUTDIR     where the rendered scenarios go (default: target/chart-render): one file per
#            charts/pruneforge/ci/<scenario>-values.yaml, plus crds.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
PIP_PACKAGES=('helm-python-sdk==0.2.2' 'kubernetes-validate==1.*' 'jsonschema==4.*' 'PyYAML==6.*')

if [ "${1:-}" = "--install" ]; then
  shift
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
fi

command -v "$PYTHON" >/dev/null || { echo "error: $PYTHON not found: install Python 3" >&2; exit 2; }
exec "$PYTHON" scripts/chart_tool.py render "${1:-target/chart-render}"

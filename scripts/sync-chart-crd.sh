#!/usr/bin/env bash
# Copies the generated CRD into the Helm chart (charts/pruneforge/crds/, installed by Helm before
# the templates). Run it after regenerating crds/pruneforge.dev_prunedistilljobs.yaml;
# the test chart_crd_is_the_generated_crd_byte_for_byte (tests/tests/chart.rs) fails until then.
#   scripts/sync-chart-crd.sh           copy
#   scripts/sync-chart-crd.sh --check   exit 1 when the chart's copy differs
set -euo pipefail
cd "$(dirname "$0")/.."
src=crds/pruneforge.dev_prunedistilljobs.yaml
dst=charts/pruneforge/crds/pruneforge.dev_prunedistilljobs.yaml
if [ "${1:-}" = "--check" ]; then
  if cmp -s "$src" "$dst"; then echo "chart CRD is up to date"; exit 0; fi
  echo "error: $dst differs from $src; run scripts/sync-chart-crd.sh" >&2
  exit 1
fi
mkdir -p "$(dirname "$dst")"
cp "$src" "$dst.tmp" && mv "$dst.tmp" "$dst"
echo "copied $src -> $dst"

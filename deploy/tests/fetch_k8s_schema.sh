#!/usr/bin/env bash
# Installs the npm packages that deploy/tests/check_k8s.cjs uses to check the Kubernetes manifests
# against Kubernetes' OpenAPI schemas: kubernetes-models 4.5.1 and
# @kubernetes-models/prometheus-operator 4.4.4 (the schemas, compiled to ajv validators) and
# js-yaml 4.1.0, at the exact versions and checksums of deploy/tests/k8s-schema/package-lock.json,
# with `npm ci` from the npm registry. Idempotent: returns at once when that lock file is already
# installed. Called by scripts/setup.sh; skipped (with a note) where node or npm is missing, and
# then deploy_k8s_test skips.
#
# Usage: fetch_k8s_schema.sh [CACHE_DIR]
#   CACHE_DIR defaults to $RHYTHM_CACHE_DIR, else $HOME/.cache/rhythm. The packages land in
#   CACHE_DIR/k8s-schema/node_modules, the default $RHYTHM_K8S_SCHEMA_DIR of deploy_k8s_test.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "fetch_k8s_schema: node or npm not found; the Kubernetes schema test will skip" >&2
  exit 0
fi

CACHE_DIR=${1:-${RHYTHM_CACHE_DIR:-$HOME/.cache/rhythm}}
DEST="$CACHE_DIR/k8s-schema"
STAMP="$DEST/.installed"
WANT=$(sha256sum k8s-schema/package.json k8s-schema/package-lock.json | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -d "$DEST/node_modules/kubernetes-models" ]; then
  exit 0
fi

mkdir -p "$DEST"
rm -rf "$DEST/node_modules" "$STAMP"
cp k8s-schema/package.json k8s-schema/package-lock.json "$DEST/"
echo "fetch_k8s_schema: npm ci in $DEST"
(cd "$DEST" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
echo "$WANT" >"$STAMP"
echo "fetch_k8s_schema: installed kubernetes-models into $DEST/node_modules"

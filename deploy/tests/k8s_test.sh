#!/usr/bin/env bash
# CTest deploy_k8s_test: the Kubernetes manifests (deploy/k8s/) against Kubernetes' schemas and
# their cross-references (check_k8s.cjs), then each container's command line through rhythm's own
# config loader (--print-config), with the ConfigMap's file in place of /etc/rhythm/rhythm.yaml.
# Needs node and the packages of fetch_k8s_schema.sh (scripts/setup.sh installs them); exits 77
# (CTest: skipped) only when those are missing.
# Env: RHYTHM_K8S_SCHEMA_DIR (default $HOME/.cache/rhythm/k8s-schema), RHYTHM_BIN_DIR.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=${RHYTHM_BIN_DIR:-$repo/build/bin}
modules=${RHYTHM_K8S_SCHEMA_DIR:-${RHYTHM_CACHE_DIR:-$HOME/.cache/rhythm}/k8s-schema}/node_modules
if ! command -v node >/dev/null; then echo "SKIP: node not found"; exit 77; fi
if [ ! -d "$modules/kubernetes-models" ]; then
  echo "SKIP: $modules has no kubernetes-models (run deploy/tests/fetch_k8s_schema.sh)"; exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node "$repo/deploy/tests/check_k8s.cjs" "$modules" "$repo" "$tmp/args"

n=0
for f in "$tmp"/args/*.json; do
  # The command line, one argument a line, with the config file of the repository.
  mapfile -t argv < <(/usr/bin/python3 -c '
import json, sys
a = json.load(open(sys.argv[1]))
print("\n".join(x.replace("/etc/rhythm/rhythm.yaml", sys.argv[2]) for x in a))' \
    "$f" "$repo/deploy/config/rhythm.yaml")
  prog=${argv[0]}
  args=("${argv[@]:1}")
  # --resume names the run directory; --print-config exits before it is touched.
  if ! out=$("$bin/$prog" "${args[@]}" --print-config 2>&1); then
    echo "FAIL: $(basename "$f" .json): $prog ${args[*]}: $out"; exit 1
  fi
  n=$((n + 1))
done
[ "$n" -ge 2 ] || { echo "FAIL: expected the learner's and the actors' command lines"; exit 1; }
echo "deploy_k8s_test: manifests valid; $n command lines accepted by rhythm's config loader"

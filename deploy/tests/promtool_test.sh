#!/usr/bin/env bash
# CTest deploy_promtool_test: Prometheus' own checker on the shipped files. `promtool check
# config` (the compose scrape configuration and the rule file it loads), `promtool check rules`,
# and `promtool test rules` (rhythm-alerts_test.yml: every alert fires when, and only when, it
# should). Exits 77 (CTest: skipped) only when promtool is missing.
set -euo pipefail
dir=$(cd "$(dirname "$0")/../prometheus" && pwd)
if ! command -v promtool >/dev/null; then echo "SKIP: promtool not found (apt-get install prometheus)"; exit 77; fi
cd "$dir"
promtool check config prometheus.yml
promtool check rules rhythm-alerts.yml
promtool test rules rhythm-alerts_test.yml

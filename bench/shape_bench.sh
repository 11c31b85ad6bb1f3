#!/usr/bin/env bash
# Times `rhythm shape` on 10,000 responses x 512 tokens (the Credit assignment issue's target:
# under 10 s on a 2-core machine). Usage: bench/shape_bench.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
input=${TMPDIR:-/tmp}/rhythm_shape_bench_10000x512.jsonl
if [ ! -s "$input" ]; then
  /usr/bin/python3 bench/make_shape_input.py "$input" --responses 10000 --tokens 512
fi
for strategy in none coupled; do
  /usr/bin/time -f "$strategy: %e s wall, %M KB max RSS" \
    "$BUILD_DIR/bin/rhythm" shape --input "$input" --output /dev/null --strategy "$strategy"
done

#!/usr/bin/env bash
# ctest's short fuzz run of one target (fuzz/ctest.cmake):
#   fuzz/run_fuzz_test.sh <fuzz build dir> <target> <seconds>
# Runs build/fuzz/bin/fuzz_<target> for <seconds> from a copy of fuzz/corpus/<target>/ (the
# committed seeds are never modified). Exit 0 when libFuzzer ran the time out without a
# finding; non-zero on any crash, abort, sanitizer report, leak, slow input (> 10 s) or
# out-of-memory (> 2 GB), with the input saved under <fuzz build dir>/artifacts/<target>/.
# Exit 77 (ctest SKIP_RETURN_CODE) when the target is not built: scripts/setup.sh builds
# build/fuzz only where clang++-14 is installed.
set -euo pipefail
build=$1 target=$2 seconds=$3
bin="$build/bin/fuzz_$target"
seeds="$(cd "$(dirname "$0")" && pwd)/corpus/$target"
if [ ! -x "$bin" ]; then
  echo "SKIP: $bin is not built (needs clang++-14; scripts/setup.sh builds it)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$build/artifacts/$target"
cp "$seeds"/* "$work/corpus/"
set +e
"$bin" "$work/corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$build/artifacts/$target/" >"$work/log" 2>&1
rc=$?
set -e
# Progress lines go to the log; the verdict, the final stats and any report are printed.
grep -vE '^#[0-9]+.*(NEW|REDUCE|pulse)' "$work/log" | tail -n 60
if [ "$rc" -ne 0 ]; then
  echo "FAIL: fuzz_$target exited $rc; the input is under $build/artifacts/$target/"
  echo "reproduce: $bin $build/artifacts/$target/<file>"
  exit 1
fi
grep -E '^#[0-9]+.*DONE' "$work/log" | tail -n 1
exit 0

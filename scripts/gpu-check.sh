#!/usr/bin/env bash
# Builds and runs rhythm's GPU checks on a machine with an NVIDIA GPU, a driver, and CUDA + NCCL
# under /usr/local/cuda (or NCCL_ROOT / CUDA_HOME): the NCCL probe and broadcast self-test
# (nccl_test) and the NCCL weight-transport backend (nccl_group_test: a one-rank round trip
# through device memory on one GPU; learner -> actor broadcast, bit-exact, with two GPUs).
# Debian's LibTorch (CPU) is enough for those: the NCCL path is raw NCCL and the CUDA runtime.
#
# When the LibTorch the build found has CUDA (TORCH_DIR=<libtorch>/share/cmake/Torch picks one;
# the binaries' own --check-config decides), it then runs a short loop: a learner on cuda:0 and
# one actor until the learner has trained LOOP_STEPS steps (default 20), and prints tokens/s and weight-sync
# GB/s from their /metrics. Weights go over NCCL when the actor has a GPU of its own (two or
# more GPUs: the actor on cuda:1); NCCL refuses two ranks on one GPU, so on one GPU both
# processes share cuda:0 and weights go over gRPC. Both compute in bf16 (model.dtype; the
# learner steps fp32 masters; LOOP_DTYPE=dtype_fp32 for fp32), and the loop also prints the
# learner's train/infer log-prob mismatch.
# Usage: scripts/gpu-check.sh   (build folder: build-gpu; override with BUILD_DIR)
#        LOOP_DEVICE=cpu runs the loop on the CPU instead (a dry run of its plumbing, any build,
#        no GPU needed: the GPU tests then only report that they skip);
#        LOOP_SET="key=value ..." adds settings to both processes (e.g. a smaller batch).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
LOOP_STEPS=${LOOP_STEPS:-20}
LOOP_DTYPE=${LOOP_DTYPE:-dtype_bf16}
if [ "${LOOP_DEVICE:-}" != cpu ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || {
    echo "gpu-check: nvidia-smi failed: no usable GPU here" >&2
    exit 1
  }
fi
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRHYTHM_WITH_NCCL=ON \
    ${TORCH_DIR:+-DTorch_DIR="$TORCH_DIR"}
fi
cmake --build "$BUILD_DIR" -j "${JOBS:-$(nproc)}" \
  --target nccl_test nccl_group_test rhythm-learner rhythm-actor
ctest --test-dir "$BUILD_DIR" -L gpu --output-on-failure
# The tests print SKIPPED where a check needs more GPUs than this machine has.
"$BUILD_DIR/bin/nccl_group_test" --gtest_brief=0 | grep -E "OK|SKIPPED|FAILED"

bin=$BUILD_DIR/bin
rc=0
"$bin/rhythm-learner" --check-config --set runtime.device=cuda:0 || rc=$?
if [ "${LOOP_DEVICE:-}" = cpu ]; then
  # A dry run of the loop's plumbing on the CPU (any build): same processes and metrics.
  echo "gpu-check: LOOP_DEVICE=cpu: the loop runs on the CPU"
elif [ "$rc" -eq 3 ]; then
  echo "gpu-check: this build's LibTorch is CPU-only; no learner/actor loop" \
       "(rebuild with TORCH_DIR=<CUDA LibTorch>/share/cmake/Torch BUILD_DIR=<new folder>)"
  exit 0
elif [ "$rc" -ne 0 ]; then
  echo "gpu-check: rhythm-learner refuses runtime.device=cuda:0 (exit $rc)" >&2
  exit 1
fi

gpus=$(nvidia-smi -L 2>/dev/null | wc -l || echo 0)
learner_device=cuda:0
if [ "${LOOP_DEVICE:-}" = cpu ]; then learner_device=cpu actor_device=cpu transport=grpc
elif [ "$gpus" -ge 2 ]; then actor_device=cuda:1 transport=nccl
else actor_device=cuda:0 transport=grpc; fi
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
# Waits up to $2 seconds for file $1 to contain a line matching $3; prints that line.
await_line() {
  for _ in $(seq 1 "$(( $2 * 10 ))"); do
    if grep -m1 -E "$3" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "gpu-check: no '$3' in $1 after $2 s:" >&2; tail -20 "$1" >&2; return 1
}
# True while process $1 runs (kill -0 also succeeds on an exited child not yet reaped).
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]; }
# The value of the first sample of metric $2 (optionally with label text $3) at port $1.
metric() {
  exec 5<>"/dev/tcp/127.0.0.1/$1"
  printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&5
  grep -E "^$2(\{[^}]*${3:-}[^}]*\})? " <&5 | head -1 | awk '{print $2}'
  exec 5<&-
}
common=(--config deploy/config/rhythm.yaml --set "transport.kind=$transport"
        --set "model.dtype=$LOOP_DTYPE")
# The loop measures throughput, not learning: a fresh tiny model's groups all score 0, and the
# default drops zero-variance groups, so no step would ever run.
for kv in credit.drop_zero_variance_groups=false ${LOOP_SET:-}; do common+=(--set "$kv"); done
"$bin/rhythm-learner" "${common[@]}" --set "runtime.device=$learner_device" \
  --set "learner.run_dir=$tmp/run" --set learner.address=127.0.0.1:0 \
  --set learner.metrics_address=127.0.0.1:0 \
  >"$tmp/learner.out" 2>"$tmp/learner.err" &
pids+=($!)
line=$(await_line "$tmp/learner.out" 300 "listening on") || exit 1
lport=$(echo "$line" | awk '{print $4}') lmetrics=$(echo "$line" | awk '{print $6}')
"$bin/rhythm-actor" "${common[@]}" --set "runtime.device=$actor_device" \
  --set "actor.learner_address=127.0.0.1:$lport" --set actor.metrics_address=127.0.0.1:0 \
  >"$tmp/actor.out" 2>"$tmp/actor.err" &
pids+=($!)
line=$(await_line "$tmp/actor.out" 300 " metrics ") || exit 1
ametrics=$(echo "$line" | awk '{print $NF}')
# Sample the metrics until the learner has trained LOOP_STEPS steps, then stop both (SIGTERM:
# the learner checkpoints and exits 0).
learner_tps="" actor_tps="" sync="" steps=0 start=$SECONDS
while [ "${steps%.*}" -lt "$LOOP_STEPS" ]; do
  for i in 0 1; do
    if ! alive "${pids[$i]}"; then
      echo "gpu-check: the $([ "$i" = 0 ] && echo learner || echo actor) exited:" >&2
      tail -20 "$tmp/$([ "$i" = 0 ] && echo learner || echo actor).err" >&2; exit 1
    fi
  done
  if [ $((SECONDS - start)) -gt 600 ]; then
    echo "gpu-check: $steps of $LOOP_STEPS steps in 600 s" >&2; exit 1
  fi
  sleep 1
  v=$(metric "$lmetrics" rhythm_learner_steps_total || true); steps=${v:-0}
  v=$(metric "$lmetrics" rhythm_learner_tokens_per_second || true); learner_tps=${v:-$learner_tps}
  v=$(metric "$ametrics" rhythm_actor_tokens_per_second || true); actor_tps=${v:-$actor_tps}
  v=$(metric "$ametrics" rhythm_actor_weight_sync_gbps "$transport" || true); sync=${v:-$sync}
  v=$(metric "$lmetrics" rhythm_learner_logprob_mismatch_mean || true); mm_mean=${v:-${mm_mean:-}}
  v=$(metric "$lmetrics" rhythm_learner_logprob_mismatch_max || true); mm_max=${v:-${mm_max:-}}
  v=$(metric "$lmetrics" rhythm_learner_logprob_mismatch_tokens_total || true); mm_n=${v:-${mm_n:-}}
done
kill -TERM "${pids[@]}"
wait "${pids[0]}" || { echo "gpu-check: the learner failed to stop:" >&2; tail -20 "$tmp/learner.err" >&2; exit 1; }
echo "gpu-check loop: $LOOP_STEPS steps, learner $learner_device, actor $actor_device," \
     "weights $transport, $LOOP_DTYPE"
fmt() { if [ -n "$1" ]; then printf "%.${2}f" "$1"; else printf n/a; fi; }
echo "  learner tokens/s $(fmt "$learner_tps" 0)   actor tokens/s $(fmt "$actor_tps" 0)" \
     "  sync GB/s $(fmt "$sync" 3) (last sync, rhythm_actor_weight_sync_gbps)"
# Measured only on rollouts at staleness 0 (LOOP_SET=trainer.max_staleness=0 trains only those).
echo "  log-prob mismatch mean $(fmt "${mm_mean:-}" 6) max $(fmt "${mm_max:-}" 6) nats over" \
     "$(fmt "${mm_n:-}" 0) tokens (rhythm_learner_logprob_mismatch_*)"

#!/usr/bin/env bash
# Builds and runs rhythm's GPU checks on a machine with an NVIDIA GPU, a driver, and CUDA + NCCL
# under /usr/local/cuda (or NCCL_ROOT / CUDA_HOME): the NCCL probe and broadcast self-test
# (nccl_test) and the NCCL weight-transport backend (nccl_group_test: a one-rank round trip
# through device memory on one GPU; learner -> actor broadcast, bit-exact, with two GPUs).
# Debian's LibTorch (CPU) is enough: the NCCL path is raw NCCL and the CUDA runtime.
# Usage: scripts/gpu-check.sh   (build folder: build-gpu; override with BUILD_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || {
  echo "gpu-check: nvidia-smi failed: no usable GPU here" >&2
  exit 1
}
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRHYTHM_WITH_NCCL=ON
fi
cmake --build "$BUILD_DIR" -j "${JOBS:-$(nproc)}" --target nccl_test nccl_group_test
ctest --test-dir "$BUILD_DIR" -L gpu --output-on-failure
# The tests print SKIPPED where a check needs more GPUs than this machine has.
"$BUILD_DIR/bin/nccl_group_test" --gtest_brief=0 | grep -E "OK|SKIPPED|FAILED"

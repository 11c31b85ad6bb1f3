#include "common/runtime.h"

#include "ATen/Parallel.h"
#include "gtest/gtest.h"

namespace rhythm::common {
namespace {

TEST(Runtime, SetsExplicitThreadCount) {
  v1::RuntimeConfig config;
  config.set_torch_threads(1);
  RuntimeInfo info = InitRuntime(config);
  EXPECT_EQ(info.torch_threads, 1);
  EXPECT_EQ(at::get_num_threads(), 1);
  config.set_torch_threads(0);  // 0 = all available cores
  info = InitRuntime(config);
  EXPECT_EQ(info.torch_threads, CoresAvailable());
  EXPECT_EQ(at::get_num_threads(), CoresAvailable());
}

TEST(Runtime, FindsTheLoadedBlas) {
  RuntimeInfo info = InitRuntime(v1::RuntimeConfig());
  // LibTorch links libblas.so.3, so some BLAS must be found and classified.
  EXPECT_NE(info.blas_library, "");
  EXPECT_EQ(info.blas_kind, ClassifyBlas(info.blas_library));
  EXPECT_EQ(info.torch_version.rfind("1.", 0), 0u) << info.torch_version;
}

TEST(Runtime, ClassifiesBlasAlternatives) {
  EXPECT_EQ(ClassifyBlas("/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3"),
            "openblas-openmp");
  EXPECT_EQ(ClassifyBlas("/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"),
            "openblas-pthread");
  EXPECT_EQ(ClassifyBlas("/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0"), "reference");
  EXPECT_EQ(ClassifyBlas(""), "unknown");
}

}  // namespace
}  // namespace rhythm::common

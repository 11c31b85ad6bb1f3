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

TEST(Runtime, ResolvesDevicesAndRefusesWhatThisBuildCannotRun) {
  absl::StatusOr<c10::Device> cpu = ResolveDevice("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_TRUE(cpu->is_cpu());
  absl::StatusOr<c10::Device> bad = ResolveDevice("gpu0");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("runtime.device = 'gpu0'"), std::string::npos);
  absl::StatusOr<c10::Device> cuda = ResolveDevice("cuda:0");
  if (!cuda.ok()) {  // Debian's LibTorch, or a machine without that GPU
    EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(cuda.status().message().find("runtime.device = 'cuda:0'"), std::string::npos);
  }
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

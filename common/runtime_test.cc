#include "common/runtime.h"

#include <cstdlib>

#include "ATen/ATen.h"
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

// On a CPU with AVX-512 the kernels in use afterwards are AVX-512 ones, whatever OpenBLAS chose
// by the model number, and a GEMM still computes the product.
TEST(Runtime, SwitchesOpenBlasToTheKernelsTheCpuSupports) {
  if (BlasCore().empty()) GTEST_SKIP() << "BLAS is not OpenBLAS";
  const bool user_chose = std::getenv("OPENBLAS_CORETYPE") != nullptr;
  UseTheCpusBlasKernels();
  const std::string core = BlasCore();
  __builtin_cpu_init();
  if (!user_chose && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl")) {
    EXPECT_TRUE(core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids") << core;
  }
  const at::Tensor a = at::randn({64, 96}, at::kDouble), b = at::randn({96, 80}, at::kDouble);
  const at::Tensor want = at::mm(a, b);
  EXPECT_LT((at::mm(a.to(at::kFloat), b.to(at::kFloat)).to(at::kDouble) - want).abs().max()
                .item<double>(),
            1e-3);
  UseTheCpusBlasKernels();  // a second call changes nothing
  EXPECT_EQ(BlasCore(), core);
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

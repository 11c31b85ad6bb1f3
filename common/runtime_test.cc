#include "common/runtime.h"

#include <algorithm>
#include <cstdlib>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "ATen/detail/CUDAHooksInterface.h"
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
  absl::StatusOr<c10::Device> meta = ResolveDevice("meta");
  EXPECT_EQ(meta.status().code(), absl::StatusCode::kInvalidArgument);
  for (const std::string name : {"cuda:0", "cuda", "cuda:7"}) {
    absl::StatusOr<c10::Device> cuda = ResolveDevice(name);
    if (!LibTorchHasCuda()) {  // Debian's LibTorch: the capability, not a GPU, is missing
      EXPECT_EQ(cuda.status().code(), absl::StatusCode::kUnimplemented) << name;
      EXPECT_NE(cuda.status().message().find("CPU-only"), std::string::npos);
      EXPECT_NE(cuda.status().message().find("deploy/Dockerfile.cuda"), std::string::npos);
    } else if (cuda.ok()) {  // a CUDA LibTorch with that GPU: always an explicit index
      EXPECT_TRUE(cuda->is_cuda());
      EXPECT_TRUE(cuda->has_index());
      EXPECT_LT(cuda->index(), at::detail::getCUDAHooks().getNumGPUs());
    } else {  // a CUDA LibTorch on a machine without that GPU
      EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition) << name;
    }
    if (!cuda.ok()) {
      EXPECT_NE(cuda.status().message().find("runtime.device = '" + name + "'"), std::string::npos);
    }
  }
  if (LibTorchHasCuda() && at::hasCUDA()) {
    EXPECT_EQ(ResolveDevice("cuda").value(), c10::Device(c10::DeviceType::CUDA, 0));
  }
}

// --check-config's one line and exit status: 0 valid, 2 refused, 3 needs the CUDA image.
TEST(Runtime, ConfigCheckPrintsOneLineAndItsExitStatus) {
  v1::RhythmConfig config;
  config.mutable_runtime()->set_device("cpu");
  testing::internal::CaptureStdout();
  EXPECT_EQ(FinishConfigCheck("prog", config, absl::OkStatus(), "tiny model"), 0);
  EXPECT_EQ(testing::internal::GetCapturedStdout(),
            "prog: configuration OK: tiny model, device cpu\n");

  testing::internal::CaptureStderr();
  EXPECT_EQ(FinishConfigCheck("prog", config, absl::InvalidArgumentError("task.kind = 'x'"), ""),
            2);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "prog: task.kind = 'x'\n");

  config.mutable_runtime()->set_device("gpu0");
  testing::internal::CaptureStderr();
  EXPECT_EQ(FinishConfigCheck("prog", config, absl::OkStatus(), ""), 2);
  EXPECT_NE(testing::internal::GetCapturedStderr().find("runtime.device = 'gpu0'"),
            std::string::npos);

  // A CUDA device: 3 on a CPU-only LibTorch, but a refused validation still wins (2).
  config.mutable_runtime()->set_device("cuda:0");
  testing::internal::CaptureStderr();
  EXPECT_EQ(FinishConfigCheck("prog", config, absl::InvalidArgumentError("bad"), ""), 2);
  testing::internal::GetCapturedStderr();
  if (!LibTorchHasCuda()) {
    testing::internal::CaptureStderr();
    EXPECT_EQ(FinishConfigCheck("prog", config, absl::OkStatus(), ""), kCheckConfigNeedsCuda);
    const std::string line = testing::internal::GetCapturedStderr();
    EXPECT_EQ(line.rfind("prog: needs the CUDA image: runtime.device = 'cuda:0'", 0), 0u) << line;
    EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << line;
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

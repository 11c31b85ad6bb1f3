#include "common/runtime.h"

#include <dlfcn.h>
#include <link.h>
#include <malloc.h>
#include <sched.h>
#include <stdlib.h>


#include <cstdlib>
#include <iostream>
#include <string>

#include "ATen/Context.h"
#include "ATen/Parallel.h"
#include "ATen/detail/CUDAHooksInterface.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "c10/core/impl/DeviceGuardImplInterface.h"
#include "common/torch_status.h"
#include "absl/strings/match.h"
#include "common/logging.h"
#include "torch/version.h"

namespace rhythm::common {
namespace {

// dl_iterate_phdr callback: records the first loaded object whose name contains "libblas".
int FindBlas(struct dl_phdr_info* info, size_t, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (info->dlpi_name != nullptr && absl::StrContains(info->dlpi_name, "libblas")) {
    char resolved[PATH_MAX];
    *out = realpath(info->dlpi_name, resolved) != nullptr ? resolved : info->dlpi_name;
    return 1;
  }
  return 0;
}

LogSeverity ToSeverity(v1::LogLevel level) {
  switch (level) {
    case v1::LOG_LEVEL_DEBUG:
      return LogSeverity::kDebug;
    case v1::LOG_LEVEL_WARNING:
      return LogSeverity::kWarning;
    case v1::LOG_LEVEL_ERROR:
      return LogSeverity::kError;
    default:
      return LogSeverity::kInfo;
  }
}

}  // namespace

int CoresAvailable() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return 1;
}

bool LibTorchHasCuda() { return c10::impl::hasDeviceGuardImpl(c10::DeviceType::CUDA); }

absl::StatusOr<c10::Device> ResolveDevice(const std::string& name) {
  absl::StatusOr<c10::Device> device = TorchTry("device", [&] { return c10::Device(name); });
  if (!device.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("runtime.device = '", name, "' is not a device (cpu, cuda:N)"));
  }
  if (device->is_cpu()) return c10::Device(c10::DeviceType::CPU);
  if (!device->is_cuda()) {
    return absl::InvalidArgumentError(
        absl::StrCat("runtime.device = '", name, "': only cpu and cuda:N are supported"));
  }
  if (!LibTorchHasCuda()) {
    return absl::UnimplementedError(absl::StrCat(
        "runtime.device = '", name,
        "': this build's LibTorch is CPU-only; use the CUDA image (deploy/Dockerfile.cuda) or "
        "build rhythm against a CUDA LibTorch (cmake -DTorch_DIR=<libtorch>/share/cmake/Torch)"));
  }
  const int index = device->has_index() ? device->index() : 0;
  const int gpus = at::hasCUDA() ? at::detail::getCUDAHooks().getNumGPUs() : 0;
  if (index >= gpus) {
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    return absl::FailedPreconditionError(absl::StrCat(
        "runtime.device = '", name, "': this LibTorch has CUDA but ", gpus,
        gpus == 1 ? " GPU is" : " GPUs are", " visible",
        visible != nullptr ? absl::StrCat(" (CUDA_VISIBLE_DEVICES=", visible, ")") : ""));
  }
  return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
}

int FinishConfigCheck(const std::string& program, const v1::RhythmConfig& config,
                      const absl::Status& validation, const std::string& summary) {
  if (!validation.ok()) {
    std::cerr << program << ": " << validation.message() << "\n";
    return 2;
  }
  absl::StatusOr<c10::Device> device = ResolveDevice(config.runtime().device());
  if (device.status().code() == absl::StatusCode::kUnimplemented) {
    std::cerr << program << ": needs the CUDA image: " << device.status().message() << "\n";
    return kCheckConfigNeedsCuda;
  }
  if (!device.ok()) {
    std::cerr << program << ": " << device.status().message() << "\n";
    return 2;
  }
  std::cout << program << ": configuration OK: " << summary << ", device " << device->str()
            << std::endl;
  return 0;
}

std::string ClassifyBlas(const std::string& path) {
  if (path.empty()) return "unknown";
  if (absl::StrContains(path, "openblas-openmp")) return "openblas-openmp";
  if (absl::StrContains(path, "openblas-pthread") || absl::StrContains(path, "openblas-serial")) {
    return "openblas-pthread";
  }
  if (absl::StrContains(path, "/blas/")) return "reference";
  return "unknown";
}

std::string BlasCore() {
  using CoreName = const char* (*)();
  auto get = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const char* name = get != nullptr ? get() : nullptr;
  return name != nullptr ? std::string(name) : std::string();
}

std::string FasterBlasCore() {
  const std::string core = absl::AsciiStrToLower(BlasCore());
  if (core.empty()) return "";
  // Cores with AVX-512 kernels, and with AVX2 (+FMA) ones, in OpenBLAS 0.3.21's names.
  const bool has_avx512 = core == "skylakex" || core == "cooperlake" || core == "sapphirerapids";
  const bool has_avx2 = has_avx512 || core == "haswell" || core == "zen";
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && !has_avx512) {
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !has_avx2) {
    return "Haswell";
  }
  return "";
}

void UseTheCpusBlasKernels() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  const std::string want = FasterBlasCore();
  if (want.empty()) return;
  const std::string core = BlasCore();
  // OpenBLAS's dynamic dispatch: quit drops the kernel table, init picks one again, honouring
  // OPENBLAS_CORETYPE. Both are exported by every DYNAMIC_ARCH build (Debian's).
  using Hook = void (*)();
  auto quit = reinterpret_cast<Hook>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  auto init = reinterpret_cast<Hook>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  if (quit == nullptr || init == nullptr) {
    RHYTHM_LOG(Warning) << "runtime: OpenBLAS chose " << core << " kernels on a CPU that has "
                        << want << "'s; set OPENBLAS_CORETYPE=" << want;
    return;
  }
  setenv("OPENBLAS_CORETYPE", want.c_str(), 1);
  quit();
  init();
}

void KeepFreedMemoryInTheHeap() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

RuntimeInfo InitRuntime(const v1::RuntimeConfig& config) {
  SetMinLogLevel(ToSeverity(config.log_level()));
  RuntimeInfo info;
  info.cores_available = CoresAvailable();
  const int threads = config.torch_threads() > 0 ? config.torch_threads() : info.cores_available;
  at::set_num_threads(threads);
  info.torch_threads = at::get_num_threads();
  dl_iterate_phdr(FindBlas, &info.blas_library);
  info.blas_kind = ClassifyBlas(info.blas_library);
  info.blas_core = BlasCore();
  info.torch_version = TORCH_VERSION;
  RHYTHM_LOG(Info) << "runtime: torch " << info.torch_version << ", " << info.torch_threads
                   << " intra-op threads (" << info.cores_available << " cores available), BLAS "
                   << info.blas_kind << " (" << info.blas_library << ", "
                   << (info.blas_core.empty() ? "core unknown" : info.blas_core + " kernels")
                   << ")";
  if (info.blas_kind == "reference") {
    RHYTHM_LOG(Warning) << "runtime: LibTorch is using the reference BLAS, which makes training "
                           "9-23x slower; install libopenblas0-openmp";
  } else if (info.blas_kind == "openblas-pthread") {
    RHYTHM_LOG(Warning) << "runtime: the pthread OpenBLAS fights torch's OpenMP threads "
                           "(generation ~4x slower); install libopenblas0-openmp instead";
  } else if (const std::string faster = FasterBlasCore(); !faster.empty()) {
    RHYTHM_LOG(Warning) << "runtime: OpenBLAS runs its " << info.blas_core
                        << " kernels on a CPU that has " << faster
                        << "'s; OPENBLAS_CORETYPE=" << faster
                        << " makes GEMMs up to 5x faster (README \"Benchmarks\")";
  } else if (info.blas_kind == "unknown") {
    RHYTHM_LOG(Warning) << "runtime: could not identify the BLAS library ('"
                        << info.blas_library << "'); performance may suffer";
  }
  return info;
}

}  // namespace rhythm::common

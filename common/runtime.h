// Process start-up for every rhythm binary: torch threads, log level, and the BLAS check.
//
// LibTorch starts with one intra-op thread on these machines, and Debian's LibTorch runs on the
// reference BLAS (9-23x slower training) unless OpenBLAS-openmp is the libblas.so.3 alternative
// (not the pthread build, which fights torch's OpenMP threads). InitRuntime sets the thread
// count explicitly, finds the BLAS library actually loaded, logs both, and warns when the BLAS
// is not OpenBLAS-openmp.
// Call once from main, after the config is loaded and before any torch work or thread start.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "c10/core/Device.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::common {

struct RuntimeInfo {
  // Intra-op threads torch now uses.
  int torch_threads = 0;
  // CPUs this process may run on (sched_getaffinity).
  int cores_available = 0;
  // Resolved path of the loaded libblas.so.3 (e.g. .../openblas-openmp/libblas.so.3), or "".
  std::string blas_library;
  // What kind of BLAS that is: "openblas-openmp", "openblas-pthread", "reference", "unknown".
  std::string blas_kind;
  // The OpenBLAS kernel set in use (BlasCore()).
  std::string blas_core;
  // LibTorch's version string.
  std::string torch_version;
};

// Applies `config` (threads, log level) and returns what is in effect. Logs one INFO line and a
// WARNING when the BLAS is slow or oversubscribes threads.
RuntimeInfo InitRuntime(const v1::RuntimeConfig& config);

// CPUs available to this process.
int CoresAvailable();

// The one place a device name becomes a device, for the learner, the actors and the `rhythm`
// subcommands that take runtime.device. The rule is capability, not policy: "cpu" always, and
// "cuda" / "cuda:N" whenever the linked LibTorch has CUDA (at::hasCUDA()) and N is below the
// visible GPU count ("cuda" means cuda:0; the result always has an index).
// Errors, each naming runtime.device and its value:
//   INVALID_ARGUMENT     not a device name torch parses, or a device type other than cpu/cuda;
//   UNIMPLEMENTED        this build's LibTorch is CPU-only (Debian's is): the message says how
//                        to get a CUDA build (deploy/Dockerfile.cuda, or -DTorch_DIR=<CUDA
//                        LibTorch>). The same command line runs in the CUDA image;
//   FAILED_PRECONDITION  the LibTorch has CUDA but the GPU index is not visible here (no driver,
//                        CUDA_VISIBLE_DEVICES, or N >= the GPU count).
absl::StatusOr<c10::Device> ResolveDevice(const std::string& name);

// True when the linked LibTorch was built with CUDA (its CUDA device guard is registered),
// whether or not a GPU is visible. Debian's LibTorch: false.
bool LibTorchHasCuda();

// Exit status of a binary's --check-config for a configuration that is valid except that it
// names a CUDA device and this build's LibTorch is CPU-only: "needs the CUDA image".
inline constexpr int kCheckConfigNeedsCuda = 3;

// The end of a binary's --check-config (flags and config already parsed; no model loading, no
// network): `validation` is the binary's own checks of `config`; runtime.device is resolved
// last. Prints ONE line and returns the exit status:
//   0  "<program>: configuration OK: <summary>, device <D>" on stdout;
//   2  "<program>: <the first problem>" on stderr (validation or device);
//   3  "<program>: needs the CUDA image: <why>" on stderr (kCheckConfigNeedsCuda), only when
//      validation passed and the device's only fault is a CPU-only LibTorch.
int FinishConfigCheck(const std::string& program, const v1::RhythmConfig& config,
                      const absl::Status& validation, const std::string& summary);

// OpenBLAS picks its kernels by the CPU's model number, and Debian 12's OpenBLAS 0.3.21 does
// not know recent Xeons: on the Sapphire Rapids these benchmarks ran on it chose "Prescott"
// (SSE3) kernels, whose GEMM peak is a fifth of its AVX-512 ones (README "Benchmarks").
// FasterBlasCore() names the kernels the CPU could run (SkylakeX for AVX-512, Haswell for AVX2)
// when OpenBLAS picked older ones, else "". InitRuntime warns about it.
std::string FasterBlasCore();

// When OPENBLAS_CORETYPE is unset and FasterBlasCore() names kernels, sets OPENBLAS_CORETYPE and
// has OpenBLAS choose its kernels again. Does nothing when the core is right, the user chose one
// (OPENBLAS_CORETYPE=Prescott measures what it costs), or the BLAS is not OpenBLAS. Call first
// thing in main, before any BLAS call or thread start. The benchmarks call it; rhythm's own
// mains do not: other kernels sum in another order, and on this machine that moved the default
// warm start's rise past its 5,000 steps (README "Benchmarks"), so the kernels are the user's
// choice (OPENBLAS_CORETYPE).
void UseTheCpusBlasKernels();

// glibc returns every freed block above its mmap threshold to the kernel, so each training step
// page-faults its activations back in: 13% of a bench_peer_shape train step's samples were in
// the kernel (page faults, clearing pages), 6% after this. Keeps blocks up to 32 MB in the heap
// (M_MMAP_THRESHOLD) and freed memory up to 1 GB unreleased (M_TRIM_THRESHOLD), so steady-state
// steps reuse memory. Call first thing in main.
void KeepFreedMemoryInTheHeap();

// The OpenBLAS core in use ("SkylakeX", "Prescott", ...), or "" when the BLAS is not OpenBLAS.
std::string BlasCore();

// Classifies a resolved BLAS library path (see RuntimeInfo::blas_kind).
std::string ClassifyBlas(const std::string& resolved_path);

}  // namespace rhythm::common

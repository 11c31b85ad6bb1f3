// CUDA and NCCL return codes as absl::Status, with the call site. For the NCCL-only sources
// (built with RHYTHM_WITH_NCCL); include after cuda_runtime.h and nccl.h.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#define RHYTHM_CUDA_CHECK(expr)                                                              \
  do {                                                                                       \
    cudaError_t e_ = (expr);                                                                 \
    if (e_ != cudaSuccess) {                                                                 \
      return absl::InternalError(                                                            \
          absl::StrCat(__FILE__, ":", __LINE__, ": ", #expr, ": ", cudaGetErrorString(e_))); \
    }                                                                                        \
  } while (0)

// ncclInProgress counts as success: non-blocking communicators finish asynchronously.
#define RHYTHM_NCCL_CHECK(expr)                                                              \
  do {                                                                                       \
    ncclResult_t r_ = (expr);                                                                \
    if (r_ != ncclSuccess && r_ != ncclInProgress) {                                         \
      return absl::InternalError(                                                            \
          absl::StrCat(__FILE__, ":", __LINE__, ": ", #expr, ": ", ncclGetErrorString(r_))); \
    }                                                                                        \
  } while (0)

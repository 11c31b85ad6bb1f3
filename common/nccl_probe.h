// What the NCCL path can use on this machine. Built only with RHYTHM_WITH_NCCL.
//
// The weight-transport issue builds the NCCL broadcast group on top of this; for now it answers
// "is there a usable GPU and NCCL?" without throwing or aborting on machines with a CUDA toolkit
// but no driver (these build machines), and runs a one-GPU broadcast as a smoke check.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace rhythm::common {

struct NcclInfo {
  // ncclGetVersion(), e.g. 22809 for 2.28.9.
  int nccl_version = 0;
  // CUDA devices visible to this process.
  int cuda_devices = 0;
};

// FAILED_PRECONDITION (with CUDA's reason) when there is no usable GPU; callers and tests skip.
absl::StatusOr<NcclInfo> ProbeNccl();

// Broadcasts `count` floats from rank 0 across `ranks` communicators on `ranks` GPUs of this
// process (ncclCommInitAll) and returns OK when every rank received rank 0's data.
absl::Status NcclBroadcastSelfTest(int ranks, int64_t count);

}  // namespace rhythm::common

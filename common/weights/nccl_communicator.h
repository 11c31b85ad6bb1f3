// NCCL backend of Communicator: raw NCCL with non-blocking communicators, built only with
// RHYTHM_WITH_NCCL. Rendezvous: rank 0's ncclUniqueId (128 bytes), handed to members over the
// learner's gRPC control plane (Weights.WeightGroup). Each broadcast runs on a dedicated CUDA
// stream; completion is polled with a CUDA event while ncclCommGetAsyncError is watched, and a
// peer that dies or hangs past the timeout gets the communicator aborted (ncclCommAbort), so no
// rank blocks forever; teardown aborts too (destroy would synchronise with ranks that may be
// gone). Buffers are staged through device memory (Communicator speaks host
// memory; Debian's LibTorch has no CUDA tensors to broadcast from in place).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/weights/communicator.h"

namespace rhythm::common::weights {

// FAILED_PRECONDITION when there is no usable GPU (callers fall back to gRPC; tests skip).
absl::StatusOr<std::unique_ptr<CommunicatorFactory>> NewNcclFactory(
    const CollectiveOptions& options);

}  // namespace rhythm::common::weights

// A model's parameters as one flat byte buffer: how weights travel from the learner to actors
// (gRPC chunks today; the collective transports broadcast the same buffer). Parameters are laid
// out in name order, each as contiguous little-endian fp32 or bf16; TensorSpecs record names,
// shapes and offsets so the receiver can check its model matches before copying anything.
// On a GPU (a LibTorch with CUDA and a model on cuda:N) both directions go through one pinned
// host buffer and a side stream that first waits for the model's current stream; both return
// after that stream is synchronised. On a CPU build the plain copies run and no CUDA call is made.
// Stateless; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/model/transformer.h"
#include "rhythm/v1/weights.pb.h"

namespace rhythm::common::model {

struct FlatWeights {
  std::vector<v1::TensorSpec> tensors;
  std::string bytes;
  v1::WireDType dtype = v1::WIRE_DTYPE_FP32;
};

FlatWeights FlattenWeights(const Transformer& model, v1::WireDType dtype);

// Copies `bytes` into `model`'s parameters. INVALID_ARGUMENT naming the tensor when a name,
// shape or offset does not match the model, or the buffer is the wrong size; the model is left
// untouched in that case (everything is checked before anything is copied).
absl::Status ApplyFlatWeights(const std::vector<v1::TensorSpec>& tensors,
                              const std::string& bytes, v1::WireDType dtype, Transformer& model);

}  // namespace rhythm::common::model

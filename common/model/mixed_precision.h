// Mixed precision for training: fp32 master weights beside a model that computes in bf16.
//
//   masters (fp32) ──CopyTo──▶ compute model (bf16): forward, backward ──AccumulateGrads──▶
//   master grads (fp32; after each micro-batch, so that the sum over micro-batches is fp32)
//   ─ clip, AdamW on the masters (fp32 moments) ─ CopyTo ─ …
//
// The compute model is the one every caller sees (Transformer, its dtype bf16); the masters are
// fp32 copies of its parameters by Hugging Face name, on its device, and are what the optimiser
// steps. Without them a bf16 parameter would absorb only updates above half its unit in the last
// place (2^-8 relative): AdamW steps of lr 1e-6 on weights near 1 would all round away.
// CopyTo rounds each master to the nearest bf16. Plain tensor operations, no I/O.
// Not thread-safe: the training thread that owns the model owns this.
#pragma once

#include <memory>

#include "common/model/safetensors.h"
#include "common/model/transformer.h"

namespace rhythm::common::model {

class MasterWeights {
 public:
  // fp32 copies of `compute`'s parameters (exact: every bf16 value is an fp32 value), leaf
  // tensors without gradients yet.
  static std::unique_ptr<MasterWeights> From(const Transformer& compute);

  // The masters by Hugging Face name (the same names and shapes as compute's), float32: hand
  // these to AdamW / ShardedAdamW. Their storage is this object's.
  const TensorMap& parameters() const { return masters_; }

  // master.grad += float32(compute.grad) for every parameter that has a gradient (a master
  // without one yet takes it as it is), then drops compute's gradients, so the next backward
  // starts from zero: call it after every micro-batch's backward, and the gradients of a
  // mini-batch add up in fp32 rather than in bf16. Clearing the masters' gradients is the
  // optimiser's (AdamW::ZeroGrad).
  void AccumulateGrads(Transformer& compute) const;
  // Drops compute's gradients (an abandoned step).
  static void DropGrads(Transformer& compute);
  // compute.param = round-to-nearest(master) for every parameter, no autograd.
  void CopyTo(Transformer& compute) const;

 private:
  explicit MasterWeights(TensorMap masters) : masters_(std::move(masters)) {}
  TensorMap masters_;
};

}  // namespace rhythm::common::model

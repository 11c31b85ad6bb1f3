// AdamW (decoupled weight decay, bias-corrected moments) on ATen, for the learner's trainer and
// `rhythm sft`. Its state is named tensors ("<param>.exp_avg", "<param>.exp_avg_sq"), so a
// checkpoint is a safetensors file and torch/optim never enters the build.
// Not thread-safe: one training thread owns it and the parameters.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model/safetensors.h"

namespace rhythm::common::model {

// The fp32 master of parameter P (mixed precision) in a named state: "P" + kMasterSuffix.
inline constexpr char kMasterSuffix[] = ".master";

class AdamW {
 public:
  struct Options {
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;
  };
  // `params` (name, tensor) are the model's own leaf tensors; their .grad() is read by Step.
  AdamW(const TensorMap& params, const Options& options);

  // One update with learning rate `lr` from the current gradients (parameters without a
  // gradient are skipped).
  void Step(double lr);
  // Drops every gradient.
  void ZeroGrad();
  // Global L2 norm of the gradients.
  double GradNorm() const;
  // Multiplies every gradient by `scale`.
  void ScaleGrads(double scale);

  int64_t steps() const { return steps_; }
  TensorMap State() const;
  // INVALID_ARGUMENT naming the tensor when the state does not fit the parameters.
  absl::Status Restore(const TensorMap& state, int64_t steps);

 private:
  Options options_;
  int64_t steps_ = 0;
  std::vector<std::string> names_;
  std::vector<at::Tensor> params_, exp_avg_, exp_avg_sq_;
};

// AdamW with its state sharded across `world` data-parallel ranks (ZeRO stage 1), the same
// update as AdamW element by element. The parameters, in name order, are laid end to end as one
// flat vector of N elements, padded to world * S with S = ceil(N / world); rank r owns elements
// [r * S, (r + 1) * S) and holds the moments of those only (2 S floats: 1/world of AdamW's 2 N).
// A step is, on every rank:
//
//   FlatGrads() ─ (the caller all-reduces them) ─ Step(lr, flat) -> this rank's new shard [S]
//     ─ (the caller all-gathers the shards) ─ SetParams(full [world * S])
//
// This class does no communication; learner/rank_group.h does. Every parameter takes part in
// every step (one without a gradient counts as a zero gradient: AdamW skips it instead; the
// trainer's parameters all have gradients).
//
// Parameters in bf16 (mixed precision): the fp32 masters are sharded too. Rank r keeps the fp32
// master of its S elements (so a rank holds 3 S floats of state, not 2 S plus N masters);
// AccumulateGrads after every backward sums the gradients in fp32; Step updates the master
// shard; SetParams rounds the gathered masters into the parameters and keeps this rank's
// shard of them. Not thread-safe: one training thread owns it.
class ShardedAdamW {
 public:
  // `params` (name, tensor) are the model's own leaf tensors, identical in name and shape on
  // every rank; 0 <= rank < world.
  ShardedAdamW(const TensorMap& params, const AdamW::Options& options, int rank, int world);

  int64_t numel() const { return total_; }        // N
  int64_t shard_size() const { return shard_; }   // S
  int64_t shard_begin() const { return begin_; }  // rank * S
  int64_t steps() const { return steps_; }

  // True when the parameters are not fp32: this rank then keeps the fp32 master shard.
  bool keeps_masters() const { return master_.defined(); }

  // Adds the parameters' gradients (as fp32) into this step's flat gradient and drops them,
  // so that the next backward starts from zero: after every micro-batch's backward.
  void AccumulateGrads();
  // The step's gradients as one float [world * S] vector, the ones accumulated plus any still
  // on the parameters (zero where a parameter has none, and in the padding); the next step
  // accumulates afresh.
  at::Tensor FlatGrads();
  // The parameters as one float [world * S] vector (bf16 parameters: their fp32 values, not
  // the masters).
  at::Tensor FlatParams() const;
  // One update of this rank's moments (and master shard) from `flat_grads` (float
  // [world * S], the all-reduced gradients); returns this rank's updated parameters (fp32
  // masters with bf16 parameters), float [S].
  at::Tensor Step(double lr, const at::Tensor& flat_grads);
  // Copies `flat` (float [>= N], every rank's shard after an all-gather) into the parameters,
  // rounding when they are bf16; this rank's master shard becomes its slice of `flat`.
  void SetParams(const at::Tensor& flat);
  // Drops every gradient, accumulated ones included.
  void ZeroGrad();

  // This rank's state, float [S] each: {"exp_avg", "exp_avg_sq"} and, with masters, "master"
  // (views: clone to keep).
  TensorMap LocalState() const;
  // INVALID_ARGUMENT when `state` is not LocalState()'s shape.
  absl::Status RestoreLocal(const TensorMap& state, int64_t steps);
  // AdamW::State()'s names and shapes from every rank's moments laid end to end (float
  // [>= N] each, e.g. all-gathered), plus "<param>.master" from `flat_master` when it is
  // given: the world-size-independent form checkpoints hold.
  TensorMap NamedState(const at::Tensor& flat_exp_avg, const at::Tensor& flat_exp_avg_sq,
                       const at::Tensor& flat_master = at::Tensor()) const;
  // Takes this rank's slice of a named state (AdamW::State()'s form, from any world size),
  // and with masters its "<param>.master" slice (the parameters' own values when the state
  // has none). INVALID_ARGUMENT naming the tensor when one is missing or misshapen.
  absl::Status RestoreNamed(const TensorMap& state, int64_t steps);
  // A named state's moments as flat float [world * S] vectors (for a broadcast to the ranks).
  absl::StatusOr<std::pair<at::Tensor, at::Tensor>> FlattenNamed(const TensorMap& state) const;
  // Its "<param>.master" entries as one flat float [world * S] vector; NOT_FOUND when it has
  // none, INVALID_ARGUMENT naming one that is missing or misshapen.
  absl::StatusOr<at::Tensor> FlattenMasters(const TensorMap& state) const;

 private:
  at::TensorOptions FloatOn() const;  // float on the parameters' device
  // This rank's slice of FlatParams, float [S], without building the whole vector.
  at::Tensor ShardParams() const;
  // A named state's "<param>" + suffix entries laid end to end, float [world * S];
  // INVALID_ARGUMENT naming the first that is missing or misshapen.
  absl::StatusOr<at::Tensor> FlattenSuffix(const TensorMap& state, const char* suffix) const;

  AdamW::Options options_;
  int64_t steps_ = 0;
  std::vector<std::string> names_;
  std::vector<at::Tensor> params_;
  std::vector<int64_t> offsets_;
  int64_t total_ = 0, shard_ = 0, begin_ = 0, world_ = 1;
  at::Tensor exp_avg_, exp_avg_sq_;  // float [S]
  at::Tensor master_;                // float [S] with bf16 parameters, else undefined
  at::Tensor grad_acc_;              // float [world * S]: AccumulateGrads' sum, or undefined
};

}  // namespace rhythm::common::model

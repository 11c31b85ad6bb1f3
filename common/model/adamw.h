// AdamW (decoupled weight decay, bias-corrected moments) on ATen, for the learner's trainer and
// `rhythm sft`. Its state is named tensors ("<param>.exp_avg", "<param>.exp_avg_sq"), so a
// checkpoint is a safetensors file and torch/optim never enters the build.
// Not thread-safe: one training thread owns it and the parameters.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/model/safetensors.h"

namespace rhythm::common::model {

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

}  // namespace rhythm::common::model

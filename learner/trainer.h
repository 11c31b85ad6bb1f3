// Trainer: one policy-gradient step per batch of complete groups, with the paper's token-level
// credit (docs/method.md §7-§9).
//
//   groups ─ rewards ─ group advantages (GRPO / Dr.GRPO / RLOO)
//          ─ summaries (WAAD, FAI, entropy) ─ gamma per token (strategy) ─┐
//          ─ shaped advantages A~ = gamma * A ◀───────────────────────────┘
//          ─ old log-probs: the current weights, recomputed once, no grad
//          ─ for each of `mini_batches` chunks: micro-batches (forward, clipped loss, backward,
//            gradients accumulate) ─ global-norm clip ─ AdamW (warm-up) ─ next chunk
//          ─ version + 1
// AdamW is common/model/adamw.h: its state is named tensors for checkpoints.
// Not thread-safe: one trainer thread owns it and the model's parameters.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/adamw.h"
#include "common/model/transformer.h"
#include "learner/batch_assembler.h"
#include "learner/step_stats.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::learner {

class Trainer {
 public:
  // `model` must outlive the trainer; the trainer sets requires_grad on its parameters.
  // INVALID_ARGUMENT for settings it cannot honour (kl_coef > 0 needs a reference policy,
  // which is not implemented yet).
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(common::model::Transformer& model,
                                                         const v1::TrainerConfig& trainer,
                                                         const v1::CreditConfig& credit,
                                                         uint64_t seed, int64_t version,
                                                         double sampling_temperature = 1.0);

  absl::StatusOr<StepStats> Step(const std::vector<Group>& batch);

  int64_t version() const { return version_; }
  int64_t optimizer_steps() const { return optimizer_.steps(); }

  // AdamW moments by "<param>.exp_avg" / "<param>.exp_avg_sq", for checkpoints.
  common::model::TensorMap OptimizerState() const;
  absl::Status RestoreOptimizerState(const common::model::TensorMap& state,
                                     int64_t optimizer_steps, int64_t version);

 private:
  Trainer(common::model::Transformer& model, const v1::TrainerConfig& trainer,
          const v1::CreditConfig& credit, uint64_t seed, int64_t version, double temperature);

  common::model::Transformer& model_;
  const v1::TrainerConfig config_;
  const v1::CreditConfig credit_;
  const uint64_t seed_;
  // The actors' sampling temperature: log-probs are taken at it, so importance ratios compare
  // like with like (top-k / top-p filtering is not replayed).
  const double temperature_;
  int64_t version_;
  common::model::AdamW optimizer_;
};

}  // namespace rhythm::learner

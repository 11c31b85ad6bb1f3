// Trainer: one policy-gradient step per batch of complete groups, with the paper's token-level
// credit (docs/method.md §7-§9).
//
//   groups ─ rewards ─ group advantages (GRPO / Dr.GRPO / RLOO)         (BuildSequences)
//          ─ old log-probs: the current weights, recomputed once, no grad  (OldLogprobs)
//            └ with learner summaries: the tapped layers' maps of that pass ─ WAAD, FAI under
//              pi_old, per sequence (common/rollout/attention_summary.h SummaryFromMaps)
//          ─ summaries (actor's or learner's: credit.summary_source), entropy
//            ─ gamma per token (strategy) ─ shaped advantages A~ = gamma * A  (CreditPerResponse)
//            └ with credit.summary_agreement: actor vs learner summary per rollout
//          ─ for each of `mini_batches` chunks: micro-batches (forward, clipped loss, backward,
//            gradients accumulate) ─ global-norm clip ─ AdamW (warm-up) ─ next chunk (Update)
//          ─ version + 1
// The learner's summaries need the old-log-prob pass's attention maps, so the credit comes
// after it; with the actor's summaries the order changes nothing (the two are independent).
// AdamW is common/model/adamw.h: its state is named tensors for checkpoints.
// Not thread-safe: one trainer thread owns it and the model's parameters.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/adamw.h"
#include "common/model/transformer.h"
#include "common/rollout/attention_summary.h"
#include "learner/batch_assembler.h"
#include "learner/step_stats.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::learner {

class Trainer {
 public:
  // `model` must outlive the trainer; the trainer sets requires_grad on its parameters.
  // `tap` is the actors' tap settings (GenerationOptionsFromConfig(generation).tap): the
  // learner's summaries (credit.summary_source = learner, or credit.summary_agreement) are
  // computed with them, so both sources follow one definition. INVALID_ARGUMENT for settings
  // it cannot honour: kl_coef > 0 (needs a reference policy, not implemented yet), an
  // unspecified summary_source, tap settings that do not fit the model (only checked when
  // learner summaries are needed).
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(
      common::model::Transformer& model, const v1::TrainerConfig& trainer,
      const v1::CreditConfig& credit, uint64_t seed, int64_t version,
      double sampling_temperature = 1.0, const common::rollout::TapOptions& tap = {});

  // One step on `batch`. INVALID_ARGUMENT for an empty batch or inputs the credit or loss
  // reject (a summary that does not fit its response); torch errors as TorchCall maps them.
  // On error the weights may have been partly updated (not the version).
  absl::StatusOr<StepStats> Step(const std::vector<Group>& batch);

  int64_t version() const { return version_; }
  int64_t optimizer_steps() const { return optimizer_.steps(); }

  // AdamW moments by "<param>.exp_avg" / "<param>.exp_avg_sq", for checkpoints.
  common::model::TensorMap OptimizerState() const;
  absl::Status RestoreOptimizerState(const common::model::TensorMap& state,
                                     int64_t optimizer_steps, int64_t version);

  // One response, ready for the loss: defined and used in trainer.cc only.
  struct Sequence;

 private:
  Trainer(common::model::Transformer& model, const v1::TrainerConfig& trainer,
          const v1::CreditConfig& credit, uint64_t seed, int64_t version, double temperature,
          common::rollout::TapOptions tap);

  // Group advantages and one Sequence per rollout (ids, behaviour log-probs, staleness);
  // the batch's reward, accuracy, entropy and staleness figures into `stats`.
  absl::Status BuildSequences(const std::vector<Group>& batch, std::vector<Sequence>& seqs,
                              StepStats& stats) const;
  // Old log-probs under the weights that start the step, micro-batch by micro-batch, no grad;
  // with learner summaries the same pass captures the tapped layers and summarises each
  // sequence that needs one.
  absl::Status OldLogprobsAndSummaries(std::vector<Sequence>& seqs) const;
  // Gamma, the preplan / anchor masks and the shaped advantages of every sequence, from the
  // configured source's summary; with summary_agreement, the agreement of the two sources.
  absl::Status CreditPerResponse(std::vector<Sequence>& seqs, StepStats& stats) const;
  // The mini-batch updates (clipped loss, backward, clip, AdamW) and the loss statistics.
  absl::Status Update(std::vector<Sequence>& seqs, StepStats& stats);

  common::model::Transformer& model_;
  const v1::TrainerConfig config_;
  const v1::CreditConfig credit_;
  const uint64_t seed_;
  // The actors' sampling temperature: log-probs are taken at it, so importance ratios compare
  // like with like (top-k / top-p filtering is not replayed).
  const double temperature_;
  // Resolved against the model when learner summaries are needed; unused otherwise.
  const common::rollout::TapOptions tap_;
  int64_t version_;
  common::model::AdamW optimizer_;
};

}  // namespace rhythm::learner

// Trainer: one policy-gradient step per batch of complete groups, with the paper's token-level
// credit (docs/method.md §7-§9).
//
//   groups ─ rewards (+ DAPO overlong penalty)                           (BuildSequences)
//          ─ old log-probs: the current weights, recomputed once, no grad  (OldLogprobs)
//            ├ with the actors' top-k / top-p: the same filter replayed on the learner's logits
//            ├ with kl_coef > 0: the frozen reference's log-probs, same micro-batches, no grad
//            └ with learner summaries: the tapped layers' maps of that pass ─ WAAD, FAI under
//              pi_old, per sequence (common/rollout/attention_summary.h SummaryFromMaps)
//          ─ rewards (- KL to the reference, kl_placement reward) ─ group advantages
//            (GRPO / Dr.GRPO / RLOO); loss masks: truncated responses, tokens outside the
//            replayed filter, IcePop token and sequence masks          (AdvantagesAndMasks)
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
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/adamw.h"
#include "common/model/transformer.h"
#include "common/rollout/attention_summary.h"
#include "learner/batch_assembler.h"
#include "learner/step_stats.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::learner {

// What the trainer takes from the actors' generation config besides the temperature and taps.
struct ActorSettings {
  // The sampler's filter (generation.top_k, top_p): replayed on the learner's logits for the
  // old and the trained log-probs, so pi_old / pi_behaviour compares like with like. 0 and 1
  // replay nothing (as greedy sampling, temperature 0, does not filter).
  int64_t top_k = 0;
  double top_p = 1.0;
  // generation.max_new_tokens: L_max of the overlong penalty (trainer.overlong_buffer > 0 needs
  // it); 0 = unknown.
  int64_t max_new_tokens = 0;

  static ActorSettings FromConfig(const v1::GenerationConfig& generation);
};

class Trainer {
 public:
  // `model` must outlive the trainer; the trainer sets requires_grad on its parameters.
  // `tap` is the actors' tap settings (GenerationOptionsFromConfig(generation).tap): the
  // learner's summaries (credit.summary_source = learner, or credit.summary_agreement) are
  // computed with them, so both sources follow one definition. `actor`: the sampler's filter
  // and length limit (ActorSettings::FromConfig(generation)).
  //
  // With kl_coef > 0 the trainer keeps a frozen reference policy: trainer.reference_path (a
  // Hugging Face directory of the same architecture and shape, loaded in the model's dtype and
  // device), or else a copy of `model` as it is now (the warm start or the resumed checkpoint).
  // It costs one more copy of the weights and one more forward per step (no grad).
  //
  // INVALID_ARGUMENT, naming the field and its value, for settings it cannot honour: an
  // unspecified summary_source, kl_estimator, kl_placement or ratio_level; mask bounds that
  // cross or would mask on-policy tokens (a low bound >= 1, a high bound <= 1); overlong_buffer
  // > 0 without max_new_tokens or above it; top_k < 0 or top_p outside (0, 1]; a
  // reference_path that does not load or whose model differs from `model`'s shape (the error
  // names the file); tap settings that do not fit the model (only checked when learner
  // summaries are needed).
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(
      common::model::Transformer& model, const v1::TrainerConfig& trainer,
      const v1::CreditConfig& credit, uint64_t seed, int64_t version,
      double sampling_temperature = 1.0, const common::rollout::TapOptions& tap = {},
      const ActorSettings& actor = {});

  // One step on `batch`. INVALID_ARGUMENT for an empty batch or inputs the credit or loss
  // reject (a summary that does not fit its response); torch errors as TorchCall maps them.
  // On error the weights may have been partly updated (not the version).
  // A step whose loss or gradient norm is not finite in any mini-batch (a reward of 1e308
  // overflows the group's statistics to inf) is not an error: it returns OK with
  // StepStats::skipped_reason set, the weights, the AdamW moments and step count as they were
  // before the step, and the version unchanged. The mini-batches before the failing one are
  // undone from a copy taken at the step's start (only with trainer.mini_batches > 1).
  absl::StatusOr<StepStats> Step(const std::vector<Group>& batch);

  int64_t version() const { return version_; }
  int64_t optimizer_steps() const { return optimizer_.steps(); }

  // AdamW moments by "<param>.exp_avg" / "<param>.exp_avg_sq", for checkpoints.
  common::model::TensorMap OptimizerState() const;
  absl::Status RestoreOptimizerState(const common::model::TensorMap& state, int64_t optimizer_steps,
                                     int64_t version);

  // One response, ready for the loss: defined and used in trainer.cc only.
  struct Sequence;

 private:
  Trainer(common::model::Transformer& model, const v1::TrainerConfig& trainer,
          const v1::CreditConfig& credit, uint64_t seed, int64_t version, double temperature,
          common::rollout::TapOptions tap, ActorSettings actor,
          std::unique_ptr<common::model::Transformer> reference);

  // One Sequence per rollout (ids, behaviour log-probs, staleness, reward with the overlong
  // penalty); the batch's reward, accuracy, entropy, staleness and overlong figures into
  // `stats`.
  absl::Status BuildSequences(const std::vector<Group>& batch, std::vector<Sequence>& seqs,
                              StepStats& stats) const;
  // Old log-probs under the weights that start the step, micro-batch by micro-batch, no grad
  // (with the sampler's filter replayed); the reference's log-probs in the same micro-batches
  // and each response's summed KL to it; with learner summaries the same pass captures the
  // tapped layers and summarises each sequence that needs one.
  absl::Status OldLogprobsAndSummaries(std::vector<Sequence>& seqs, StepStats& stats) const;
  // Group advantages from the final rewards (less the reference KL with kl_placement reward),
  // and every sequence's loss mask (truncated, outside the filter, IcePop and sequence masks)
  // with their counts and the TIS weight figures.
  absl::Status AdvantagesAndMasks(std::vector<Sequence>& seqs, size_t groups,
                                  StepStats& stats) const;
  // Gamma, the preplan / anchor masks and the shaped advantages of every sequence, from the
  // configured source's summary; with summary_agreement, the agreement of the two sources.
  absl::Status CreditPerResponse(std::vector<Sequence>& seqs, StepStats& stats) const;
  // The mini-batch updates (clipped loss, backward, clip, AdamW) and the loss statistics.
  absl::Status Update(std::vector<Sequence>& seqs, StepStats& stats);

  common::model::Transformer& model_;
  const v1::TrainerConfig config_;
  const v1::CreditConfig credit_;
  const uint64_t seed_;
  // The actors' sampling temperature: log-probs are taken at it (and the filter in actor_
  // replayed), so importance ratios compare like with like.
  const double temperature_;
  // Resolved against the model when learner summaries are needed; unused otherwise.
  const common::rollout::TapOptions tap_;
  const ActorSettings actor_;
  // The frozen reference policy (kl_coef > 0), never trained; null otherwise.
  const std::unique_ptr<common::model::Transformer> reference_;
  int64_t version_;
  common::model::AdamW optimizer_;
};

}  // namespace rhythm::learner

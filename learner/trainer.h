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

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/adamw.h"
#include "common/model/mixed_precision.h"
#include "common/model/transformer.h"
#include "common/rollout/attention_summary.h"
#include "learner/batch_assembler.h"
#include "learner/step_stats.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::learner {

class RankGroup;

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
  //
  // `ranks` (not owned, outlives the trainer): this process's data-parallel group
  // (learner/rank_group.h); null or world_size 1 = training alone.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(
      common::model::Transformer& model, const v1::TrainerConfig& trainer,
      const v1::CreditConfig& credit, uint64_t seed, int64_t version,
      double sampling_temperature = 1.0, const common::rollout::TapOptions& tap = {},
      const ActorSettings& actor = {}, RankGroup* ranks = nullptr);
  // Rank 0 tells the other ranks to stop (StopRanks).
  ~Trainer();

  // One step on `batch`. INVALID_ARGUMENT for an empty batch or inputs the credit or loss
  // reject (a summary that does not fit its response); torch errors as TorchCall maps them.
  // On error the weights may have been partly updated (not the version).
  // A step whose loss or gradient norm is not finite in any mini-batch (a reward of 1e308
  // overflows the group's statistics to inf) is not an error: it returns OK with
  // StepStats::skipped_reason set, the weights, the AdamW moments and step count as they were
  // before the step, and the version unchanged. The mini-batches before the failing one are
  // undone from a copy taken at the step's start (only with trainer.mini_batches > 1).
  //
  // Data-parallel (`ranks` with world_size > 1, learner/rank_group.h): every rank runs the
  // steps before the update on the whole batch (they are cheap beside it and deterministic);
  // rank r then computes the gradients of sequences r, r + N, r + 2N, ... of each mini-batch
  // (the loss divides by the mini-batch's global token or response count, so the sum over the
  // ranks is the one-rank gradient), the gradients are all-reduced in buckets, each rank
  // updates its shard of the AdamW state (ZeRO stage 1: common/model/adamw.h ShardedAdamW) and
  // the shards are all-gathered into every rank's weights. The guard decides together: a
  // non-finite loss on any rank skips the step on all. On rank 0, Step first hands the batch to
  // the other ranks (FollowRank0); a failed collective is UNAVAILABLE and the learner stops.
  absl::StatusOr<StepStats> Step(const std::vector<Group>& batch);

  int64_t version() const { return version_; }
  int64_t optimizer_steps() const;

  // AdamW moments by "<param>.exp_avg" / "<param>.exp_avg_sq". With ranks, this rank's shard
  // only ({"exp_avg", "exp_avg_sq"}, float [ceil(N / world)]): checkpoints use
  // GatherOptimizerState.
  common::model::TensorMap OptimizerState() const;
  // The full AdamW state in the one-rank form, whatever the world size (what a checkpoint
  // holds, so that --resume may change it), plus, with a bf16 model, copies of the fp32
  // master weights by "<param>.master" (checkpoint.h kMasterSuffix; the checkpoint's model/
  // holds them rounded to bf16). With ranks, rank 0 commands the others and gathers their
  // shards; UNAVAILABLE when a rank is gone.
  absl::StatusOr<common::model::TensorMap> GatherOptimizerState();
  // Takes the one-rank form (a checkpoint's) from any world size; with ranks, rank 0 hands the
  // other ranks their shards before the next step. "<param>.master" entries, when there are
  // any, replace the weights: the masters of a bf16 model (which is then rounded from them), or
  // the fp32 model's own weights when a bf16 run resumes in fp32. INVALID_ARGUMENT, with
  // nothing changed, when one is missing, misshapen or non-finite.
  absl::Status RestoreOptimizerState(const common::model::TensorMap& state, int64_t optimizer_steps,
                                     int64_t version);
  // Elements of AdamW state this process holds (exp_avg + exp_avg_sq): 2 N for N parameters
  // alone, 2 ceil(N / world) per rank; with ranks and a bf16 model also the fp32 master shard,
  // 3 ceil(N / world) (alone, a bf16 model's N masters are not counted here).
  int64_t optimizer_state_numel() const;

  // Rank 0, with ranks: a heartbeat command when none was sent for the heartbeat interval
  // (min(0.5 s, learner.rank_timeout_s / 4)), so that a dead or hung rank is found while no
  // batch is ready. OK and nothing without ranks.
  absl::Status Heartbeat();
  // Ranks 1 .. N-1: follows rank 0's commands (steps, synchronisation, state gathers) until it
  // says stop (OK) or a collective fails (UNAVAILABLE).
  absl::Status FollowRank0();
  // Rank 0: tells the other ranks to exit (once; best effort).
  void StopRanks();

  // One response, ready for the loss: defined and used in trainer.cc only.
  struct Sequence;

 private:
  Trainer(common::model::Transformer& model, const v1::TrainerConfig& trainer,
          const v1::CreditConfig& credit, uint64_t seed, int64_t version, double temperature,
          common::rollout::TapOptions tap, ActorSettings actor,
          std::unique_ptr<common::model::Transformer> reference, RankGroup* ranks);

  // Step without handing the batch to the other ranks (they call it from FollowRank0).
  absl::StatusOr<StepStats> RunStep(const std::vector<Group>& batch);
  bool sharded() const { return sharded_ != nullptr; }
  // Rank 0: sends the weights, version, optimizer steps and a restored state to the other
  // ranks when they do not have them yet. The others: ReceiveSync.
  absl::Status SyncRanks();
  absl::Status ReceiveSync(bool with_state);
  // Rank 0's frozen reference (kl_coef > 0) to every rank, in place.
  absl::Status BroadcastReference();
  // Every rank: the moment shards gathered on rank 0 (the others get an empty map).
  absl::StatusOr<common::model::TensorMap> GatherShards();
  // RestoreOptimizerState's "<param>.master" entries into the masters (or the fp32 weights).
  absl::Status RestoreWeightsFromMasters(const common::model::TensorMap& state);
  // Rank 0: one command to every rank.
  absl::Status Command(int command, int64_t payload);

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
  // With ranks: every rank's share of the pi_old pass (old and reference log-probs, filter
  // membership, reference KL) to every rank, so each holds them for the whole batch.
  absl::Status ShareOldLogprobs(std::vector<Sequence>& seqs) const;
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
  // With a bf16 model (model.dtype = bf16): fp32 copies of its weights that AdamW steps; after
  // each step they are rounded into the model (common/model/mixed_precision.h), whose bf16
  // weights the learner publishes and checkpoints. Null for an fp32 model.
  std::unique_ptr<common::model::MasterWeights> masters_;
  // One of the two: AdamW alone, or this rank's shard with ranks (world_size > 1).
  std::unique_ptr<common::model::AdamW> optimizer_;
  std::unique_ptr<common::model::ShardedAdamW> sharded_;
  RankGroup* const ranks_;  // null, or world_size > 1; not owned
  // Rank 0: whether the other ranks hold this process's weights and state; the restored state
  // waiting to be handed to them; when the last command went out; whether they were stopped.
  bool synced_ = false;
  common::model::TensorMap pending_state_;
  std::chrono::steady_clock::time_point last_command_{};
  bool stopped_ = false;
};

}  // namespace rhythm::learner

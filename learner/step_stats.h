// StepStats: what one training step reports (learner/trainer.h computes it; the learner's
// metrics and log record it). A plain struct, no dependencies, so readers need not see torch.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace rhythm::learner {

// How closely the actor's summary of one rollout (computed in its decode loop under the
// behaviour policy, sent as fp16) agrees with the learner's (recomputed under pi_old from the
// old-log-prob pass's attention maps), credit.summary_agreement only. NaN = undefined.
struct SummaryAgreement {
  // Trainer version before the step - the oldest version that generated the rollout's tokens
  // (raw version numbers, like StepStats::staleness_mean), at least 0.
  int64_t staleness = 0;
  // Spearman rank correlation of WAAD over the response tokens; NaN when either side is
  // constant (a one-token response).
  double waad_spearman = std::numeric_limits<double>::quiet_NaN();
  // The same for FAI over the tokens where both define it; NaN below two such tokens.
  double fai_spearman = std::numeric_limits<double>::quiet_NaN();
  // Jaccard of the token sets the configured strategy amplifies from each source (same seed):
  // 1 by construction for strategies that ignore the summary (none, random, entropy).
  double selection_jaccard = std::numeric_limits<double>::quiet_NaN();
  // max_t |actor_t - learner_t| / (2^-11 |learner_t| + 1e-5): <= 1 means the two differ by no
  // more than the fp16 rounding of the wire (common/rollout/summary_codec.h). FAI over the
  // tokens both define (0 when none); +inf when the sources disagree on where FAI is defined.
  double waad_fp16_error_ratio = 0;
  double fai_fp16_error_ratio = 0;
  // Whether both sources split the heads alike (the same local and global sets): when the
  // policy moved far enough to reorder two heads' mean distances, WAAD or FAI average other
  // heads and the error ratio is far above 1 though the rankings may still agree.
  bool same_heads = true;
};

struct StepStats {
  int64_t version = 0;  // the version after this step
  int64_t sequences = 0;
  int64_t tokens = 0;   // response tokens trained on
  double loss = 0;
  double clip_fraction = 0;
  double mean_ratio = 0;
  double approx_kl = 0;
  double grad_norm = 0;  // before clipping, last mini-batch
  double lr = 0;
  double reward_mean = 0;
  double accuracy = 0;   // fraction of responses the verifier judged correct
  double entropy_mean = 0;
  double response_length_mean = 0;
  // Current version - oldest token version, per group, by raw numbers (the learner logs and
  // exports staleness along the lineage instead: learner/train_loop.h).
  double staleness_mean = 0;
  double preplan_token_fraction = 0, anchor_token_fraction = 0;
  double preplan_credit_fraction = 0, anchor_credit_fraction = 0;
  // Responses trained with gamma = 1 for lack of a summary (with summary_source = learner the
  // learner computes every one, so this stays 0).
  int64_t missing_summaries = 0;
  // Share of response tokens whose FAI is defined (summaries present); responses whose FAI is
  // undefined at every token (too short for the FAI band: anchor credit cannot act on them).
  double fai_defined_fraction = 0;
  int64_t fai_undefined_responses = 0;
  double amplified_token_fraction = 0;  // share of response tokens with gamma > 1
  // KL to the frozen reference (trainer.kl_coef > 0): the mean over response tokens of the
  // trainer.kl_estimator estimate of KL(pi_old || pi_ref), at the weights that start the step,
  // at the sampling temperature, unfiltered; 0 without a reference.
  double ref_kl = 0;
  // Sequences this process forwarded in the pi_old pass: all of them alone, every world-th
  // with ranks (plus those the learner summarises, which every rank forwards).
  int64_t old_pass_sequences = 0;
  // Truncated importance sampling: pi_old / pi_behaviour over the tokens the loss takes before
  // the off-policy masks (not truncated with mask_truncated, inside the replayed filter): the
  // mean of the raw weight (1 on-policy; below 1 when the actor's filter is not replayed) and
  // the share above trainer.tis_cap.
  double tis_weight_mean = 0;
  double tis_capped_fraction = 0;
  // The train/infer mismatch (common/credit/logprob_mismatch.h) over the response tokens inside
  // the replayed filter of the rollouts at staleness 0, where pi_old is the policy that sampled
  // and only numerics differ (bf16, decode kernels, wire dtype): |old - behaviour| mean and
  // max, and the spread of their TIS weights exp(old - behaviour): stddev, min, max. All 0
  // when the batch has no rollout at staleness 0 (tokens 0).
  int64_t logprob_mismatch_tokens = 0;
  double logprob_mismatch_mean = 0;
  double logprob_mismatch_max = 0;
  double tis_weight_stddev = 0;
  double tis_weight_min = 0;
  double tis_weight_max = 0;
  // Left out of the loss: tokens by the IcePop token mask (token_mask_low / high) in responses
  // the sequence mask kept; responses by the sequence mask (sequence_mask_low / high);
  // responses cut at max_new_tokens (mask_truncated); tokens pi_old's replayed top-k / top-p
  // drops (possible only when the weights moved since sampling: their weight is 0).
  int64_t masked_tokens = 0;
  int64_t masked_sequences = 0;
  int64_t truncated_masked = 0;
  int64_t out_of_filter_tokens = 0;
  // DAPO overlong penalty (trainer.overlong_buffer > 0): responses it penalised, and its mean
  // over the batch's responses (<= 0, added to their rewards).
  int64_t overlong_penalized = 0;
  double overlong_penalty_mean = 0;
  // One entry per rollout that carried an actor summary, with credit.summary_agreement on.
  std::vector<SummaryAgreement> agreement;
  double seconds = 0;
  // The trainer's guard: set when a mini-batch's loss ("non_finite_loss") or gradient norm
  // ("non_finite_grad_norm") was not finite, so the step was abandoned before it could write
  // NaN into the weights or the AdamW moments: both are as they were before the step, and the
  // version did not advance (`version` is the unchanged one). Empty for a step that trained.
  std::string skipped_reason;
  // With skipped_reason: the rollouts behind it, those of the failing mini-batch whose reward,
  // advantage or log-probs are not finite (all of that mini-batch's when none is).
  std::vector<uint64_t> offending_rollout_ids;
  bool skipped() const { return !skipped_reason.empty(); }
};

}  // namespace rhythm::learner

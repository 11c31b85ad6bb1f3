// The learner's Prometheus metrics: one struct built from a registry in main (tests pass a
// fresh registry). Names follow rhythm_learner_<quantity>_<unit>; counters end in _total.
#pragma once

#include <memory>

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "rhythm/v1/learner_service.pb.h"

namespace rhythm::learner {

struct StepStats;  // learner/trainer.h

struct LearnerMetrics {
  explicit LearnerMetrics(prometheus::Registry& registry);

  // One training step's numbers: steps, step time, tokens/s, loss, reward, accuracy, clip,
  // KL, entropy, the credit fractions, FAI coverage and amplified tokens, TIS weights, masks,
  // the reference KL and the overlong penalty, and the summaries'
  // agreement (one histogram observation per rollout and measure; undefined values, NaN, are
  // not observed).
  void RecordStep(const StepStats& s);

  // "0", "1", "2" or "3+": the staleness label of the agreement series.
  static const char* StalenessBucket(int64_t staleness);

  prometheus::Counter& rollouts_received;
  prometheus::Counter& rollouts_accepted;
  prometheus::Counter& rollouts_duplicate;
  prometheus::Family<prometheus::Counter>& rollouts_rejected;  // label reason
  prometheus::Counter& Rejected(v1::RejectReason reason);
  prometheus::Gauge& queue_depth;
  prometheus::Histogram& staleness;
  prometheus::Family<prometheus::Counter>& groups_dropped;   // label reason
  prometheus::Family<prometheus::Counter>& prompts_skipped;  // label reason
  prometheus::Counter& steps;
  // Steps the trainer's guard abandoned (nothing trained, nothing published), label reason:
  // non_finite_loss, non_finite_grad_norm (StepStats::skipped_reason). Both series exist from
  // the start, at 0.
  prometheus::Family<prometheus::Counter>& steps_skipped;
  prometheus::Histogram& step_seconds;
  prometheus::Gauge& tokens_per_second;
  prometheus::Gauge& loss;
  prometheus::Gauge& reward_mean;
  prometheus::Gauge& accuracy;
  prometheus::Gauge& clip_fraction;
  prometheus::Gauge& approx_kl;
  prometheus::Gauge& entropy;
  prometheus::Gauge& preplan_credit_fraction;
  prometheus::Gauge& anchor_credit_fraction;
  prometheus::Gauge& fai_defined;
  prometheus::Counter& fai_undefined_responses;
  prometheus::Gauge& amplified_tokens;
  // Off-policy correction and masks (docs/method.md §9): mean pi_old / pi_behaviour before the
  // cap and the share above trainer.tis_cap; tokens left out of the loss by reason
  // (token_mask: IcePop bounds, out_of_filter: outside pi_old's replayed top-k / top-p);
  // responses left out by reason (sequence_mask, truncated).
  prometheus::Gauge& tis_weight_mean;
  prometheus::Gauge& tis_capped_fraction;
  // The train/infer mismatch on the last step's rollouts at staleness 0 (StepStats:
  // logprob_mismatch_*): |pi_old log-prob - behaviour log-prob| mean and max, and the spread of
  // their TIS weights. Left as they were by a step without such rollouts; the counter says how
  // many tokens were measured (a mismatch of exactly 0 is real where both sides run the same
  // kernels, as learner and actor do on one CPU).
  prometheus::Counter& logprob_mismatch_tokens;
  prometheus::Gauge& logprob_mismatch_mean;
  prometheus::Gauge& logprob_mismatch_max;
  prometheus::Gauge& tis_weight_stddev;
  prometheus::Gauge& tis_weight_min;
  prometheus::Gauge& tis_weight_max;
  prometheus::Family<prometheus::Counter>& masked_tokens;     // label reason
  prometheus::Family<prometheus::Counter>& masked_responses;  // label reason
  // KL(pi_old || pi_ref) per token (trainer.kl_estimator), last step; DAPO overlong penalty.
  prometheus::Gauge& ref_kl;
  prometheus::Counter& overlong_penalized;
  prometheus::Gauge& overlong_penalty_mean;
  // Actor vs learner summaries (credit.summary_agreement): labels measure (waad_spearman,
  // fai_spearman, selection_jaccard) and staleness (StalenessBucket).
  prometheus::Family<prometheus::Histogram>& summary_agreement;
  // Labels signal (waad, fai) and staleness: the largest fp16 error ratio of the last step
  // that had rollouts in that bucket (NaN while no step has).
  prometheus::Family<prometheus::Gauge>& summary_fp16_error_ratio;
  // Label staleness: compared rollouts whose two sources split the heads differently.
  prometheus::Family<prometheus::Counter>& summary_head_split_differs;
  prometheus::Gauge& policy_version;
  prometheus::Histogram& journal_sync_seconds;
  prometheus::Histogram& checkpoint_seconds;
  prometheus::Counter& weight_publish_bytes;
  prometheus::Histogram& weight_publish_seconds;
  prometheus::Gauge& actors_connected;
  prometheus::Gauge& leases_outstanding;
  prometheus::Counter& leases_expired;
  prometheus::Gauge& rollout_log_bytes;
  prometheus::Gauge& ledger_ids;
  // Batch assembly (learner/batch_assembler.h): groups in the last batch, the share of the
  // groups examined for it that were dropped for zero reward variance, batches short of
  // trainer.batch_groups (dynamic sampling's bound reached), extra rounds per batch.
  prometheus::Gauge& batch_groups;
  prometheus::Gauge& groups_filtered;
  prometheus::Counter& short_batches;
  prometheus::Histogram& sampling_extra_rounds;
  // Evaluation on the learner (learner.eval_every, learner/evaluator.h): the last evaluation's
  // greedy pass@1, avg@k and pass@k, the version it scored (-1 before the first; the ratios are
  // NaN until then), its problems, its duration and failures.
  prometheus::Gauge& eval_pass1;
  prometheus::Gauge& eval_avg_at_k;
  prometheus::Gauge& eval_pass_at_k;
  prometheus::Gauge& eval_version;
  prometheus::Gauge& eval_problems;
  prometheus::Histogram& eval_seconds;
  prometheus::Counter& eval_failures;
  // Security and limits (issue 17). Calls refused UNAUTHENTICATED or PERMISSION_DENIED, by
  // reason (no_credentials, bad_token, no_client_certificate, wrong_identity, actor_id_taken).
  prometheus::Family<prometheus::Counter>& auth_refused;
  // Requests refused or cut short by a limit, by limit (max_actors, max_id_bytes,
  // max_leases_per_actor, idle_timeout).
  prometheus::Family<prometheus::Counter>& limit_refusals;
  // Rollout streams that ended, by how (half_close, cancelled, unparseable, no_hello, idle,
  // stopping). gRPC ends a stream whose message is over twice learner.max_message_bytes
  // itself, before the learner sees it; such a stream counts as cancelled.
  prometheus::Family<prometheus::Counter>& streams_ended;
};

}  // namespace rhythm::learner

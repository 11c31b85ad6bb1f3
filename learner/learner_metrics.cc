#include "learner/learner_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <utility>

#include "common/metric_builders.h"
#include "learner/step_stats.h"

namespace rhythm::learner {
namespace {

// Agreement runs from -1 to 1; what matters is how close to 1, so the buckets crowd there.
const prometheus::Histogram::BucketBoundaries kAgreementBuckets = {0,    0.5,  0.8,   0.9,   0.95,
                                                                   0.98, 0.99, 0.995, 0.999, 1};
constexpr const char* kStalenessBuckets[] = {"0", "1", "2", "3+"};

}  // namespace

LearnerMetrics::LearnerMetrics(prometheus::Registry& r)
    : rollouts_received(common::AddCounter(r, "rhythm_learner_rollouts_received_total",
                                           "Rollouts received on actor streams")),
      rollouts_accepted(common::AddCounter(r, "rhythm_learner_rollouts_accepted_total",
                                           "Rollouts made durable and queued")),
      rollouts_duplicate(
          common::AddCounter(r, "rhythm_learner_rollouts_duplicate_total",
                             "Rollouts whose id was seen before (acked again, dropped)")),
      rollouts_rejected(prometheus::BuildCounter()
                            .Name("rhythm_learner_rollouts_rejected_total")
                            .Help("Rollouts rejected by validation, by reason")
                            .Register(r)),
      queue_depth(common::AddGauge(r, "rhythm_learner_queue_depth_rollouts",
                                   "Rollouts ingested and waiting to be trained on")),
      staleness(common::AddHistogram(r, "rhythm_learner_staleness_versions",
                                     "Policy-version lag of trained groups",
                                     {0, 1, 2, 3, 4, 8, 16})),
      groups_dropped(prometheus::BuildCounter()
                         .Name("rhythm_learner_groups_dropped_total")
                         .Help("Groups dropped before training, by reason")
                         .Register(r)),
      prompts_skipped(prometheus::BuildCounter()
                          .Name("rhythm_learner_prompts_skipped_total")
                          .Help("Dataset prompts never lent: unencodable or too long, by reason")
                          .Register(r)),
      steps(common::AddCounter(r, "rhythm_learner_steps_total", "Training steps taken")),
      steps_skipped(prometheus::BuildCounter()
                        .Name("rhythm_learner_steps_skipped_total")
                        .Help("Training steps abandoned because a loss or gradient norm was not "
                              "finite (weights restored, nothing published), by reason")
                        .Register(r)),
      step_seconds(common::AddHistogram(r, "rhythm_learner_step_seconds",
                                        "Seconds per training step",
                                        {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120})),
      tokens_per_second(common::AddGauge(r, "rhythm_learner_tokens_per_second",
                                         "Response tokens trained per second, last step")),
      loss(common::AddGauge(r, "rhythm_learner_loss", "Policy loss, last step")),
      reward_mean(
          common::AddGauge(r, "rhythm_learner_reward_mean", "Mean reward of the last batch")),
      accuracy(common::AddGauge(r, "rhythm_learner_accuracy_ratio",
                                "Fraction of correct responses in the last batch")),
      clip_fraction(common::AddGauge(r, "rhythm_learner_clip_fraction_ratio",
                                     "Fraction of tokens whose ratio was clipped, last step")),
      approx_kl(
          common::AddGauge(r, "rhythm_learner_approx_kl", "Approximate KL(old || new), last step")),
      entropy(common::AddGauge(r, "rhythm_learner_entropy_nats",
                               "Mean sampling entropy of the last batch")),
      preplan_credit_fraction(common::AddGauge(r, "rhythm_learner_preplan_credit_fraction_ratio",
                                               "Share of |shaped advantage| on preplan tokens")),
      anchor_credit_fraction(common::AddGauge(r, "rhythm_learner_anchor_credit_fraction_ratio",
                                              "Share of |shaped advantage| on anchor tokens")),
      fai_defined(common::AddGauge(r, "rhythm_learner_fai_defined_ratio",
                                   "Share of response tokens with FAI defined, last step")),
      fai_undefined_responses(common::AddCounter(
          r, "rhythm_learner_fai_undefined_responses_total",
          "Trained responses whose FAI is undefined at every token (shorter than the FAI band)")),
      amplified_tokens(common::AddGauge(r, "rhythm_learner_amplified_token_fraction_ratio",
                                        "Share of response tokens with gamma > 1, last step")),
      tis_weight_mean(common::AddGauge(
          r, "rhythm_learner_tis_weight_mean",
          "Mean importance weight pi_old / pi_behaviour over the last step's trained response "
          "tokens, before trainer.tis_cap: 1 on-policy; below 1 at staleness 0 means the "
          "learner's log-probs are not the sampler's (e.g. its top-k / top-p not replayed)")),
      tis_capped_fraction(common::AddGauge(
          r, "rhythm_learner_tis_capped_fraction_ratio",
          "Share of the last step's trained response tokens whose pi_old / pi_behaviour exceeds "
          "trainer.tis_cap (truncated)")),
      logprob_mismatch_tokens(common::AddCounter(
          r, "rhythm_learner_logprob_mismatch_tokens_total",
          "Response tokens of rollouts at staleness 0 whose train/infer mismatch was measured")),
      logprob_mismatch_mean(common::AddGauge(
          r, "rhythm_learner_logprob_mismatch_mean",
          "Mean |learner log-prob - actor behaviour log-prob| (nats) of the last step's response "
          "tokens from rollouts at staleness 0: the train/infer mismatch (bf16, kernels, wire)")),
      logprob_mismatch_max(common::AddGauge(
          r, "rhythm_learner_logprob_mismatch_max",
          "Largest |learner log-prob - actor behaviour log-prob| (nats) over the same tokens")),
      tis_weight_stddev(common::AddGauge(
          r, "rhythm_learner_tis_weight_stddev",
          "Standard deviation of exp(learner - behaviour log-prob) over the same tokens")),
      tis_weight_min(common::AddGauge(
          r, "rhythm_learner_tis_weight_min",
          "Smallest exp(learner - behaviour log-prob) over the same tokens")),
      tis_weight_max(common::AddGauge(
          r, "rhythm_learner_tis_weight_max",
          "Largest exp(learner - behaviour log-prob) over the same tokens")),
      masked_tokens(prometheus::BuildCounter()
                        .Name("rhythm_learner_masked_tokens_total")
                        .Help("Response tokens left out of the loss, by reason: token_mask "
                              "(IcePop: pi_old / pi_behaviour outside [trainer.token_mask_low, "
                              "token_mask_high]), out_of_filter (dropped by pi_old's replay of "
                              "the actors' top-k / top-p: only after the weights moved)")
                        .Register(r)),
      masked_responses(prometheus::BuildCounter()
                           .Name("rhythm_learner_masked_responses_total")
                           .Help("Responses left out of the loss, by reason: sequence_mask "
                                 "(geometric-mean pi_old / pi_behaviour outside "
                                 "[trainer.sequence_mask_low, sequence_mask_high]), truncated "
                                 "(cut at generation.max_new_tokens, trainer.mask_truncated)")
                           .Register(r)),
      ref_kl(common::AddGauge(r, "rhythm_learner_ref_kl",
                              "Mean per-token KL(pi_old || pi_ref) to the frozen reference policy "
                              "(trainer.kl_estimator), last step; 0 without trainer.kl_coef")),
      overlong_penalized(common::AddCounter(
          r, "rhythm_learner_overlong_penalized_responses_total",
          "Responses whose reward the DAPO overlong penalty lowered (longer than "
          "generation.max_new_tokens - trainer.overlong_buffer)")),
      overlong_penalty_mean(
          common::AddGauge(r, "rhythm_learner_overlong_penalty_mean",
                           "Mean overlong penalty added to the last batch's rewards (<= 0)")),
      summary_agreement(
          prometheus::BuildHistogram()
              .Name("rhythm_learner_summary_agreement")
              .Help("Agreement of the actor's attention summary (behaviour policy, fp16) with the "
                    "learner's (pi_old), one observation per rollout with "
                    "credit.summary_agreement on: measure = waad_spearman | fai_spearman (rank "
                    "correlation over response tokens; FAI where both define it) | "
                    "selection_jaccard (tokens the strategy amplifies from each), by staleness "
                    "(trainer version - rollout's oldest version: 0, 1, 2, 3+). 1 = identical")
              .Register(r)),
      summary_fp16_error_ratio(
          prometheus::BuildGauge()
              .Name("rhythm_learner_summary_fp16_error_ratio")
              .Help("Largest per-token |actor - learner| / (2^-11 |learner| + 1e-5) of a summary "
                    "signal (waad, fai) over the rollouts of a staleness bucket, in the last step "
                    "that had any: <= 1 means the sources differ by no more than the wire's fp16 "
                    "rounding; +Inf means they disagree on where FAI is defined; NaN until a "
                    "step fills the bucket")
              .Register(r)),
      summary_head_split_differs(
          prometheus::BuildCounter()
              .Name("rhythm_learner_summary_head_split_differs_total")
              .Help("Compared rollouts (credit.summary_agreement) whose actor and learner "
                    "summaries chose different local or global heads, by staleness: their WAAD / "
                    "FAI average other heads, so their fp16 error ratio is far above 1")
              .Register(r)),
      policy_version(
          common::AddGauge(r, "rhythm_learner_policy_version", "Newest published version")),
      journal_sync_seconds(common::AddHistogram(
          r, "rhythm_learner_journal_sync_seconds",
          "Seconds a commit waited for the journal to be durable (fsync, shared by group commit)",
          {0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 1})),
      checkpoint_seconds(common::AddHistogram(r, "rhythm_learner_checkpoint_seconds",
                                              "Seconds to write a checkpoint",
                                              {0.05, 0.1, 0.5, 1, 5, 30, 120})),
      weight_publish_bytes(common::AddCounter(r, "rhythm_learner_weight_publish_bytes_total",
                                              "Bytes of weights published")),
      weight_publish_seconds(common::AddHistogram(r, "rhythm_learner_weight_publish_seconds",
                                                  "Seconds to publish a version",
                                                  {0.01, 0.05, 0.1, 0.5, 1, 5})),
      actors_connected(common::AddGauge(r, "rhythm_learner_actors_connected",
                                        "Actors heard from within the heartbeat timeout")),
      leases_outstanding(
          common::AddGauge(r, "rhythm_learner_leases_outstanding", "Prompt leases out")),
      leases_expired(common::AddCounter(r, "rhythm_learner_leases_expired_total",
                                        "Leases expired and re-issued")),
      rollout_log_bytes(common::AddGauge(r, "rhythm_learner_rollout_log_bytes",
                                         "Bytes in the durable rollout log")),
      ledger_ids(common::AddGauge(r, "rhythm_learner_ledger_ids",
                                  "Rollout ids the exactly-once ledger holds above its "
                                  "per-run watermarks (bounded by runs x learner.ledger_window)")),
      batch_groups(common::AddGauge(r, "rhythm_learner_batch_groups",
                                    "Groups in the last trained batch")),
      groups_filtered(common::AddGauge(
          r, "rhythm_learner_groups_filtered_ratio",
          "Share of the groups examined for the last batch that were dropped for zero reward "
          "variance (credit.drop_zero_variance_groups)")),
      short_batches(common::AddCounter(
          r, "rhythm_learner_short_batches_total",
          "Batches trained with fewer than trainer.batch_groups groups: dynamic sampling "
          "reached trainer.dynamic_sampling_max_rounds")),
      sampling_extra_rounds(common::AddHistogram(
          r, "rhythm_learner_sampling_extra_rounds",
          "Extra rounds of trainer.batch_groups groups examined per batch to fill it "
          "(ceil(examined / batch_groups) - 1)",
          {0, 1, 2, 4, 8, 16, 32})),
      eval_pass1(common::AddGauge(r, "rhythm_learner_eval_pass1_ratio",
                                  "Greedy pass@1 of the last evaluation (learner.eval_every)")),
      eval_avg_at_k(common::AddGauge(
          r, "rhythm_learner_eval_avg_at_k_ratio",
          "Mean accuracy of learner.eval_k samples at generation.temperature, last evaluation")),
      eval_pass_at_k(common::AddGauge(
          r, "rhythm_learner_eval_pass_at_k_ratio",
          "Share of problems with at least one of learner.eval_k samples correct, last evaluation")),
      eval_version(common::AddGauge(r, "rhythm_learner_eval_version",
                                    "Policy version the last evaluation scored (-1: none yet)")),
      eval_problems(common::AddGauge(r, "rhythm_learner_eval_problems",
                                     "Problems the last evaluation scored")),
      eval_seconds(common::AddHistogram(r, "rhythm_learner_eval_seconds",
                                        "Seconds per evaluation (generation on the learner)",
                                        {0.1, 0.5, 1, 5, 10, 30, 60, 300, 1200})),
      eval_failures(common::AddCounter(r, "rhythm_learner_eval_failures_total",
                                       "Evaluations that failed (logged)")),
      auth_refused(prometheus::BuildCounter()
                       .Name("rhythm_learner_auth_refused_total")
                       .Help("Calls refused UNAUTHENTICATED or PERMISSION_DENIED, by reason")
                       .Register(r)),
      limit_refusals(prometheus::BuildCounter()
                         .Name("rhythm_learner_limit_refusals_total")
                         .Help("Requests refused or cut short by a configured limit, by limit")
                         .Register(r)),
      streams_ended(prometheus::BuildCounter()
                        .Name("rhythm_learner_streams_ended_total")
                        .Help("Rollout streams that ended, by how")
                        .Register(r)) {
  // No evaluation yet: no data, not a score of 0.
  eval_version.Set(-1);
  for (prometheus::Gauge* g : {&eval_pass1, &eval_avg_at_k, &eval_pass_at_k}) {
    g->Set(std::numeric_limits<double>::quiet_NaN());
  }
  // Every labelled series exists from the start, so dashboards and alerts see zeros.
  for (const char* reason :
       {"no_credentials", "bad_token", "no_client_certificate", "wrong_identity",
        "actor_id_taken"}) {
    auth_refused.Add({{"reason", reason}});
  }
  for (const char* limit : {"max_actors", "max_id_bytes", "max_leases_per_actor",
                            "max_weight_downloads", "idle_timeout"}) {
    limit_refusals.Add({{"limit", limit}});
  }
  for (const char* how :
       {"half_close", "cancelled", "unparseable", "no_hello", "refused", "idle", "stopping"}) {
    streams_ended.Add({{"how", how}});
  }
  for (const char* reason : {"stale", "zero_variance", "expired"}) {
    groups_dropped.Add({{"reason", reason}});
  }
  for (const char* reason : {"token_mask", "out_of_filter"}) {
    masked_tokens.Add({{"reason", reason}});
  }
  for (const char* reason : {"sequence_mask", "truncated"}) {
    masked_responses.Add({{"reason", reason}});
  }
  for (const char* reason : {"non_finite_loss", "non_finite_grad_norm"}) {
    steps_skipped.Add({{"reason", reason}});
  }
  for (int r = v1::RejectReason_MIN + 1; r <= v1::RejectReason_MAX; ++r) {
    Rejected(static_cast<v1::RejectReason>(r));
  }
  for (const char* measure : {"waad_spearman", "fai_spearman", "selection_jaccard"}) {
    for (const char* staleness : kStalenessBuckets) {
      summary_agreement.Add({{"measure", measure}, {"staleness", staleness}}, kAgreementBuckets);
    }
  }
  for (const char* staleness : kStalenessBuckets) {
    summary_head_split_differs.Add({{"staleness", staleness}});
  }
  // NaN until a step fills the bucket: no data, not "no error".
  for (const char* signal : {"waad", "fai"}) {
    for (const char* staleness : kStalenessBuckets) {
      summary_fp16_error_ratio.Add({{"signal", signal}, {"staleness", staleness}})
          .Set(std::numeric_limits<double>::quiet_NaN());
    }
  }
}

const char* LearnerMetrics::StalenessBucket(int64_t staleness) {
  return kStalenessBuckets[std::clamp<int64_t>(staleness, 0, 3)];
}

prometheus::Counter& LearnerMetrics::Rejected(v1::RejectReason reason) {
  std::string name = v1::RejectReason_Name(reason);
  const std::string prefix = "REJECT_REASON_";
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  for (char& c : name) c = static_cast<char>(std::tolower(c));
  return rollouts_rejected.Add({{"reason", name}});
}

void LearnerMetrics::RecordStep(const StepStats& s) {
  steps.Increment();
  step_seconds.Observe(s.seconds);
  tokens_per_second.Set(static_cast<double>(s.tokens) / std::max(s.seconds, 1e-9));
  loss.Set(s.loss);
  reward_mean.Set(s.reward_mean);
  accuracy.Set(s.accuracy);
  clip_fraction.Set(s.clip_fraction);
  approx_kl.Set(s.approx_kl);
  entropy.Set(s.entropy_mean);
  preplan_credit_fraction.Set(s.preplan_credit_fraction);
  anchor_credit_fraction.Set(s.anchor_credit_fraction);
  fai_defined.Set(s.fai_defined_fraction);
  fai_undefined_responses.Increment(static_cast<double>(s.fai_undefined_responses));
  amplified_tokens.Set(s.amplified_token_fraction);
  tis_weight_mean.Set(s.tis_weight_mean);
  tis_capped_fraction.Set(s.tis_capped_fraction);
  logprob_mismatch_tokens.Increment(static_cast<double>(s.logprob_mismatch_tokens));
  if (s.logprob_mismatch_tokens > 0) {
    logprob_mismatch_mean.Set(s.logprob_mismatch_mean);
    logprob_mismatch_max.Set(s.logprob_mismatch_max);
    tis_weight_stddev.Set(s.tis_weight_stddev);
    tis_weight_min.Set(s.tis_weight_min);
    tis_weight_max.Set(s.tis_weight_max);
  }
  masked_tokens.Add({{"reason", "token_mask"}}).Increment(static_cast<double>(s.masked_tokens));
  masked_tokens.Add({{"reason", "out_of_filter"}})
      .Increment(static_cast<double>(s.out_of_filter_tokens));
  masked_responses.Add({{"reason", "sequence_mask"}})
      .Increment(static_cast<double>(s.masked_sequences));
  masked_responses.Add({{"reason", "truncated"}})
      .Increment(static_cast<double>(s.truncated_masked));
  ref_kl.Set(s.ref_kl);
  overlong_penalized.Increment(static_cast<double>(s.overlong_penalized));
  overlong_penalty_mean.Set(s.overlong_penalty_mean);
  // Largest error ratio per (signal, staleness bucket) over this step's rollouts.
  std::map<std::pair<std::string, std::string>, double> worst;
  for (const SummaryAgreement& a : s.agreement) {
    const std::string bucket = StalenessBucket(a.staleness);
    for (const auto& [measure, value] :
         {std::pair<const char*, double>{"waad_spearman", a.waad_spearman},
          {"fai_spearman", a.fai_spearman},
          {"selection_jaccard", a.selection_jaccard}}) {
      if (std::isnan(value)) continue;
      summary_agreement.Add({{"measure", measure}, {"staleness", bucket}}, kAgreementBuckets)
          .Observe(value);
    }
    if (!a.same_heads) summary_head_split_differs.Add({{"staleness", bucket}}).Increment();
    for (const auto& [signal, ratio] :
         {std::pair<const char*, double>{"waad", a.waad_fp16_error_ratio},
          {"fai", a.fai_fp16_error_ratio}}) {
      auto [it, fresh] = worst.try_emplace({signal, bucket}, ratio);
      if (!fresh) it->second = std::max(it->second, ratio);
    }
  }
  for (const auto& [key, ratio] : worst) {
    summary_fp16_error_ratio.Add({{"signal", key.first}, {"staleness", key.second}}).Set(ratio);
  }
}

}  // namespace rhythm::learner

#include "learner/learner_metrics.h"

#include <algorithm>

#include "common/metric_builders.h"
#include "learner/step_stats.h"

namespace rhythm::learner {

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
                                  "per-run watermarks (bounded by runs x learner.ledger_window)")) {
  // Every labelled series exists from the start, so dashboards and alerts see zeros.
  for (const char* reason : {"stale", "zero_variance", "expired"}) {
    groups_dropped.Add({{"reason", reason}});
  }
  for (int r = v1::RejectReason_MIN + 1; r <= v1::RejectReason_MAX; ++r) {
    Rejected(static_cast<v1::RejectReason>(r));
  }
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
}

}  // namespace rhythm::learner

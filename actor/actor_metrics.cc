#include "actor/actor_metrics.h"

#include "common/metric_builders.h"

namespace rhythm::actor {

ActorMetrics::ActorMetrics(prometheus::Registry& r)
    : tokens_per_second(common::AddGauge(r, "rhythm_actor_tokens_per_second",
                                         "Tokens generated per second, last batch")),
      rollouts_sent(common::AddCounter(r, "rhythm_actor_rollouts_sent_total", "Rollouts produced")),
      rollouts_acked(common::AddCounter(r, "rhythm_actor_rollouts_acked_total",
                                        "Rollouts the learner acknowledged (durable)")),
      rollouts_rejected(common::AddCounter(r, "rhythm_actor_rollouts_rejected_total",
                                           "Rollouts the learner rejected as invalid")),
      rollouts_resent(common::AddCounter(r, "rhythm_actor_rollouts_resent_total",
                                         "Rollouts written again after a reconnect")),
      unacked(common::AddGauge(r, "rhythm_actor_unacked_rollouts", "Rollouts kept for resending")),
      reward_mean(common::AddGauge(r, "rhythm_actor_reward_mean", "Mean reward of the last batch")),
      response_length(common::AddHistogram(r, "rhythm_actor_response_length_tokens",
                                           "Response lengths",
                                           {4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096})),
      policy_version(common::AddGauge(r, "rhythm_actor_policy_version", "Version generating now")),
      version_lag(
          common::AddGauge(r, "rhythm_actor_version_lag", "Newest version - version in use")),
      reconnects(
          common::AddCounter(r, "rhythm_actor_reconnects_total", "Rollout-stream reconnects")),
      generation_seconds(common::AddHistogram(r, "rhythm_actor_generation_seconds",
                                              "Seconds per batch",
                                              {0.1, 0.5, 1, 2, 5, 10, 30, 60, 120})),
      verification_seconds(common::AddHistogram(r, "rhythm_actor_verification_seconds",
                                                "Seconds to verify a batch",
                                                {0.0001, 0.001, 0.01, 0.1, 1})),
      weights(r) {}

}  // namespace rhythm::actor

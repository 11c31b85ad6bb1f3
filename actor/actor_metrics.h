// The actor's Prometheus series (rhythm_actor_*), one struct built from the process's registry
// and passed by reference to the parts that record them (the Actor, its RolloutProducer, the
// weight sources through `weights`). Tests pass a fresh registry.
#pragma once

#include "common/weights/weight_metrics.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace rhythm::actor {

struct ActorMetrics {
  explicit ActorMetrics(prometheus::Registry& r);
  prometheus::Gauge& tokens_per_second;
  prometheus::Counter& rollouts_sent;
  prometheus::Counter& rollouts_acked;
  prometheus::Counter& rollouts_rejected;
  prometheus::Counter& rollouts_resent;
  prometheus::Gauge& unacked;
  prometheus::Gauge& reward_mean;
  prometheus::Histogram& response_length;
  prometheus::Gauge& policy_version;
  prometheus::Gauge& version_lag;
  prometheus::Counter& reconnects;
  prometheus::Histogram& generation_seconds;
  prometheus::Histogram& verification_seconds;
  // rhythm_actor_weight_* and rhythm_actor_generation_pause_seconds.
  common::weights::ActorWeightMetrics weights;
};

}  // namespace rhythm::actor

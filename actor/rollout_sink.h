// RolloutSink: where the actor's rollout producer (actor/rollout_producer.h) puts finished
// rollouts. The RolloutStreamer implements it over the learner's rollout stream; tests use
// fakes, so the producer runs without a network.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::actor {

class RolloutSink {
 public:
  virtual ~RolloutSink() = default;
  // Takes the rollouts of one lease group (ascending rollout ids), blocking while the sink is
  // full. CANCELLED once the sink is closed; rollouts taken before the error stay taken.
  virtual absl::Status Deliver(std::vector<v1::Rollout> group) = 0;
};

}  // namespace rhythm::actor

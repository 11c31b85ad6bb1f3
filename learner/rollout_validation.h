// Validation of every rollout before the learner queues it: the first thing a rollout meets
// after de-duplication (a resend of an acked id is acked as a duplicate whatever its content),
// so a bad one is rejected with INVALID_ARGUMENT naming the field and the value, counted by
// reason, and never reaches the trainer. Reasons: non_finite (NaN / inf, a log-prob above 0, a
// negative entropy), out_of_range (a finite |reward| or log-prob beyond the configured bound),
// malformed (a negative version, a span past the response, ...), future_version, and the
// length reasons. Pure function; thread-safe.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "rhythm/v1/config.pb.h"
#include "rhythm/v1/learner_service.pb.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::learner {

struct ValidationLimits {
  int64_t vocab_size = 0;
  // The newest published version; a token from a later version is impossible.
  int64_t current_version = 0;
  // Largest serialized rollout accepted.
  int64_t max_bytes = 16 << 20;
  // Largest |verifier.reward| accepted (learner.max_abs_reward); 0 = no bound. A finite reward
  // can still overflow the group statistics (1e308 + 1.7e308 = inf).
  double max_abs_reward = 1e6;
  // Smallest behaviour log-prob accepted (learner.min_behaviour_logprob); above 0 (+1e-4 for
  // rounding) is never accepted.
  double min_behaviour_logprob = -1e4;

  // From learner.max_abs_reward, learner.min_behaviour_logprob and learner.max_message_bytes.
  static ValidationLimits FromConfig(const v1::LearnerConfig& learner, int64_t vocab_size,
                                     int64_t current_version);
};

struct ValidationResult {
  absl::Status status;  // OK or INVALID_ARGUMENT naming the field and the value
  v1::RejectReason reason = v1::REJECT_REASON_UNSPECIFIED;
  bool ok() const { return status.ok(); }
};

ValidationResult ValidateRollout(const v1::Rollout& rollout, const ValidationLimits& limits);


}  // namespace rhythm::learner

// Validation of every rollout before the learner queues it: the first thing a rollout meets, so
// a bad one is rejected with INVALID_ARGUMENT naming the field and the value, counted by
// reason, and never reaches the trainer. Pure function; thread-safe.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "rhythm/v1/learner_service.pb.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::learner {

struct ValidationLimits {
  int64_t vocab_size = 0;
  // The newest published version; a token from a later version is impossible.
  int64_t current_version = 0;
  // Largest serialized rollout accepted.
  int64_t max_bytes = 16 << 20;
};

struct ValidationResult {
  absl::Status status;  // OK or INVALID_ARGUMENT naming the field and the value
  v1::RejectReason reason = v1::REJECT_REASON_UNSPECIFIED;
  bool ok() const { return status.ok(); }
};

ValidationResult ValidateRollout(const v1::Rollout& rollout, const ValidationLimits& limits);


}  // namespace rhythm::learner

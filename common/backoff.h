// Backoff: exponential retry delays with full jitter, for reconnecting to the learner.
//
// Delay n (0-based) is drawn uniformly from [(1 - jitter) * b_n, b_n], where
// b_n = min(max, initial * multiplier^n). Reset() after a success. The random source is seeded
// by the caller so tests are deterministic. Not thread-safe: one Backoff per retry loop.
#pragma once

#include <cstdint>
#include <random>

#include "absl/time/time.h"

namespace rhythm::common {

struct BackoffOptions {
  absl::Duration initial = absl::Milliseconds(100);
  absl::Duration max = absl::Seconds(10);
  double multiplier = 2.0;
  // Fraction of the delay that is randomised, in [0, 1]. 0 gives exact exponential delays.
  double jitter = 0.5;
};

class Backoff {
 public:
  Backoff(const BackoffOptions& options, uint64_t seed);

  // The delay before the next attempt; grows until options.max.
  absl::Duration Next();
  // Back to the initial delay.
  void Reset() { attempt_ = 0; }
  int attempt() const { return attempt_; }

 private:
  BackoffOptions options_;
  std::mt19937_64 rng_;
  int attempt_ = 0;
};

}  // namespace rhythm::common

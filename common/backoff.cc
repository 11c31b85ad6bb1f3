#include "common/backoff.h"

#include <algorithm>
#include <cmath>

namespace rhythm::common {

Backoff::Backoff(const BackoffOptions& options, uint64_t seed) : options_(options), rng_(seed) {
  options_.jitter = std::clamp(options_.jitter, 0.0, 1.0);
  options_.multiplier = std::max(1.0, options_.multiplier);
}

absl::Duration Backoff::Next() {
  const double initial_s = absl::ToDoubleSeconds(options_.initial);
  const double max_s = absl::ToDoubleSeconds(options_.max);
  // Cap the exponent so pow never overflows however long we retry.
  const double grown = initial_s * std::pow(options_.multiplier, std::min(attempt_, 64));
  const double base = std::min(max_s, grown);
  ++attempt_;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const double delay = base * (1.0 - options_.jitter * unit(rng_));
  return absl::Seconds(delay);
}

}  // namespace rhythm::common

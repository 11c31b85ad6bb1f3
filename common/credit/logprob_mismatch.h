// The train/infer mismatch: how far the learner's recomputed log-probs of sampled tokens are
// from the log-probs the actor sampled them with. On a rollout of the weights the learner holds
// (staleness 0) the two policies are the same and every difference is numerics: bf16 rounding,
// the decode kernels against the training forward, the wire dtype. That difference is what the
// truncated importance weights w_t = exp(old_t - behaviour_t) (policy_loss.h) then correct, so
// their spread is reported beside it.
#pragma once

#include <cstdint>
#include <limits>

#include "ATen/core/Tensor.h"

namespace rhythm::common::credit {

// Sums over tokens, so several responses (or micro-batches) add up.
struct LogprobMismatch {
  int64_t tokens = 0;
  double abs_sum = 0;  // sum of |old_t - behaviour_t|
  double abs_max = 0;  // max of |old_t - behaviour_t|
  double weight_sum = 0, weight_sq_sum = 0;  // of w_t = exp(old_t - behaviour_t)
  double weight_min = std::numeric_limits<double>::infinity();
  double weight_max = 0;

  // Mean |old - behaviour| over the tokens (0 without tokens).
  double mean_abs() const { return tokens > 0 ? abs_sum / tokens : 0; }
  // Population standard deviation of w_t (0 without tokens).
  double weight_stddev() const;
};

// Adds the tokens where mask != 0. old, behaviour, mask: float [T] (any shape, all alike; any
// floating dtype, accumulated in float64). Shapes that differ are a programming error (ATen
// throws).
void AddLogprobMismatch(const at::Tensor& old, const at::Tensor& behaviour, const at::Tensor& mask,
                        LogprobMismatch& into);

}  // namespace rhythm::common::credit

// Group advantages (docs/method.md §7) and advantage shaping (§8). Pure functions on tensors;
// no I/O. Thread-safe.
#pragma once

#include <cstdint>

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::common::credit {

struct GroupAdvantageOptions {
  v1::AdvantageEstimator estimator = v1::ADVANTAGE_ESTIMATOR_GRPO;
  // Added to the group std (GRPO only).
  double eps = 1e-6;
};

struct GroupAdvantages {
  // float32 [B, G]: one advantage per response, the same for all its tokens.
  //   grpo:    (r - mean) / (std + eps), std the unbiased sample std (as TRL and veRL)
  //   dr_grpo: r - mean
  //   rloo:    r - mean of the other G-1 rewards = G/(G-1) * (r - mean)
  // A group whose rewards are all equal, or with G = 1, gets advantage 0 everywhere.
  at::Tensor advantages;
  // bool [B]: the group's rewards are all equal (DAPO dynamic sampling drops these).
  at::Tensor zero_variance;
};

// rewards: float [B, G], one row per group of G responses to one prompt. INVALID_ARGUMENT for a
// wrong shape, an empty batch or a non-finite reward (naming its group and sample).
absl::StatusOr<GroupAdvantages> ComputeGroupAdvantages(const at::Tensor& rewards,
                                                       const GroupAdvantageOptions& options);

// Shaped advantages A~_t = gamma_t * A (gamma detached). With shape_negative = false (the
// paper's v1), responses with A < 0 keep gamma = 1.
//   gamma:     float [B, T] (padding positions are multiplied too; mask them in the loss)
//   advantage: float [B]
//   returns    float32 [B, T]
at::Tensor ShapeAdvantages(const at::Tensor& gamma, const at::Tensor& advantage,
                           bool shape_negative);

// DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), added to a response's reward:
//   0                                          |y| <= L_max - B
//   ((L_max - B) - |y|) / B * penalty          L_max - B < |y| <= L_max
//   -penalty                                   |y| > L_max
// with L_max = max_length (generation.max_new_tokens) and B = buffer (trainer.overlong_buffer);
// 0 when buffer <= 0 (disabled). Returns a value <= 0.
double OverlongPenalty(int64_t length, int64_t max_length, int64_t buffer, double penalty);

}  // namespace rhythm::common::credit

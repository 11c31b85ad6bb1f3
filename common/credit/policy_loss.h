// The clipped policy-gradient loss with shaped advantages (docs/method.md §9). Pure function
// on tensors; no I/O. Thread-safe.
//
// Per response token t (mask_t = 1), with r_t = exp(logp_t - old_t):
//   w_t      = min(exp(old_t - behaviour_t), tis_cap)        truncated importance weight,
//                                                            detached; 1 when tis_cap = 0
//   pg_t     = -w_t * min(r_t * A~_t, clip(r_t, 1 - eps_low, 1 + eps_high) * A~_t)
//   kl_t     = exp(ref_t - logp_t) - (ref_t - logp_t) - 1    k3 estimator, when kl_coef > 0
//   loss_t   = pg_t + kl_coef * kl_t - entropy_coef * H_t
// Aggregation:
//   seq-mean-token-mean: mean over each response's tokens, then over responses with >= 1 token
//   token-mean:          sum over all tokens / number of tokens
// Statistics are over masked tokens: clip_fraction (tokens where the clipped term is the one
// taken and differs from the unclipped one), mean_ratio, approx_kl (k3 of pi_old vs pi_theta),
// and, when gamma and the preplan/anchor masks are given, the share of tokens and of credit
// (sum |A~_t|) on preplan and on anchor tokens.
#pragma once

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::common::credit {

struct PolicyLossOptions {
  double clip_eps_low = 0.2;
  double clip_eps_high = 0.2;
  // Cap of the truncated importance weight; 0 disables the correction.
  double tis_cap = 2.0;
  v1::LossAggregation aggregation = v1::LOSS_AGGREGATION_SEQ_MEAN_TOKEN_MEAN;
  double kl_coef = 0.0;
  double entropy_coef = 0.0;
};

// All tensors are [B, T] (float32 or float64 alike), aligned on response tokens.
struct PolicyLossInputs {
  at::Tensor logprobs;            // log pi_theta(o_t); carries the gradient
  at::Tensor old_logprobs;        // log pi_old(o_t) (the learner's recompute, once per step,
                                  // under the weights the step starts from); constant
  at::Tensor advantages;          // A~_t shaped advantages; treated as constant
  at::Tensor mask;                // 1 on response tokens, 0 on padding
  at::Tensor behaviour_logprobs;  // the actor's sampling log-probs; needed when tis_cap > 0
  at::Tensor ref_logprobs;        // reference policy; needed when kl_coef > 0
  at::Tensor entropy;             // H_t of pi_theta, differentiable; needed when entropy_coef > 0
  // Optional, for statistics only:
  at::Tensor preplan_mask;        // 1 on preplan tokens (T_loc)
  at::Tensor anchor_mask;         // 1 on anchor tokens (T_glob)
};

struct PolicyLossResult {
  at::Tensor loss;  // scalar, differentiable with respect to logprobs (and entropy)
  double clip_fraction = 0;
  double mean_ratio = 0;
  double approx_kl = 0;
  double ref_kl = 0;                  // mean k3 KL to the reference (0 when not computed)
  double tokens = 0;                  // masked tokens
  double preplan_token_fraction = 0;
  double anchor_token_fraction = 0;
  double preplan_credit_fraction = 0;
  double anchor_credit_fraction = 0;
};

// INVALID_ARGUMENT naming the input for a missing or misshapen tensor.
absl::StatusOr<PolicyLossResult> ComputePolicyLoss(const PolicyLossInputs& inputs,
                                                   const PolicyLossOptions& options);

}  // namespace rhythm::common::credit

// The clipped policy-gradient loss with shaped advantages (docs/method.md §9). Pure function
// on tensors; no I/O. Thread-safe.
//
// Per response token t (mask_t = 1), with r_t = exp(logp_t - old_t):
//   w_t      = min(exp(old_t - behaviour_t), tis_cap)        truncated importance weight,
//                                                            detached; 1 when tis_cap = 0
//   pg_t     = -w_t * min(q_t * A~_t, clip(q_t, 1 - eps_low, 1 + eps_high) * A~_t)
//     ratio_level token:    q_t = r_t
//     ratio_level sequence: q_t = sg[s_i] * exp(logp_t - sg[logp_t]), s_i = exp(mean over the
//       response's masked tokens of (logp - old)): GSPO's sequence ratio, clipped per response.
//       Its value is s_i at every token and its gradient s_i * grad logp_t (GSPO-token, Zheng
//       et al. 2025 §4.3), so with one advantage per response (A~_t = A_i) the loss and its
//       gradient are exactly GSPO's -min(s_i A_i, clip(s_i) A_i); with shaped A~_t each token
//       keeps its own credit.
//   kl_t     = KlPerToken(ref_t, logp_t): k1, k2 or k3, when kl_coef > 0
//   loss_t   = pg_t + kl_coef * kl_t - entropy_coef * H_t
// Aggregation:
//   seq-mean-token-mean: mean over each response's tokens, then over responses with >= 1 token
//   token-mean:          sum over all tokens / number of tokens
// (loss_denominator replaces "responses with >= 1 token" / "number of tokens", so micro-batches
// of one mini-batch add up to the mini-batch's aggregate.)
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
  v1::KlEstimator kl_estimator = v1::KL_ESTIMATOR_K3;
  double entropy_coef = 0.0;
  v1::RatioLevel ratio_level = v1::RATIO_LEVEL_TOKEN;
  // > 0: the divisor of the aggregate (responses with >= 1 token for seq-mean-token-mean,
  // tokens for token-mean) over the whole mini-batch this call is a micro-batch of; 0 = this
  // call's own count.
  double loss_denominator = 0.0;
};

// The per-token KL(pi_theta || pi_ref) estimate with log r = ref - logp (config.proto
// KlEstimator): k1 = -log r, k2 = (log r)^2 / 2, k3 = r - 1 - log r. Differentiable in `logp`.
// ref, logp: [B, T] alike. An unspecified estimator is k3.
at::Tensor KlPerToken(const at::Tensor& ref, const at::Tensor& logp, v1::KlEstimator estimator);

// Off-policy masks, from pi_old and the behaviour policy (config.proto TrainerConfig
// token_mask_* and sequence_mask_*): 0 disables each bound.
struct OffPolicyMaskOptions {
  // IcePop: a token whose w_t = pi_old / pi_behaviour lies outside [token_low, token_high].
  double token_low = 0, token_high = 0;
  // A response whose geometric mean of w_t over its tokens lies outside [sequence_low,
  // sequence_high] (every token of it; the geometric mean is over all its masked tokens).
  double sequence_low = 0, sequence_high = 0;
  // Tokens whose w_t exceeds it are counted as capped (statistics only); 0 = none.
  double tis_cap = 0;
};

struct OffPolicyMask {
  at::Tensor keep;               // float [B, T]: mask with the excluded tokens set to 0
  int64_t masked_tokens = 0;     // tokens the token mask removed (of responses the sequence
                                 // mask kept)
  int64_t masked_sequences = 0;  // responses (>= 1 token) the sequence mask removed
  int64_t tokens = 0;            // tokens of `mask`
  double weight_sum = 0;         // sum of the raw w_t over `mask` (mean = weight_sum / tokens)
  int64_t capped_tokens = 0;     // tokens with w_t > tis_cap (tis_cap > 0)
};

// old, behaviour, mask: [B, T] alike (mask 1 on response tokens). INVALID_ARGUMENT naming the
// input for a missing or misshapen tensor.
absl::StatusOr<OffPolicyMask> ComputeOffPolicyMask(const at::Tensor& old,
                                                   const at::Tensor& behaviour,
                                                   const at::Tensor& mask,
                                                   const OffPolicyMaskOptions& options);

// All tensors are [B, T] (float32 or float64 alike), aligned on response tokens.
struct PolicyLossInputs {
  at::Tensor logprobs;            // log pi_theta(o_t); carries the gradient
  at::Tensor old_logprobs;        // log pi_old(o_t) (the learner's recompute, once per step,
                                  // under the weights the step starts from); constant
  at::Tensor advantages;          // A~_t shaped advantages; treated as constant
  at::Tensor mask;                // 1 on response tokens, 0 on padding
  at::Tensor behaviour_logprobs;  // the actor's sampling log-probs; needed when tis_cap > 0
  at::Tensor ref_logprobs;        // reference policy; needed when kl_coef > 0
  at::Tensor kl_logprobs;         // log pi_theta for the KL term when it differs from logprobs
                                  // (the learner's unfiltered log-probs while logprobs replay
                                  // the sampler's top-k / top-p); undefined = logprobs
  at::Tensor entropy;             // H_t of pi_theta, differentiable; needed when entropy_coef > 0
  // Optional, for statistics only:
  at::Tensor preplan_mask;  // 1 on preplan tokens (T_loc)
  at::Tensor anchor_mask;   // 1 on anchor tokens (T_glob)
};

struct PolicyLossResult {
  at::Tensor loss;           // scalar, differentiable with respect to logprobs (and entropy)
  double clip_fraction = 0;  // of tokens; with ratio_level sequence, s_i decides for each token
  double mean_ratio = 0;     // token ratios r_t, whatever the ratio level
  double approx_kl = 0;
  double ref_kl = 0;  // mean kl_estimator KL to the reference (0 when not
                      // computed)
  double tokens = 0;  // masked tokens
  double preplan_token_fraction = 0;
  double anchor_token_fraction = 0;
  double preplan_credit_fraction = 0;
  double anchor_credit_fraction = 0;
};

// INVALID_ARGUMENT naming the input for a missing or misshapen tensor.
absl::StatusOr<PolicyLossResult> ComputePolicyLoss(const PolicyLossInputs& inputs,
                                                   const PolicyLossOptions& options);

}  // namespace rhythm::common::credit

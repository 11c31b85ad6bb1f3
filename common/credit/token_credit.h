// Per-token credit multipliers gamma from one response's attention summary
// (docs/method.md §5-§6; the labels A4-A11 below are its §11 readings).
//
// Every strategy returns gamma_t >= 1 with gamma_t = 1 + bonuses, no renormalisation:
//   none           gamma = 1
//   random         +(amp-1) on a seeded random round(q*T) tokens            (baseline)
//   entropy        +(amp-1) on the top round(q*T) tokens by entropy           (baseline)
//   local_chunk    +(amp-1) on T_loc  = top round(q*T) by Delta_t             (preplan tokens)
//   global_anchor  +(amp-1) on T_glob = top round(q*T_def) by FAI, FAI defined (anchor tokens)
//   coupled        +(amp-1) on T_glob \ D, +(1-alpha)(amp-1) on D, +alpha(amp-1) on I(D)
// where
//   Delta_t = |WAAD_t - WAAD_{t+1}|, Delta_{T-1} = 0                          (A5)
//   D       = anchors t with WAAD_t <= median(WAAD) and some u in [t-k, t-1] in T_loc   (A7)
//   intro(t)= argmax_{u in [t-k, t-1], u >= 0} Delta_u, earliest on a tie      (A6)
//   I(D)    = { intro(t) : t in D }, a set: a token introducing two anchors counts once.
// "Top n by value" selects exactly n tokens, larger values first, the earlier token first among
// equal values (a stable tie-break; A11). With `invert_selection` every "top" above (Delta, FAI,
// entropy) becomes "bottom": the n smallest values, the earlier token first among equal values
// (paper Table 5's control); the coupling rules are applied to the inverted sets unchanged.
// The inverted preplan set leaves out the last token, whose Delta (0) is padding, and counts
// round(q*(T-1)) tokens (T > 1). The median of an even count is the mean of the two
// middle values. T_loc, T_glob, D and I are always computed (for statistics), whatever the
// strategy; only gamma depends on it.
//
// Pure functions: no I/O, no globals. Thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::common::credit {

struct TokenCreditOptions {
  v1::CreditStrategy strategy = v1::CREDIT_STRATEGY_COUPLED;
  // q: fraction of tokens each top-q selection takes.
  double quantile = 0.4;
  // gamma_amp: multiplier of a selected token.
  double gamma_amp = 1.5;
  // alpha: share of a dominated anchor's bonus passed to its introductory token.
  double alpha = 0.5;
  // k: look-back for the introductory token.
  int lookback = 3;
  // Seed of the `random` strategy, already specific to this response (see MixSeed).
  uint64_t seed = 0;
  // Select the bottom q instead of the top q (see the top of this file).
  bool invert_selection = false;
};

// The options `config` describes (strategy, q, gamma_amp, alpha, k, invert_selection), with
// seed 0: callers mix in their own per-response seed. The one place config becomes options.
TokenCreditOptions TokenCreditOptionsFromConfig(const v1::CreditConfig& config);

// One response's per-token signals. All 1-D, same length T >= 1, float32 or float64.
struct ResponseSignals {
  at::Tensor waad;     // [T] WAAD_t, finite
  at::Tensor fai;      // [T] FAI_t, NaN where undefined
  at::Tensor entropy;  // [T] entropy of the sampling distribution, finite
};

struct TokenCredit {
  at::Tensor gamma;                   // float32 [T]
  at::Tensor delta;                   // float32 [T] Delta_t
  std::vector<int64_t> preplan;       // T_loc, ascending
  std::vector<int64_t> anchor;        // T_glob, ascending
  std::vector<int64_t> dominated;     // D, ascending
  std::vector<int64_t> introductory;  // I(D), ascending, no duplicates
  std::vector<int64_t> selected;      // tokens the strategy amplified (gamma > 1), ascending
};

// INVALID_ARGUMENT naming the signal for a wrong shape, a length mismatch, a non-finite WAAD or
// entropy, or options out of range.
absl::StatusOr<TokenCredit> ComputeTokenCredit(const ResponseSignals& signals,
                                               const TokenCreditOptions& options);

// Indices of the top round(fraction * n) values of `values` (larger first, earlier index first
// among ties), restricted to indices where `eligible` is true (empty = all), returned ascending.
// The count is taken over the eligible indices.
std::vector<int64_t> TopQuantile(const std::vector<double>& values, double fraction,
                                 const std::vector<bool>& eligible = {});

// Median of `values` (mean of the two middle values for an even count). `values` non-empty.
double Median(std::vector<double> values);

// A per-response seed from a run seed and a stable key (rollout id, line number): SplitMix64.
uint64_t MixSeed(uint64_t seed, uint64_t key);

}  // namespace rhythm::common::credit

#include "common/credit/token_credit.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace rhythm::common::credit {
namespace {

absl::StatusOr<std::vector<double>> ToVector(const at::Tensor& t, const char* name,
                                             bool allow_nan) {
  if (!t.defined() || t.dim() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected a 1-D tensor, got ",
                     t.defined() ? absl::StrCat(t.dim(), " dimensions") : "none"));
  }
  if (!t.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected floating point values"));
  }
  at::Tensor d = t.to(at::kDouble).contiguous();
  const double* p = d.data_ptr<double>();
  std::vector<double> out(p, p + d.numel());
  for (size_t i = 0; i < out.size(); ++i) {
    if (std::isinf(out[i]) || (!allow_nan && std::isnan(out[i]))) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, "[", i, "] = ", out[i], " is not finite"));
    }
  }
  return out;
}

absl::Status CheckOptions(const TokenCreditOptions& o) {
  if (!(o.quantile >= 0 && o.quantile <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("quantile = ", o.quantile, " not in [0, 1]"));
  }
  if (!(o.alpha >= 0 && o.alpha <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("alpha = ", o.alpha, " not in [0, 1]"));
  }
  if (!std::isfinite(o.gamma_amp) || o.gamma_amp < 0) {
    return absl::InvalidArgumentError(absl::StrCat("gamma_amp = ", o.gamma_amp, " is invalid"));
  }
  if (o.lookback < 1) {
    return absl::InvalidArgumentError(absl::StrCat("lookback = ", o.lookback, " must be >= 1"));
  }
  return absl::OkStatus();
}

int64_t RoundCount(double fraction, size_t n) {
  return std::min<int64_t>(static_cast<int64_t>(n),
                           std::llround(fraction * static_cast<double>(n)));
}

// A uniformly random subset of exactly `count` indices of [0, n), ascending. Partial
// Fisher-Yates with a fixed engine, so the same seed gives the same tokens everywhere.
std::vector<int64_t> RandomSubset(size_t n, int64_t count, uint64_t seed) {
  std::vector<int64_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t span = n - static_cast<uint64_t>(i);
    const int64_t j = i + static_cast<int64_t>(rng() % span);
    std::swap(idx[i], idx[j]);
  }
  idx.resize(count);
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

std::vector<int64_t> TopQuantile(const std::vector<double>& values, double fraction,
                                 const std::vector<bool>& eligible) {
  std::vector<int64_t> idx;
  for (size_t i = 0; i < values.size(); ++i) {
    if (eligible.empty() || eligible[i]) idx.push_back(static_cast<int64_t>(i));
  }
  const int64_t count = RoundCount(fraction, idx.size());
  // Stable sort by value descending keeps earlier indices first among equal values.
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return values[a] > values[b]; });
  idx.resize(count);
  std::sort(idx.begin(), idx.end());
  return idx;
}

double Median(std::vector<double> values) {
  const size_t n = values.size();
  std::sort(values.begin(), values.end());
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

uint64_t MixSeed(uint64_t seed, uint64_t key) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (key + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

TokenCreditOptions TokenCreditOptionsFromConfig(const v1::CreditConfig& config) {
  TokenCreditOptions o;
  o.strategy = config.strategy();
  o.quantile = config.quantile();
  o.gamma_amp = config.gamma_amp();
  o.alpha = config.alpha();
  o.lookback = config.lookback();
  o.invert_selection = config.invert_selection();
  return o;
}

absl::StatusOr<TokenCredit> ComputeTokenCredit(const ResponseSignals& signals,
                                               const TokenCreditOptions& options) {
  RHYTHM_RETURN_IF_ERROR(CheckOptions(options));
  RHYTHM_ASSIGN_OR_RETURN(std::vector<double> waad, ToVector(signals.waad, "waad", false));
  RHYTHM_ASSIGN_OR_RETURN(std::vector<double> fai, ToVector(signals.fai, "fai", true));
  RHYTHM_ASSIGN_OR_RETURN(std::vector<double> entropy, ToVector(signals.entropy, "entropy", false));
  const size_t n = waad.size();
  if (n == 0) return absl::InvalidArgumentError("waad: empty response");
  if (fai.size() != n || entropy.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("length mismatch: waad has ", n, " tokens, fai ",
                                                   fai.size(), ", entropy ", entropy.size()));
  }

  TokenCredit out;
  std::vector<double> delta(n, 0.0);
  for (size_t t = 0; t + 1 < n; ++t) delta[t] = std::abs(waad[t] - waad[t + 1]);

  std::vector<bool> fai_defined(n);
  for (size_t t = 0; t < n; ++t) fai_defined[t] = !std::isnan(fai[t]);
  // The bottom q of v is the top q of -v, with the same earlier-first tie-break.
  auto select = [&](const std::vector<double>& v, const std::vector<bool>& eligible) {
    if (!options.invert_selection) return TopQuantile(v, options.quantile, eligible);
    std::vector<double> negated(v.size());
    for (size_t i = 0; i < v.size(); ++i) negated[i] = -v[i];
    return TopQuantile(negated, options.quantile, eligible);
  };
  // Delta of the last token is padding (0), not a measurement: it may never be a bottom-q pick.
  std::vector<bool> delta_eligible;
  if (options.invert_selection && n > 1) {
    delta_eligible.assign(n, true);
    delta_eligible[n - 1] = false;
  }
  out.preplan = select(delta, delta_eligible);
  out.anchor = select(fai, fai_defined);

  // Coupling (A6-A8): dominated anchors and their introductory tokens.
  std::vector<bool> is_preplan(n, false);
  for (int64_t t : out.preplan) is_preplan[t] = true;
  const double median_waad = Median(waad);
  const int64_t k = options.lookback;
  std::vector<bool> is_intro(n, false);
  for (int64_t t : out.anchor) {
    if (waad[t] > median_waad) continue;
    bool preplan_before = false;
    int64_t intro = -1;
    for (int64_t u = std::max<int64_t>(0, t - k); u < t; ++u) {
      preplan_before = preplan_before || is_preplan[u];
      if (intro < 0 || delta[u] > delta[intro]) intro = u;
    }
    if (!preplan_before) continue;
    out.dominated.push_back(t);
    is_intro[intro] = true;
  }
  for (size_t u = 0; u < n; ++u) {
    if (is_intro[u]) out.introductory.push_back(static_cast<int64_t>(u));
  }

  const double bonus = options.gamma_amp - 1.0;
  std::vector<double> gamma(n, 1.0);
  auto add = [&](const std::vector<int64_t>& tokens, double amount) {
    for (int64_t t : tokens) gamma[t] += amount;
  };
  switch (options.strategy) {
    case v1::CREDIT_STRATEGY_RANDOM:
      add(RandomSubset(n, RoundCount(options.quantile, n), options.seed), bonus);
      break;
    case v1::CREDIT_STRATEGY_ENTROPY:
      add(select(entropy, {}), bonus);
      break;
    case v1::CREDIT_STRATEGY_LOCAL_CHUNK:
      add(out.preplan, bonus);
      break;
    case v1::CREDIT_STRATEGY_GLOBAL_ANCHOR:
      add(out.anchor, bonus);
      break;
    case v1::CREDIT_STRATEGY_COUPLED: {
      std::vector<bool> is_dominated(n, false);
      for (int64_t t : out.dominated) is_dominated[t] = true;
      for (int64_t t : out.anchor) {
        gamma[t] += is_dominated[t] ? (1.0 - options.alpha) * bonus : bonus;
      }
      add(out.introductory, options.alpha * bonus);
      break;
    }
    default:  // none / unspecified: plain GRPO.
      break;
  }
  for (size_t t = 0; t < n; ++t) {
    if (gamma[t] != 1.0) out.selected.push_back(static_cast<int64_t>(t));
  }
  out.gamma = at::tensor(gamma, at::kDouble).to(at::kFloat);
  out.delta = at::tensor(delta, at::kDouble).to(at::kFloat);
  return out;
}

}  // namespace rhythm::common::credit

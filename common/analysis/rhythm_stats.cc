#include "common/analysis/rhythm_stats.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>

#include "common/credit/token_credit.h"

namespace rhythm::common::analysis {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

bool Defined(float v) { return !std::isnan(v); }

// Average ranks (1-based) of `v`, equal values sharing their mean rank.
std::vector<double> Ranks(const std::vector<double>& v) {
  const size_t n = v.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> rank(n);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && v[order[j + 1]] == v[order[i]]) ++j;
    const double mean = (static_cast<double>(i) + static_cast<double>(j)) / 2 + 1;
    for (size_t k = i; k <= j; ++k) rank[order[k]] = mean;
    i = j + 1;
  }
  return rank;
}

// |a ∩ b| / |a ∪ b| of the two lists as sets; 1 when both are empty.
template <typename T>
double SetJaccard(const std::vector<T>& a, const std::vector<T>& b) {
  const std::set<T> sa(a.begin(), a.end()), sb(b.begin(), b.end());
  if (sa.empty() && sb.empty()) return 1.0;
  int64_t both = 0;
  for (const T& v : sa) both += static_cast<int64_t>(sb.count(v));
  const int64_t either = static_cast<int64_t>(sa.size() + sb.size()) - both;
  return static_cast<double>(both) / static_cast<double>(either);
}

}  // namespace

std::vector<int64_t> Peaks(const std::vector<float>& x, const PeakOptions& options) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<int64_t> out;
  if (options.rule == PeakRule::kTopFraction) {
    std::vector<double> values(n);
    std::vector<bool> eligible(n);
    for (int64_t t = 0; t < n; ++t) {
      eligible[t] = Defined(x[t]);
      values[t] = eligible[t] ? x[t] : 0.0;
    }
    return credit::TopQuantile(values, options.top_fraction, eligible);
  }
  for (int64_t a = 0; a < n;) {
    if (!Defined(x[a])) {
      ++a;
      continue;
    }
    int64_t b = a;
    while (b + 1 < n && x[b + 1] == x[a]) ++b;  // NaN never equals: runs stop at undefined
    const bool left_lower = a == 0 || !Defined(x[a - 1]) || x[a - 1] < x[a];
    const bool right_lower = b == n - 1 || !Defined(x[b + 1]) || x[b + 1] < x[a];
    if (left_lower && right_lower) out.push_back(a);
    a = b + 1;
  }
  return out;
}

EntropyAtPeaks EntropyAtWaadPeaks(const std::vector<ResponseSeries>& responses,
                                  const PeakOptions& peaks) {
  EntropyAtPeaks r;
  double at = 0, all = 0;
  for (const ResponseSeries& s : responses) {
    for (float e : s.entropy) all += e;
    r.tokens += static_cast<int64_t>(s.entropy.size());
    for (int64_t t : Peaks(s.waad, peaks)) {
      at += s.entropy[t];
      ++r.peak_tokens;
    }
  }
  r.at_peaks = r.peak_tokens > 0 ? at / static_cast<double>(r.peak_tokens) : kNaN;
  r.all = r.tokens > 0 ? all / static_cast<double>(r.tokens) : kNaN;
  return r;
}

FaiFollowsWaad FaiPeaksFollowWaadPeaks(const std::vector<ResponseSeries>& responses,
                                       const PeakOptions& peaks) {
  FaiFollowsWaad r;
  double expected = 0;
  for (const ResponseSeries& s : responses) {
    const int64_t n = static_cast<int64_t>(s.waad.size());
    std::vector<bool> waad_peak(n, false);
    for (int64_t t : Peaks(s.waad, peaks)) waad_peak[t] = true;
    auto counts = [&](int64_t t) { return waad_peak[t] || (t > 0 && waad_peak[t - 1]); };
    const std::vector<int64_t> fai_peaks = Peaks(s.fai, peaks);
    int64_t defined = 0, would_count = 0;
    for (int64_t t = 0; t < n; ++t) {
      if (!Defined(s.fai[t])) continue;
      ++defined;
      would_count += counts(t) ? 1 : 0;
    }
    for (int64_t t : fai_peaks) r.hits += counts(t) ? 1 : 0;
    r.fai_peaks += static_cast<int64_t>(fai_peaks.size());
    if (defined > 0) {
      expected += static_cast<double>(fai_peaks.size()) * static_cast<double>(would_count) /
                  static_cast<double>(defined);
    }
  }
  r.observed = r.fai_peaks > 0 ? static_cast<double>(r.hits) / r.fai_peaks : kNaN;
  r.baseline = r.fai_peaks > 0 ? expected / r.fai_peaks : kNaN;
  return r;
}

Interval BootstrapInterval(
    const std::vector<ResponseSeries>& responses,
    const std::function<double(const std::vector<ResponseSeries>&)>& statistic, int resamples,
    uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> values;
  std::vector<ResponseSeries> draw(responses.size());
  if (responses.empty()) return {kNaN, kNaN};
  std::uniform_int_distribution<size_t> pick(0, responses.size() - 1);
  for (int i = 0; i < resamples; ++i) {
    for (ResponseSeries& d : draw) d = responses[pick(rng)];
    const double v = statistic(draw);
    if (!std::isnan(v)) values.push_back(v);
  }
  if (values.empty()) return {kNaN, kNaN};
  std::sort(values.begin(), values.end());
  auto at = [&](double q) {
    const double pos = q * static_cast<double>(values.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(values.size() - 1, lo + 1);
    return values[lo] + (values[hi] - values[lo]) * (pos - static_cast<double>(lo));
  };
  return {at(0.025), at(0.975)};
}

double Jaccard(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  return SetJaccard(a, b);
}

double Jaccard(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  return SetJaccard(a, b);
}

std::vector<std::string> Words(const std::string& text) {
  std::vector<std::string> out;
  std::string word;
  for (char c : text) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      word.push_back(c);
    } else if (!word.empty()) {
      out.push_back(std::move(word));
      word.clear();
    }
  }
  if (!word.empty()) out.push_back(std::move(word));
  return out;
}

PerturbationSummary SummarizePerturbation(const std::vector<PerturbationTrial>& trials) {
  PerturbationSummary s;
  s.trials = static_cast<int64_t>(trials.size());
  if (trials.empty()) {
    s.top_mean = s.bottom_mean = s.top_changes_more = s.ties = kNaN;
    return s;
  }
  for (const PerturbationTrial& t : trials) {
    s.top_mean += t.top_jaccard;
    s.bottom_mean += t.bottom_jaccard;
    s.top_changes_more += t.top_jaccard < t.bottom_jaccard ? 1 : 0;
    s.ties += t.top_jaccard == t.bottom_jaccard ? 1 : 0;
  }
  for (double* v : {&s.top_mean, &s.bottom_mean, &s.top_changes_more, &s.ties}) {
    *v /= static_cast<double>(trials.size());
  }
  return s;
}

double Spearman(const std::vector<float>& x, const std::vector<float>& y) {
  std::vector<double> a, b;
  for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
    if (std::isfinite(x[i]) && std::isfinite(y[i])) {
      a.push_back(x[i]);
      b.push_back(y[i]);
    }
  }
  if (a.size() < 2) return kNaN;
  const std::vector<double> ra = Ranks(a), rb = Ranks(b);
  const double n = static_cast<double>(ra.size());
  const double ma = std::accumulate(ra.begin(), ra.end(), 0.0) / n;
  const double mb = std::accumulate(rb.begin(), rb.end(), 0.0) / n;
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < ra.size(); ++i) {
    sab += (ra[i] - ma) * (rb[i] - mb);
    saa += (ra[i] - ma) * (ra[i] - ma);
    sbb += (rb[i] - mb) * (rb[i] - mb);
  }
  if (saa <= 0 || sbb <= 0) return kNaN;
  return sab / std::sqrt(saa * sbb);
}

}  // namespace rhythm::common::analysis

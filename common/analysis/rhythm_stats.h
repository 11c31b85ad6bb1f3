// The statistics that measure the preplan-and-anchor rhythm in a model's own responses (the
// paper's §4.2 and Tables 1-2; `rhythm analyze`), and the agreement measures the learner exports
// between two sources of summaries. Pure functions of per-token series: no torch, no I/O, no
// globals. Thread-safe.
//
// Peaks. The paper never defines a peak. Our definition (PeakRule::kLocalMax):
//   a maximal run of equal, defined values x_a = ... = x_b is a peak when both of its neighbours
//   x_{a-1} and x_{b+1} are lower, undefined (NaN) or outside the series; the peak's position is
//   the run's first token a. A series of one defined value has one peak.
// The alternative reported beside it (PeakRule::kTopFraction): the top round(fraction * D) of
//   the D defined tokens by value, larger first, the earlier token first among equal values
//   (the credit's own top-q rule, TopQuantile).
//
// The three statistics, over a set of responses (tokens pooled, each response's own peaks):
//   entropy at WAAD peaks   mean entropy over WAAD-peak tokens, against the mean over all tokens
//   FAI follows WAAD        the share of FAI peaks s with s or s-1 a WAAD peak ("at or one token
//                           after"), against the share expected if each response's FAI peaks
//                           were placed at random among its FAI-defined positions, their count
//                           kept: sum_r n_r * h_r / D_r / sum_r n_r, where n_r is the response's
//                           FAI peak count, D_r its defined positions and h_r the defined
//                           positions that would count (the exact mean of the paper's shuffle)
//   perturbation            token-set (or word-set) Jaccard of a perturbed continuation with the
//                           unperturbed one, at top- and bottom-FAI positions
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace rhythm::common::analysis {

enum class PeakRule { kLocalMax, kTopFraction };

struct PeakOptions {
  PeakRule rule = PeakRule::kLocalMax;
  double top_fraction = 0.2;  // kTopFraction only
};

// Positions of the peaks of `x` (NaN = undefined, never a peak), ascending.
std::vector<int64_t> Peaks(const std::vector<float>& x, const PeakOptions& options);

// One response's series, all of one length T >= 1.
struct ResponseSeries {
  std::vector<float> waad;     // finite
  std::vector<float> fai;      // NaN where undefined
  std::vector<float> entropy;  // finite
};

struct EntropyAtPeaks {
  double at_peaks = 0;  // mean entropy of WAAD-peak tokens (NaN without any)
  double all = 0;       // mean entropy of every token (NaN without any)
  int64_t peak_tokens = 0, tokens = 0;
};
EntropyAtPeaks EntropyAtWaadPeaks(const std::vector<ResponseSeries>& responses,
                                  const PeakOptions& peaks);

struct FaiFollowsWaad {
  double observed = 0;  // share of FAI peaks at or one token after a WAAD peak (NaN: no peaks)
  double baseline = 0;  // the same share, FAI peaks placed at random (see the header)
  int64_t fai_peaks = 0, hits = 0;
};
FaiFollowsWaad FaiPeaksFollowWaadPeaks(const std::vector<ResponseSeries>& responses,
                                       const PeakOptions& peaks);

// A 95% percentile bootstrap interval of `statistic` over responses: `resamples` draws of
// responses with replacement (seeded, so reproducible), the statistic of each draw, and its
// 2.5th and 97.5th percentiles. Draws whose statistic is NaN are left out.
struct Interval {
  double lo = 0, hi = 0;
};
Interval BootstrapInterval(
    const std::vector<ResponseSeries>& responses,
    const std::function<double(const std::vector<ResponseSeries>&)>& statistic,
    int resamples, uint64_t seed);

// |a ∩ b| / |a ∪ b| of two sets given as lists (duplicates ignored); 1 when both are empty.
double Jaccard(const std::vector<int64_t>& a, const std::vector<int64_t>& b);
double Jaccard(const std::vector<std::string>& a, const std::vector<std::string>& b);

// The words of a text: maximal runs of ASCII letters and digits ("27*3=81\nback" ->
// {"27", "3", "81", "back"}), the content words of a countdown trace or a maths answer.
std::vector<std::string> Words(const std::string& text);

// One perturbation trial: the same response and alternative rank, perturbed at its top-FAI and
// at its bottom-FAI position.
struct PerturbationTrial {
  double top_jaccard = 0, bottom_jaccard = 0;
};
struct PerturbationSummary {
  double top_mean = 0, bottom_mean = 0;  // NaN without trials
  double top_changes_more = 0;           // share of trials with top_jaccard < bottom_jaccard
  double ties = 0;                       // share with top_jaccard == bottom_jaccard
  int64_t trials = 0;
};
PerturbationSummary SummarizePerturbation(const std::vector<PerturbationTrial>& trials);

// Spearman's rank correlation over the indices where both series are finite: the Pearson
// correlation of their ranks, equal values sharing their mean rank. NaN when fewer than two
// such indices remain or either side is constant there.
double Spearman(const std::vector<float>& x, const std::vector<float>& y);

}  // namespace rhythm::common::analysis

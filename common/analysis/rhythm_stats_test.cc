// The rhythm statistics against hand-worked answers and brute-force references: peaks by
// checking every token's neighbourhood the slow way, the shuffle baseline by enumerating every
// placement of the FAI peaks, Spearman by hand-ranked values.
#include "common/analysis/rhythm_stats.h"

#include <cmath>
#include <functional>
#include <limits>
#include <random>

#include "gtest/gtest.h"

namespace rhythm::common::analysis {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// The slow way: t is a peak when it is the first token of its run of equal values and the
// nearest token on each side that differs from it (or is undefined) is lower, undefined, or
// beyond the series.
std::vector<int64_t> BruteLocalMaxPeaks(const std::vector<float>& x) {
  std::vector<int64_t> out;
  const int64_t n = static_cast<int64_t>(x.size());
  for (int64_t t = 0; t < n; ++t) {
    if (std::isnan(x[t])) continue;
    if (t > 0 && x[t - 1] == x[t]) continue;  // not the first of its run
    bool ok = t == 0 || std::isnan(x[t - 1]) || x[t - 1] < x[t];
    int64_t r = t + 1;
    while (r < n && x[r] == x[t]) ++r;
    ok = ok && (r == n || std::isnan(x[r]) || x[r] < x[t]);
    if (ok) out.push_back(t);
  }
  return out;
}

TEST(Peaks, HandMadeSeriesWithTiesAndUndefinedValues) {
  const PeakOptions local;
  using V = std::vector<int64_t>;
  EXPECT_EQ(Peaks({1, 3, 2}, local), (V{1}));
  EXPECT_EQ(Peaks({1, 2, 2, 1}, local), (V{1}));  // a plateau: its first token
  EXPECT_EQ(Peaks({1, 2, 2, 3}, local), (V{3}));  // a shelf on the way up is not a peak
  EXPECT_EQ(Peaks({3, 3}, local), (V{0}));        // all equal: one peak
  EXPECT_EQ(Peaks({2, 1, 2}, local), (V{0, 2}));  // ends compare with their one neighbour
  EXPECT_EQ(Peaks({5}, local), (V{0}));
  EXPECT_EQ(Peaks({kNaN, 1, kNaN}, local), (V{1}));  // undefined neighbours count as lower
  EXPECT_EQ(Peaks({kNaN, kNaN}, local), (V{}));      // undefined is never a peak
  EXPECT_EQ(Peaks({}, local), (V{}));
  // The alternative: the top round(0.4 * 5) = 2 defined values, the earlier one on a tie.
  const PeakOptions top{PeakRule::kTopFraction, 0.4};
  EXPECT_EQ(Peaks({1, 4, 4, 4, 0}, top), (V{1, 2}));
  EXPECT_EQ(Peaks({kNaN, 1, 3, kNaN, 2, 0}, top), (V{2, 4}));  // 2 of the 4 defined
}

TEST(Peaks, LocalMaximaMatchTheSlowWayOnRandomSeries) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> value(0, 3), len(1, 12), coin(0, 5);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<float> x(len(rng));
    for (float& v : x) v = coin(rng) == 0 ? kNaN : static_cast<float>(value(rng));  // many ties
    EXPECT_EQ(Peaks(x, {}), BruteLocalMaxPeaks(x)) << "trial " << trial;
  }
}

TEST(EntropyAtWaadPeaks, PoolsTokensOverResponses) {
  // Response 1: WAAD peaks at 1 and 3 (entropies 0.9, 0.7); response 2: one peak at 0 (0.5).
  std::vector<ResponseSeries> r = {
      {{0, 2, 1, 3}, {kNaN, kNaN, kNaN, kNaN}, {0.1f, 0.9f, 0.2f, 0.7f}},
      {{4, 1}, {kNaN, kNaN}, {0.5f, 0.1f}},
  };
  const EntropyAtPeaks e = EntropyAtWaadPeaks(r, {});
  EXPECT_EQ(e.peak_tokens, 3);
  EXPECT_EQ(e.tokens, 6);
  EXPECT_NEAR(e.at_peaks, (0.9 + 0.7 + 0.5) / 3, 1e-6);
  EXPECT_NEAR(e.all, (0.1 + 0.9 + 0.2 + 0.7 + 0.5 + 0.1) / 6, 1e-6);
  EXPECT_TRUE(std::isnan(EntropyAtWaadPeaks({}, {}).at_peaks));
}

// Every placement of each response's FAI peak count among its defined positions, all
// combinations across responses, and the mean of the pooled share that lands at or one token
// after a WAAD peak.
double BruteShuffleBaseline(const std::vector<ResponseSeries>& rs) {
  struct Space {
    std::vector<int64_t> defined;
    std::vector<bool> counts;  // by position
    int64_t k = 0;
  };
  std::vector<Space> spaces;
  int64_t total_peaks = 0;
  for (const ResponseSeries& s : rs) {
    Space sp;
    const std::vector<int64_t> wp = Peaks(s.waad, {});
    sp.counts.assign(s.waad.size(), false);
    for (size_t t = 0; t < s.waad.size(); ++t) {
      for (int64_t p : wp) {
        if (p == static_cast<int64_t>(t) || p + 1 == static_cast<int64_t>(t)) sp.counts[t] = true;
      }
      if (!std::isnan(s.fai[t])) sp.defined.push_back(static_cast<int64_t>(t));
    }
    sp.k = static_cast<int64_t>(Peaks(s.fai, {}).size());
    total_peaks += sp.k;
    spaces.push_back(sp);
  }
  // All k-subsets of each response's defined positions, as lists of hit counts.
  std::vector<std::vector<int64_t>> hits_per_subset;
  for (const Space& sp : spaces) {
    std::vector<int64_t> hits;
    const int64_t d = static_cast<int64_t>(sp.defined.size());
    for (uint32_t mask = 0; mask < (1u << d); ++mask) {
      if (__builtin_popcount(mask) != sp.k) continue;
      int64_t h = 0;
      for (int64_t i = 0; i < d; ++i) {
        if (mask & (1u << i)) h += sp.counts[sp.defined[i]] ? 1 : 0;
      }
      hits.push_back(h);
    }
    hits_per_subset.push_back(hits);
  }
  double sum = 0;
  int64_t placements = 0;
  std::function<void(size_t, int64_t)> walk = [&](size_t r, int64_t hits) {
    if (r == hits_per_subset.size()) {
      sum += static_cast<double>(hits) / total_peaks;
      ++placements;
      return;
    }
    for (int64_t h : hits_per_subset[r]) walk(r + 1, hits + h);
  };
  walk(0, 0);
  return sum / placements;
}

TEST(FaiFollowsWaad, HandWorkedResponse) {
  // WAAD peaks at 1 and 4; FAI peaks at 2 (one after 1: counts) and 5 (one after 4: counts) and
  // FAI undefined at 6-7. Defined positions 0..5; those that would count: 1, 2, 4, 5 -> 4 of 6.
  std::vector<ResponseSeries> r = {{{0, 5, 1, 0, 6, 2, 1, 0},
                                    {0.1f, 0.2f, 0.9f, 0.1f, 0.3f, 0.8f, kNaN, kNaN},
                                    std::vector<float>(8, 0.f)}};
  const FaiFollowsWaad f = FaiPeaksFollowWaadPeaks(r, {});
  EXPECT_EQ(f.fai_peaks, 2);
  EXPECT_EQ(f.hits, 2);
  EXPECT_DOUBLE_EQ(f.observed, 1.0);
  EXPECT_NEAR(f.baseline, 4.0 / 6.0, 1e-12);
  EXPECT_NEAR(f.baseline, BruteShuffleBaseline(r), 1e-12);
}

TEST(FaiFollowsWaad, BaselineIsTheMeanOverEveryPlacement) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> value(0, 4), len(2, 9), coin(0, 3);
  int checked = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<ResponseSeries> rs;
    for (int r = 0; r < 3; ++r) {
      ResponseSeries s;
      const int n = len(rng);
      for (int t = 0; t < n; ++t) {
        s.waad.push_back(static_cast<float>(value(rng)));
        s.fai.push_back(coin(rng) == 0 ? kNaN : static_cast<float>(value(rng)));
        s.entropy.push_back(0.f);
      }
      rs.push_back(s);
    }
    const FaiFollowsWaad f = FaiPeaksFollowWaadPeaks(rs, {});
    if (f.fai_peaks == 0) {
      EXPECT_TRUE(std::isnan(f.baseline));
      continue;
    }
    EXPECT_NEAR(f.baseline, BruteShuffleBaseline(rs), 1e-9) << "trial " << trial;
    // The observed share by counting the slow way.
    int64_t hits = 0, peaks = 0;
    for (const ResponseSeries& s : rs) {
      const std::vector<int64_t> wp = BruteLocalMaxPeaks(s.waad);
      for (int64_t p : BruteLocalMaxPeaks(s.fai)) {
        ++peaks;
        for (int64_t w : wp) {
          if (w == p || w + 1 == p) {
            ++hits;
            break;
          }
        }
      }
    }
    EXPECT_EQ(f.fai_peaks, peaks);
    EXPECT_EQ(f.hits, hits);
    ++checked;
  }
  EXPECT_GT(checked, 200);
}

TEST(FaiFollowsWaad, EveryFaiUndefinedHasNoPeaksAndNoShare) {
  std::vector<ResponseSeries> r = {{{1, 2, 1}, {kNaN, kNaN, kNaN}, {0, 0, 0}}};
  const FaiFollowsWaad f = FaiPeaksFollowWaadPeaks(r, {});
  EXPECT_EQ(f.fai_peaks, 0);
  EXPECT_TRUE(std::isnan(f.observed));
  EXPECT_TRUE(std::isnan(f.baseline));
}

TEST(Bootstrap, ReproducibleCoversTheStatisticAndCollapsesOnIdenticalResponses) {
  std::vector<ResponseSeries> rs;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0, 1);
  for (int r = 0; r < 40; ++r) {
    ResponseSeries s;
    for (int t = 0; t < 10; ++t) {
      s.waad.push_back(u(rng));
      s.fai.push_back(u(rng));
      s.entropy.push_back(u(rng));
    }
    rs.push_back(s);
  }
  auto lift = [](const std::vector<ResponseSeries>& d) {
    const EntropyAtPeaks e = EntropyAtWaadPeaks(d, {});
    return e.at_peaks - e.all;
  };
  const Interval a = BootstrapInterval(rs, lift, 300, 5), b = BootstrapInterval(rs, lift, 300, 5);
  EXPECT_EQ(a.lo, b.lo);
  EXPECT_EQ(a.hi, b.hi);
  EXPECT_LT(a.lo, lift(rs));
  EXPECT_GT(a.hi, lift(rs));
  const Interval same = BootstrapInterval(std::vector<ResponseSeries>(10, rs[0]), lift, 100, 5);
  EXPECT_NEAR(same.lo, lift({rs[0]}), 1e-9);
  EXPECT_NEAR(same.hi, lift({rs[0]}), 1e-9);
}

TEST(Jaccard, SetsAndWords) {
  EXPECT_DOUBLE_EQ(Jaccard(std::vector<int64_t>{1, 2, 3}, {2, 3, 4}), 0.5);
  EXPECT_DOUBLE_EQ(Jaccard(std::vector<int64_t>{1, 1, 2}, {2, 1}), 1.0);  // duplicates ignored
  EXPECT_DOUBLE_EQ(Jaccard(std::vector<int64_t>{}, {}), 1.0);
  EXPECT_DOUBLE_EQ(Jaccard(std::vector<int64_t>{}, {1}), 0.0);
  EXPECT_EQ(Words("20+7=27\n27*3=81\nback"),
            (std::vector<std::string>{"20", "7", "27", "27", "3", "81", "back"}));
  EXPECT_TRUE(Words("+-*/=\n").empty());
  // {20, 7, 27, 3, 81} and {20, 3, 60, 7, 67}: 3 shared of 7.
  EXPECT_DOUBLE_EQ(Jaccard(Words("20+7=27\n27*3=81"), Words("20*3=60\n60+7=67")), 3.0 / 7.0);
}

TEST(Perturbation, MeansSharesAndTies) {
  const PerturbationSummary s =
      SummarizePerturbation({{0.2, 0.6}, {0.5, 0.5}, {0.9, 0.3}, {0.1, 0.4}});
  EXPECT_EQ(s.trials, 4);
  EXPECT_NEAR(s.top_mean, (0.2 + 0.5 + 0.9 + 0.1) / 4, 1e-12);
  EXPECT_NEAR(s.bottom_mean, (0.6 + 0.5 + 0.3 + 0.4) / 4, 1e-12);
  EXPECT_DOUBLE_EQ(s.top_changes_more, 0.5);
  EXPECT_DOUBLE_EQ(s.ties, 0.25);
  EXPECT_TRUE(std::isnan(SummarizePerturbation({}).top_mean));
}

TEST(Spearman, DistinctValuesTiesAndUndefined) {
  // Distinct values: 1 - 6 sum d^2 / (n (n^2 - 1)).
  const std::vector<float> x = {3, 1, 4, 1.5f, 5, 9, 2.6f};
  const std::vector<float> y = {2, 7, 1, 8, 2.8f, 1.8f, 2.85f};
  // Ranks of x: 4 1 5 2 6 7 3; of y: 3 6 1 7 4 2 5 -> d = 1 -5 4 -5 2 5 -2, sum d^2 = 100.
  EXPECT_NEAR(Spearman(x, y), 1 - 6.0 * 100 / (7 * 48), 1e-12);
  // Ties share their mean rank: x ranks 1 2.5 2.5 4, y ranks 1 3 2 4 -> 4.5 / sqrt(4.5 * 5).
  EXPECT_NEAR(Spearman({1, 2, 2, 3}, {1, 3, 2, 4}), 4.5 / std::sqrt(4.5 * 5), 1e-12);
  // Undefined entries drop out pairwise.
  EXPECT_NEAR(Spearman({1, kNaN, 2, 3}, {10, 0, 20, 30}), 1.0, 1e-12);
  EXPECT_NEAR(Spearman({1, 2, 3}, {3, 2, 1}), -1.0, 1e-12);
  EXPECT_TRUE(std::isnan(Spearman({1, 1, 1}, {1, 2, 3})));  // constant
  EXPECT_TRUE(std::isnan(Spearman({1, kNaN}, {1, 2})));     // one pair
}

}  // namespace
}  // namespace rhythm::common::analysis

// gamma strategies against their definitions (docs/method.md §5, §6, §11), computed here
// the slow, obvious way: O(n^2) ranks instead of sorting, explicit loops for every set.
#include "common/credit/token_credit.h"

#include <cmath>
#include <random>
#include <set>

#include "ATen/ATen.h"
#include "gtest/gtest.h"

namespace rhythm::common::credit {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

at::Tensor T(const std::vector<double>& v) { return at::tensor(v, at::kDouble); }

std::vector<double> ToDoubles(const at::Tensor& t) {
  at::Tensor d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

// --- brute-force reference ------------------------------------------------------------------

// Token i is selected iff fewer than `count` eligible tokens beat it, where j beats i when its
// value is larger (smaller, for the bottom selection), or equal with a smaller index.
std::set<int64_t> RefRank(const std::vector<double>& v, double q, const std::vector<bool>& ok,
                          bool bottom) {
  int64_t eligible = 0;
  for (size_t i = 0; i < v.size(); ++i) eligible += ok[i] ? 1 : 0;
  const int64_t count = static_cast<int64_t>(std::floor(q * eligible + 0.5));
  std::set<int64_t> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!ok[i]) continue;
    int64_t beaten_by = 0;
    for (size_t j = 0; j < v.size(); ++j) {
      const bool better = bottom ? v[j] < v[i] : v[j] > v[i];
      if (ok[j] && (better || (v[j] == v[i] && j < i))) ++beaten_by;
    }
    if (beaten_by < count) out.insert(static_cast<int64_t>(i));
  }
  return out;
}

std::set<int64_t> RefSelect(const std::vector<double>& v, double q, const std::vector<bool>& ok,
                            bool invert) {
  return RefRank(v, q, ok, invert);
}

double RefMedian(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct RefResult {
  std::vector<double> gamma;
  std::set<int64_t> preplan, anchor, dominated, intro;
};

RefResult RefCredit(const std::vector<double>& waad, const std::vector<double>& fai,
                    const std::vector<double>& entropy, const TokenCreditOptions& o) {
  const int64_t n = static_cast<int64_t>(waad.size());
  std::vector<double> delta(n, 0.0);
  for (int64_t t = 0; t < n - 1; ++t) delta[t] = std::fabs(waad[t] - waad[t + 1]);
  std::vector<bool> all(n, true), defined(n);
  for (int64_t t = 0; t < n; ++t) defined[t] = !std::isnan(fai[t]);
  RefResult r;
  std::vector<bool> delta_ok = all;
  if (o.invert_selection && n > 1) delta_ok[n - 1] = false;  // padding, never a bottom pick
  r.preplan = RefSelect(delta, o.quantile, delta_ok, o.invert_selection);
  r.anchor = RefSelect(fai, o.quantile, defined, o.invert_selection);
  const double median = RefMedian(waad);
  std::map<int64_t, int64_t> intro_of;
  for (int64_t t : r.anchor) {
    bool recent_preplan = false;
    for (int64_t u = t - o.lookback; u <= t - 1; ++u) {
      if (u >= 0 && r.preplan.count(u)) recent_preplan = true;
    }
    if (waad[t] <= median && recent_preplan) {
      r.dominated.insert(t);
      int64_t best = -1;
      for (int64_t u = t - o.lookback; u <= t - 1; ++u) {
        if (u < 0) continue;
        if (best == -1 || delta[u] > delta[best]) best = u;  // strict: earliest wins ties
      }
      r.intro.insert(best);
    }
  }
  const double b = o.gamma_amp - 1;
  r.gamma.assign(n, 1.0);
  for (int64_t t = 0; t < n; ++t) {
    switch (o.strategy) {
      case v1::CREDIT_STRATEGY_LOCAL_CHUNK:
        if (r.preplan.count(t)) r.gamma[t] += b;
        break;
      case v1::CREDIT_STRATEGY_GLOBAL_ANCHOR:
        if (r.anchor.count(t)) r.gamma[t] += b;
        break;
      case v1::CREDIT_STRATEGY_ENTROPY:
        if (RefSelect(entropy, o.quantile, all, o.invert_selection).count(t)) r.gamma[t] += b;
        break;
      case v1::CREDIT_STRATEGY_COUPLED:
        if (r.anchor.count(t) && !r.dominated.count(t)) r.gamma[t] += b;
        if (r.dominated.count(t)) r.gamma[t] += (1 - o.alpha) * b;
        if (r.intro.count(t)) r.gamma[t] += o.alpha * b;
        break;
      default:
        break;
    }
  }
  return r;
}

std::set<int64_t> AsSet(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }

// --- hand-worked example ----------------------------------------------------------------------
// waad  = 1 5 2 2 6 1 1 3 3 2        Delta = 4 3 0 4 5 0 2 0 1 0
// T_loc (top round(0.4*10)=4 by Delta)  = {0, 1, 3, 4}
// fai   = .1 .5 .9 .2 .3 .8 .05 .7 - -  (8 defined -> round(3.2) = 3) T_glob = {2, 5, 7}
// median(waad) = (2 + 2) / 2 = 2
// anchor 2: waad 2 <= 2, window {0,1} has preplan -> dominated, intro = argmax Delta = 0
// anchor 5: waad 1 <= 2, window {2,3,4} has preplan -> dominated, intro = 4 (Delta 5)
// anchor 7: waad 3 > 2 -> not dominated
// coupled gamma: 1.5 on 7; 1.25 on 2, 5 (dominated) and on 0, 4 (introductory)
ResponseSignals HandExample() {
  return {T({1, 5, 2, 2, 6, 1, 1, 3, 3, 2}), T({.1, .5, .9, .2, .3, .8, .05, .7, kNaN, kNaN}),
          T({.1, .2, .3, .4, .5, .6, .7, .8, .9, 1.0})};
}

TEST(TokenCredit, HandWorkedCoupledExample) {
  TokenCreditOptions o;  // defaults: coupled, q .4, amp 1.5, alpha .5, k 3
  absl::StatusOr<TokenCredit> c = ComputeTokenCredit(HandExample(), o);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->preplan, (std::vector<int64_t>{0, 1, 3, 4}));
  EXPECT_EQ(c->anchor, (std::vector<int64_t>{2, 5, 7}));
  EXPECT_EQ(c->dominated, (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(c->introductory, (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(ToDoubles(c->gamma), (std::vector<double>{1.25, 1, 1.25, 1, 1.25, 1.25, 1, 1.5, 1, 1}));
  EXPECT_EQ(ToDoubles(c->delta), (std::vector<double>{4, 3, 0, 4, 5, 0, 2, 0, 1, 0}));
}

TEST(TokenCredit, HandWorkedOtherStrategies) {
  TokenCreditOptions o;
  o.strategy = v1::CREDIT_STRATEGY_LOCAL_CHUNK;
  EXPECT_EQ(ToDoubles(ComputeTokenCredit(HandExample(), o)->gamma),
            (std::vector<double>{1.5, 1.5, 1, 1.5, 1.5, 1, 1, 1, 1, 1}));
  o.strategy = v1::CREDIT_STRATEGY_GLOBAL_ANCHOR;
  EXPECT_EQ(ToDoubles(ComputeTokenCredit(HandExample(), o)->gamma),
            (std::vector<double>{1, 1, 1.5, 1, 1, 1.5, 1, 1.5, 1, 1}));
  o.strategy = v1::CREDIT_STRATEGY_ENTROPY;
  EXPECT_EQ(ToDoubles(ComputeTokenCredit(HandExample(), o)->gamma),
            (std::vector<double>{1, 1, 1, 1, 1, 1, 1.5, 1.5, 1.5, 1.5}));
  o.strategy = v1::CREDIT_STRATEGY_NONE;
  EXPECT_EQ(ToDoubles(ComputeTokenCredit(HandExample(), o)->gamma), std::vector<double>(10, 1.0));
}

TEST(TokenCredit, AnAnchorThatIntroducesAnotherGetsBothBonuses) {
  // waad 0 4 0 0 0: Delta 4 4 0 0 0, median 0; fai .9 .1 .8 - - (3 defined).
  TokenCreditOptions o;
  o.quantile = 0.67;  // round(.67*5) = 3 preplan {0,1,2}; round(.67*3) = 2 anchors {0, 2}
  ResponseSignals s{T({0, 4, 0, 0, 0}), T({.9, .1, .8, kNaN, kNaN}), T({0, 0, 0, 0, 0})};
  absl::StatusOr<TokenCredit> c = ComputeTokenCredit(s, o);
  ASSERT_TRUE(c.ok()) << c.status();
  // anchor 2: waad 0 <= 0 and window {0, 1} holds preplan tokens -> dominated; intro = 0
  // (Delta 4 ties with token 1: the earlier wins). Anchor 0 has an empty window: not dominated.
  EXPECT_EQ(c->dominated, (std::vector<int64_t>{2}));
  EXPECT_EQ(c->introductory, (std::vector<int64_t>{0}));
  const std::vector<double> g = ToDoubles(c->gamma);
  EXPECT_DOUBLE_EQ(g[0], 1.0 + 0.5 + 0.25) << "anchor bonus plus introductory share";
  EXPECT_DOUBLE_EQ(g[2], 1.25);
}

TEST(TokenCredit, LengthOneResponse) {
  ResponseSignals s{T({3.0}), T({kNaN}), T({0.5})};
  TokenCreditOptions o;
  absl::StatusOr<TokenCredit> c = ComputeTokenCredit(s, o);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->preplan.empty()) << "round(0.4 * 1) = 0";
  EXPECT_TRUE(c->anchor.empty());
  EXPECT_EQ(ToDoubles(c->gamma), std::vector<double>{1.0});
  o.quantile = 0.6;  // round(0.6) = 1
  o.strategy = v1::CREDIT_STRATEGY_LOCAL_CHUNK;
  c = ComputeTokenCredit(s, o);
  EXPECT_EQ(c->preplan, std::vector<int64_t>{0});
  EXPECT_EQ(ToDoubles(c->gamma), std::vector<double>{1.5});
}

TEST(TokenCredit, MatchesBruteForceOnRandomInputsWithTies) {
  std::mt19937 rng(2510);
  int dominated_seen = 0, overlap_seen = 0, undefined_seen = 0, inverted_seen = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 40);
    std::vector<double> waad(n), fai(n), entropy(n);
    for (int t = 0; t < n; ++t) {
      waad[t] = static_cast<double>(rng() % 4);  // few values: many ties
      fai[t] = (rng() % 4 == 0) ? kNaN : (rng() % 5) / 4.0;
      entropy[t] = (rng() % 3) / 2.0;
    }
    if (rng() % 5 == 0) {  // FAI undefined on the tail, as the band makes it
      for (int t = std::max(0, n - 10); t < n; ++t) fai[t] = kNaN;
    }
    TokenCreditOptions o;
    o.quantile = std::vector<double>{0.4, 0.2, 0.5, 1.0, 0.0}[rng() % 5];
    o.alpha = std::vector<double>{0.5, 0.0, 1.0, 0.3}[rng() % 4];
    o.lookback = 1 + static_cast<int>(rng() % 3);
    o.gamma_amp = std::vector<double>{1.5, 2.0}[rng() % 2];
    o.invert_selection = rng() % 3 == 0;
    inverted_seen += o.invert_selection;
    for (auto strategy :
         {v1::CREDIT_STRATEGY_NONE, v1::CREDIT_STRATEGY_ENTROPY, v1::CREDIT_STRATEGY_LOCAL_CHUNK,
          v1::CREDIT_STRATEGY_GLOBAL_ANCHOR, v1::CREDIT_STRATEGY_COUPLED}) {
      o.strategy = strategy;
      absl::StatusOr<TokenCredit> got = ComputeTokenCredit({T(waad), T(fai), T(entropy)}, o);
      ASSERT_TRUE(got.ok()) << got.status();
      RefResult want = RefCredit(waad, fai, entropy, o);
      ASSERT_EQ(AsSet(got->preplan), want.preplan) << "trial " << trial;
      ASSERT_EQ(AsSet(got->anchor), want.anchor) << "trial " << trial;
      ASSERT_EQ(AsSet(got->dominated), want.dominated) << "trial " << trial;
      ASSERT_EQ(AsSet(got->introductory), want.intro) << "trial " << trial;
      const std::vector<double> g = ToDoubles(got->gamma);
      for (int t = 0; t < n; ++t) {
        ASSERT_NEAR(g[t], want.gamma[t], 1e-6) << "trial " << trial << " token " << t;
      }
      if (strategy == v1::CREDIT_STRATEGY_COUPLED) {
        dominated_seen += !want.dominated.empty();
        for (int64_t u : want.intro) overlap_seen += want.anchor.count(u) ? 1 : 0;
      }
    }
    for (double f : fai) undefined_seen += std::isnan(f);
  }
  // The random cases really exercise the interesting paths.
  EXPECT_GT(dominated_seen, 100);
  EXPECT_GT(overlap_seen, 10);
  EXPECT_GT(undefined_seen, 1000);
  EXPECT_GT(inverted_seen, 800);
}

TEST(TokenCredit, InvertedSelectionTakesTheBottomQ) {
  // The hand example inverted: Delta = 4 3 0 4 5 0 2 0 1 (0: the last token's padding is left
  // out), bottom round(0.4 * 9) = 4 = {2, 5, 7 (zeros), 8 (1)}; FAI defined on 0..7, bottom 3
  // = {6 (.05), 0 (.1), 3 (.2)}.
  TokenCreditOptions o;
  o.invert_selection = true;
  o.strategy = v1::CREDIT_STRATEGY_GLOBAL_ANCHOR;
  absl::StatusOr<TokenCredit> c = ComputeTokenCredit(HandExample(), o);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->preplan, (std::vector<int64_t>{2, 5, 7, 8}));
  EXPECT_EQ(c->anchor, (std::vector<int64_t>{0, 3, 6}));
  EXPECT_EQ(ToDoubles(c->gamma), (std::vector<double>{1.5, 1, 1, 1.5, 1, 1, 1.5, 1, 1, 1}));
  o.strategy = v1::CREDIT_STRATEGY_ENTROPY;  // entropy rises along the response
  EXPECT_EQ(ToDoubles(ComputeTokenCredit(HandExample(), o)->gamma),
            (std::vector<double>{1.5, 1.5, 1.5, 1.5, 1, 1, 1, 1, 1, 1}));
}

TEST(TokenCredit, RandomStrategyIsSeededAndExact) {
  std::vector<double> zeros(50, 0.0);
  ResponseSignals s{T(zeros), T(zeros), T(zeros)};
  TokenCreditOptions o;
  o.strategy = v1::CREDIT_STRATEGY_RANDOM;
  std::vector<int> hits(50, 0);
  std::set<std::vector<int64_t>> distinct;
  for (uint64_t key = 0; key < 200; ++key) {
    o.seed = MixSeed(7, key);
    TokenCredit a = *ComputeTokenCredit(s, o);
    TokenCredit b = *ComputeTokenCredit(s, o);
    EXPECT_TRUE(a.gamma.equal(b.gamma)) << "same seed, same tokens";
    EXPECT_EQ(a.selected.size(), 20u) << "exactly round(0.4 * 50)";
    for (int64_t t : a.selected) {
      ++hits[t];
      EXPECT_FLOAT_EQ(a.gamma[t].item<float>(), 1.5f);
    }
    distinct.insert(a.selected);
  }
  EXPECT_GT(distinct.size(), 190u) << "different keys choose different tokens";
  for (int t = 0; t < 50; ++t) EXPECT_GT(hits[t], 40) << "token " << t << " is rarely chosen";
}

TEST(TokenCredit, BadInputsNameTheSignal) {
  TokenCreditOptions o;
  auto status = [&](ResponseSignals s) { return ComputeTokenCredit(s, o).status(); };
  absl::Status s = status({T({1, 2}), T({1}), T({1, 2})});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("waad has 2 tokens, fai 1"), std::string::npos) << s;
  s = status({T({1, kNaN}), T({1, 1}), T({1, 2})});
  EXPECT_NE(s.message().find("waad[1] = nan is not finite"), std::string::npos) << s;
  s = status({T({1, 2}), T({1, INFINITY}), T({1, 2})});
  EXPECT_NE(s.message().find("fai[1] = inf"), std::string::npos) << s;
  s = status({at::ones({2, 2}), T({1, 1}), T({1, 2})});
  EXPECT_NE(s.message().find("waad: expected a 1-D tensor"), std::string::npos) << s;
  s = status({T({}), T({}), T({})});
  EXPECT_NE(s.message().find("empty"), std::string::npos) << s;
  o.quantile = 1.5;
  s = status({T({1}), T({1}), T({1})});
  EXPECT_NE(s.message().find("quantile = 1.5"), std::string::npos) << s;
}

TEST(TokenCredit, HelpersAgreeWithReference) {
  EXPECT_DOUBLE_EQ(Median({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(Median({4, 1, 3, 2}), 2.5);
  EXPECT_EQ(TopQuantile({1, 3, 3, 2, 3}, 0.4), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(TopQuantile({1, 3, 3, 2, 3}, 0.4, {true, false, true, true, true}),
            (std::vector<int64_t>{2, 4}))
      << "count is over eligible tokens: round(0.4 * 4) = 2";
  EXPECT_NE(MixSeed(1, 2), MixSeed(1, 3));
  EXPECT_NE(MixSeed(1, 2), MixSeed(2, 2));
}

}  // namespace
}  // namespace rhythm::common::credit

// Group advantages and shaping against loops written out by hand.
#include "common/credit/advantages.h"

#include <cmath>
#include <random>

#include "ATen/ATen.h"
#include "gtest/gtest.h"

namespace rhythm::common::credit {
namespace {

// Reference: explicit loops, sample std with Bessel's correction, explicit leave-one-out.
std::vector<double> RefAdvantages(const std::vector<double>& r, v1::AdvantageEstimator e,
                                  double eps) {
  const size_t g = r.size();
  double sum = 0;
  for (double x : r) sum += x;
  const double mean = sum / g;
  bool all_equal = true;
  for (double x : r) all_equal = all_equal && x == r[0];
  std::vector<double> out(g, 0.0);
  if (all_equal || g == 1) return out;
  double ss = 0;
  for (double x : r) ss += (x - mean) * (x - mean);
  const double std = std::sqrt(ss / (g - 1));
  for (size_t i = 0; i < g; ++i) {
    if (e == v1::ADVANTAGE_ESTIMATOR_GRPO) {
      out[i] = (r[i] - mean) / (std + eps);
    } else if (e == v1::ADVANTAGE_ESTIMATOR_DR_GRPO) {
      out[i] = r[i] - mean;
    } else {
      double others = 0;
      for (size_t j = 0; j < g; ++j) others += (j == i) ? 0 : r[j];
      out[i] = r[i] - others / (g - 1);
    }
  }
  return out;
}

TEST(GroupAdvantages, HandWorkedGrpo) {
  // rewards 1 0 0 1: mean .5, sample std sqrt(1/3) = .57735 -> +-0.866025
  GroupAdvantages a = *ComputeGroupAdvantages(at::tensor({1.0, 0.0, 0.0, 1.0}).view({1, 4}),
                                              {v1::ADVANTAGE_ESTIMATOR_GRPO, 0.0});
  EXPECT_NEAR(a.advantages[0][0].item<double>(), 0.8660254, 1e-6);
  EXPECT_NEAR(a.advantages[0][1].item<double>(), -0.8660254, 1e-6);
  EXPECT_FALSE(a.zero_variance[0].item<bool>());
}

TEST(GroupAdvantages, MatchBruteForceForEveryEstimator) {
  std::mt19937 rng(6);
  for (auto e : {v1::ADVANTAGE_ESTIMATOR_GRPO, v1::ADVANTAGE_ESTIMATOR_DR_GRPO,
                 v1::ADVANTAGE_ESTIMATOR_RLOO}) {
    for (int trial = 0; trial < 50; ++trial) {
      const int groups = 1 + rng() % 5, g = 1 + rng() % 8;
      std::vector<double> flat(groups * g);
      for (double& x : flat) x = (rng() % 3 == 0) ? 1.0 : (rng() % 5) * 0.25 - 0.5;
      if (trial % 7 == 0) std::fill(flat.begin(), flat.begin() + g, 0.75);  // zero variance
      GroupAdvantages got =
          *ComputeGroupAdvantages(at::tensor(flat, at::kDouble).view({groups, g}), {e, 1e-6});
      for (int b = 0; b < groups; ++b) {
        std::vector<double> r(flat.begin() + b * g, flat.begin() + (b + 1) * g);
        const std::vector<double> want = RefAdvantages(r, e, 1e-6);
        bool equal = true;
        for (double x : r) equal = equal && x == r[0];
        EXPECT_EQ(got.zero_variance[b].item<bool>(), equal);
        for (int i = 0; i < g; ++i) {
          EXPECT_NEAR(got.advantages[b][i].item<double>(), want[i], 1e-5)
              << "estimator " << e << " group " << b << " sample " << i;
        }
      }
    }
  }
}

TEST(GroupAdvantages, AllEqualRewardsGiveExactZeros) {
  GroupAdvantages a = *ComputeGroupAdvantages(at::full({2, 4}, 0.3), {});
  EXPECT_TRUE(a.zero_variance.all().item<bool>());
  EXPECT_EQ(a.advantages.abs().max().item<float>(), 0.0f);
}

TEST(GroupAdvantages, NonFiniteRewardIsNamed) {
  at::Tensor r = at::zeros({2, 3});
  r[1][2] = NAN;
  absl::StatusOr<GroupAdvantages> a = ComputeGroupAdvantages(r, {});
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("rewards[group 1, sample 2] = nan"), std::string::npos)
      << a.status();
  EXPECT_FALSE(ComputeGroupAdvantages(at::zeros({3}), {}).ok());
}

// DAPO's R_length, written as the paper's three cases and checked at every length.
TEST(OverlongPenalty, MatchesDaposPiecewiseFormula) {
  for (int64_t max_len : {8, 20}) {
    for (int64_t buffer : {1, 4, 8}) {
      for (double penalty : {1.0, 0.5}) {
        for (int64_t len = 0; len <= max_len + 2; ++len) {
          const double l_cache = static_cast<double>(buffer), l_max = static_cast<double>(max_len);
          const double y = static_cast<double>(len);
          double want = 0;
          if (y <= l_max - l_cache) {
            want = 0;
          } else if (y <= l_max) {
            want = ((l_max - l_cache) - y) / l_cache;
          } else {
            want = -1;
          }
          EXPECT_NEAR(OverlongPenalty(len, max_len, buffer, penalty), want * penalty, 1e-12)
              << len << " of " << max_len << ", buffer " << buffer;
        }
      }
    }
  }
  EXPECT_DOUBLE_EQ(OverlongPenalty(20, 20, 4, 1.0), -1.0) << "-penalty at L_max";
  EXPECT_DOUBLE_EQ(OverlongPenalty(17, 20, 4, 1.0), -0.25);
  EXPECT_DOUBLE_EQ(OverlongPenalty(16, 20, 4, 1.0), 0.0);
  EXPECT_DOUBLE_EQ(OverlongPenalty(20, 20, 0, 1.0), 0.0) << "buffer 0 disables";
}

TEST(ShapeAdvantages, BothSignsAndTheV1Switch) {
  at::Tensor gamma = at::tensor({1.0, 1.5, 1.25, 1.0, 1.5, 1.0}).view({2, 3});
  at::Tensor adv = at::tensor({2.0, -1.0});
  at::Tensor both = ShapeAdvantages(gamma, adv, true);
  at::Tensor v1_only = ShapeAdvantages(gamma, adv, false);
  for (int b = 0; b < 2; ++b) {
    for (int t = 0; t < 3; ++t) {
      const double g = gamma[b][t].item<double>(), a = adv[b].item<double>();
      EXPECT_NEAR(both[b][t].item<double>(), g * a, 1e-6);
      EXPECT_NEAR(v1_only[b][t].item<double>(), a >= 0 ? g * a : a, 1e-6);
    }
  }
  at::Tensor g = gamma.clone().requires_grad_(true);
  EXPECT_FALSE(ShapeAdvantages(g, adv, true).requires_grad()) << "gamma is detached";
}

}  // namespace
}  // namespace rhythm::common::credit

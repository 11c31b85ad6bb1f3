// The mismatch statistics against loops over plain doubles.
#include "common/credit/logprob_mismatch.h"

#include <cmath>
#include <vector>

#include "ATen/ATen.h"
#include "gtest/gtest.h"

namespace rhythm::common::credit {
namespace {

TEST(LogprobMismatch, MatchesABruteForceLoopOverMaskedTokensAcrossResponses) {
  at::manual_seed(3);
  LogprobMismatch got;
  double abs_sum = 0, abs_max = 0, w_sum = 0, w_sq = 0, w_min = 1e300, w_max = 0;
  int64_t n = 0;
  for (int r = 0; r < 3; ++r) {
    const int64_t t = 5 + 4 * r;
    at::Tensor old = -at::rand({t}) * 3, behaviour = old + at::randn({t}) * 0.05;
    at::Tensor mask = (at::rand({t}) > 0.3).to(at::kFloat);
    AddLogprobMismatch(old, behaviour.to(at::kBFloat16).to(at::kFloat), mask, got);
    const at::Tensor b = behaviour.to(at::kBFloat16).to(at::kFloat);
    for (int64_t i = 0; i < t; ++i) {
      if (mask[i].item<float>() == 0) continue;
      const double d = static_cast<double>(old[i].item<float>()) - b[i].item<float>();
      const double w = std::exp(d);
      ++n;
      abs_sum += std::fabs(d);
      abs_max = std::max(abs_max, std::fabs(d));
      w_sum += w;
      w_sq += w * w;
      w_min = std::min(w_min, w);
      w_max = std::max(w_max, w);
    }
  }
  ASSERT_GT(n, 0);
  EXPECT_EQ(got.tokens, n);
  EXPECT_NEAR(got.mean_abs(), abs_sum / n, 1e-12);
  EXPECT_NEAR(got.abs_max, abs_max, 1e-12);
  double var = 0;
  // The spread the slow way: a second pass around the mean.
  const double mean = w_sum / n;
  var = w_sq / n - mean * mean;
  EXPECT_NEAR(got.weight_stddev(), std::sqrt(var), 1e-9);
  EXPECT_GT(got.weight_stddev(), 0);
  EXPECT_NEAR(got.weight_min, w_min, 1e-12);
  EXPECT_NEAR(got.weight_max, w_max, 1e-12);
}

TEST(LogprobMismatch, IdenticalLogprobsAreZeroWithUnitWeightsAndNoTokensAddNothing) {
  LogprobMismatch m;
  at::Tensor x = at::tensor({-0.5f, -1.25f, -3.0f});
  AddLogprobMismatch(x, x, at::ones({3}), m);
  EXPECT_EQ(m.tokens, 3);
  EXPECT_EQ(m.mean_abs(), 0);
  EXPECT_EQ(m.abs_max, 0);
  EXPECT_EQ(m.weight_min, 1);
  EXPECT_EQ(m.weight_max, 1);
  EXPECT_NEAR(m.weight_stddev(), 0, 1e-12);
  AddLogprobMismatch(x, x + 1, at::zeros({3}), m);
  EXPECT_EQ(m.tokens, 3) << "a zero mask adds no token";
  LogprobMismatch empty;
  EXPECT_EQ(empty.mean_abs(), 0);
  EXPECT_EQ(empty.weight_stddev(), 0);
}

}  // namespace
}  // namespace rhythm::common::credit

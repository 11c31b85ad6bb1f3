// AdamW against the update written out by hand (Loshchilov & Hutter, decoupled decay).
#include "common/model/adamw.h"

#include <cmath>

#include "ATen/ATen.h"
#include "gtest/gtest.h"

namespace rhythm::common::model {
namespace {

TEST(AdamW, MatchesTheFormulaOverSeveralSteps) {
  at::Tensor p = at::tensor({1.0, -2.0}, at::kDouble).requires_grad_(true);
  AdamW opt({{"p", p}}, {0.9, 0.999, 1e-8, 0.1});
  double ref[2] = {1.0, -2.0}, m[2] = {0, 0}, v[2] = {0, 0};
  const double grads[3][2] = {{0.5, -1.0}, {0.25, 2.0}, {-0.1, 0.0}};
  const double lr = 0.01;
  for (int t = 1; t <= 3; ++t) {
    p.mutable_grad() = at::tensor({grads[t - 1][0], grads[t - 1][1]}, at::kDouble);
    opt.Step(lr);
    for (int i = 0; i < 2; ++i) {
      const double g = grads[t - 1][i];
      m[i] = 0.9 * m[i] + 0.1 * g;
      v[i] = 0.999 * v[i] + 0.001 * g * g;
      const double mhat = m[i] / (1 - std::pow(0.9, t)), vhat = v[i] / (1 - std::pow(0.999, t));
      ref[i] = ref[i] * (1 - lr * 0.1) - lr * mhat / (std::sqrt(vhat) + 1e-8);
      EXPECT_NEAR(p[i].item<double>(), ref[i], 1e-6) << "step " << t << " element " << i;
    }
  }
  EXPECT_EQ(opt.steps(), 3);
}

TEST(AdamW, ClipsByGlobalNormAndRoundTripsItsState) {
  at::Tensor a = at::zeros({2}).requires_grad_(true), b = at::zeros({1}).requires_grad_(true);
  AdamW opt({{"a", a}, {"b", b}}, {});
  a.mutable_grad() = at::tensor({3.0f, 0.0f});
  b.mutable_grad() = at::tensor({4.0f});
  EXPECT_NEAR(opt.GradNorm(), 5.0, 1e-6);
  opt.ScaleGrads(0.5);
  EXPECT_NEAR(opt.GradNorm(), 2.5, 1e-6);
  opt.Step(0.1);
  AdamW other({{"a", a}, {"b", b}}, {});
  ASSERT_TRUE(other.Restore(opt.State(), opt.steps()).ok());
  EXPECT_TRUE(other.State().at("a.exp_avg").equal(opt.State().at("a.exp_avg")));
  TensorMap broken = opt.State();
  broken.erase("b.exp_avg_sq");
  EXPECT_NE(other.Restore(broken, 1).message().find("'b.exp_avg_sq'"), std::string::npos);
  opt.ZeroGrad();
  EXPECT_FALSE(a.grad().defined());
}

}  // namespace
}  // namespace rhythm::common::model

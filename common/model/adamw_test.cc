// AdamW against the update written out by hand (Loshchilov & Hutter, decoupled decay).
#include "common/model/adamw.h"

#include <cmath>
#include <memory>
#include <vector>

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

// ZeRO-1 by hand: 3 "ranks" (no communication: the test all-gathers by concatenating) over
// 3 parameters of 5 + 2 + 3 = 10 elements, shards of ceil(10 / 3) = 4; every rank's weights
// equal AdamW's after 3 steps, each holds 2 x 4 moments, and the named state round-trips
// into any world size.
TEST(ShardedAdamW, ThreeShardsStepLikeAdamWAndTheirStateChangesWorldSize) {
  auto params = [](double shift) {
    return TensorMap{{"a", (at::arange(5, at::kFloat) * 0.3 + shift).reshape({5})},
                     {"b", at::tensor({1.5f, -0.5f})},
                     {"c", at::tensor({0.1f, 0.2f, -0.3f}).reshape({3, 1})}};
  };
  const AdamW::Options o{0.9, 0.99, 1e-8, 0.05};
  TensorMap alone = params(0);
  AdamW reference(alone, o);
  std::vector<TensorMap> ranks;
  std::vector<std::unique_ptr<ShardedAdamW>> shards;
  for (int r = 0; r < 3; ++r) {
    ranks.push_back(params(0));
    shards.push_back(std::make_unique<ShardedAdamW>(ranks.back(), o, r, 3));
    EXPECT_EQ(shards[r]->shard_size(), 4);
    EXPECT_EQ(shards[r]->numel(), 10);
  }
  for (int t = 0; t < 3; ++t) {
    // The same gradient everywhere (as after the all-reduce).
    for (auto& [name, p] : alone) p.mutable_grad() = at::sin(p.detach() * (t + 2));
    reference.Step(0.01);
    std::vector<at::Tensor> updated;
    for (int r = 0; r < 3; ++r) {
      for (auto& [name, p] : ranks[r]) p.mutable_grad() = at::sin(p.detach() * (t + 2));
      updated.push_back(shards[r]->Step(0.01, shards[r]->FlatGrads()));
    }
    const at::Tensor gathered = at::cat(updated);
    for (int r = 0; r < 3; ++r) shards[r]->SetParams(gathered);
  }
  for (int r = 0; r < 3; ++r) {
    for (const auto& [name, p] : alone) {
      EXPECT_LT((ranks[r].at(name) - p).abs().max().item<double>(), 1e-6) << name << " rank " << r;
    }
    EXPECT_EQ(shards[r]->LocalState().at("exp_avg").numel(), 4);
    EXPECT_EQ(shards[r]->steps(), 3);
  }
  std::vector<at::Tensor> m, v;
  for (int r = 0; r < 3; ++r) {
    m.push_back(shards[r]->LocalState().at("exp_avg"));
    v.push_back(shards[r]->LocalState().at("exp_avg_sq"));
  }
  const TensorMap named = shards[0]->NamedState(at::cat(m), at::cat(v));
  for (const auto& [name, t] : reference.State()) {
    ASSERT_EQ(named.count(name), 1u) << name;
    EXPECT_EQ(named.at(name).sizes(), t.sizes()) << name;
    EXPECT_LT((named.at(name) - t).abs().max().item<double>(), 1e-7) << name;
  }
  // Into 2 ranks: each takes its slice of the flat state.
  TensorMap two = params(0);
  ShardedAdamW second(two, o, 1, 2);
  ASSERT_TRUE(second.RestoreNamed(reference.State(), 3).ok());
  const at::Tensor flat_v = shards[0]->FlattenNamed(reference.State())->second;
  EXPECT_TRUE(second.LocalState().at("exp_avg_sq").equal(flat_v.narrow(0, 5, 5)));
  TensorMap broken = reference.State();
  broken.erase("c.exp_avg");
  EXPECT_NE(second.RestoreNamed(broken, 3).message().find("'c.exp_avg'"), std::string::npos);
}

}  // namespace
}  // namespace rhythm::common::model

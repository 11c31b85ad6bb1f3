// The trainer's guard (issue 17): a step whose loss or gradient norm is not finite is skipped,
// with the weights, the AdamW moments and step count, and the version exactly as they were,
// and the offending rollouts named. Rewards of 1e308 and 1.7e308 are finite, but the group's
// mean overflows to inf and every advantage of the group is NaN.
#include <cmath>

#include "ATen/ATen.h"
#include "common/rollout/engine.h"
#include "gtest/gtest.h"
#include "learner/trainer.h"
#include "learner/trainer_testing.h"

namespace rhythm::learner {
namespace {

using common::model::Transformer;

std::unique_ptr<Transformer> Model(uint64_t seed) {
  return *Transformer::RandomInit(testing::TinyModel(), seed);
}

// `groups` prompts x 2 samples of `m`, rollout ids from `first_id`, rewards 1 and 0.
std::vector<Group> Rollouts(const Transformer& m, int groups, uint64_t seed, uint64_t first_id) {
  std::vector<Group> batch = testing::EngineBatch(m, testing::SimplePrompts(groups),
                                                  testing::PlainGeneration(2, 6, seed), 0, first_id);
  for (Group& g : batch) {
    for (v1::Rollout& r : g) r.mutable_verifier()->set_reward(r.sample_index() == 0 ? 1.0 : 0.0);
  }
  return batch;
}

void Poison(Group& g) {
  g[0].mutable_verifier()->set_reward(1e308);
  g[1].mutable_verifier()->set_reward(1.7e308);
}

common::model::TensorMap Clone(const common::model::TensorMap& m) {
  common::model::TensorMap out;
  for (const auto& [name, t] : m) out[name] = t.detach().clone();
  return out;
}

// Largest |a - b| over every tensor; +inf when either is not finite somewhere.
double MaxAbsDiff(const common::model::TensorMap& a, const common::model::TensorMap& b) {
  double worst = 0;
  EXPECT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    const at::Tensor d = (t.to(at::kDouble) - b.at(name).to(at::kDouble)).abs();
    if (!d.isfinite().all().item<bool>()) return INFINITY;
    worst = std::max(worst, d.max().item<double>());
  }
  return worst;
}

bool AllFinite(const common::model::TensorMap& m) {
  for (const auto& [name, t] : m) {
    if (!t.isfinite().all().item<bool>()) return false;
  }
  return true;
}

TEST(TrainerGuard, HugeFiniteRewardsSkipTheStepAndLeaveEverythingAsItWas) {
  auto m = Model(3);
  v1::TrainerConfig tc;
  tc.set_lr(1e-2);
  auto trainer = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0);
  const common::model::TensorMap params = Clone(m->NamedParameters());
  const common::model::TensorMap moments = Clone(trainer->OptimizerState());
  std::vector<Group> batch = Rollouts(*m, 2, 7, 101);
  Poison(batch[1]);  // rollouts 103 and 104
  absl::StatusOr<StepStats> s = trainer->Step(batch);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(s->skipped());
  EXPECT_EQ(s->skipped_reason, "non_finite_loss");
  EXPECT_EQ(s->offending_rollout_ids, (std::vector<uint64_t>{103, 104}));
  EXPECT_EQ(s->version, 0);
  EXPECT_EQ(trainer->version(), 0);
  EXPECT_EQ(trainer->optimizer_steps(), 0);
  EXPECT_EQ(MaxAbsDiff(m->NamedParameters(), params), 0.0);
  EXPECT_EQ(MaxAbsDiff(trainer->OptimizerState(), moments), 0.0);
  // The next good batch trains as usual.
  absl::StatusOr<StepStats> good = trainer->Step(Rollouts(*m, 2, 8, 201));
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_FALSE(good->skipped());
  EXPECT_EQ(good->version, 1);
  EXPECT_GT(MaxAbsDiff(m->NamedParameters(), params), 0.0);
  EXPECT_TRUE(AllFinite(m->NamedParameters()));
}

// With several mini-batches the earlier ones have already stepped AdamW when a later one turns
// out non-finite: the step is undone from the copy taken at its start, moments included.
TEST(TrainerGuard, ALaterPoisonedMiniBatchUndoesTheEarlierOnes) {
  auto m = Model(4);
  v1::TrainerConfig tc;
  tc.set_lr(1e-2);
  tc.set_mini_batches(2);
  auto trainer = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0);
  ASSERT_TRUE(trainer->Step(Rollouts(*m, 2, 9, 1)).ok());  // moments no longer zero
  ASSERT_EQ(trainer->optimizer_steps(), 2);
  const common::model::TensorMap params = Clone(m->NamedParameters());
  const common::model::TensorMap moments = Clone(trainer->OptimizerState());
  std::vector<Group> batch = Rollouts(*m, 2, 10, 11);
  Poison(batch[1]);  // the second mini-batch: rollouts 13 and 14
  absl::StatusOr<StepStats> s = trainer->Step(batch);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(s->skipped());
  EXPECT_EQ(s->offending_rollout_ids, (std::vector<uint64_t>{13, 14}));
  EXPECT_EQ(s->version, 1);
  EXPECT_EQ(trainer->version(), 1);
  EXPECT_EQ(trainer->optimizer_steps(), 2) << "the first mini-batch's AdamW step is undone";
  EXPECT_EQ(MaxAbsDiff(m->NamedParameters(), params), 0.0);
  EXPECT_EQ(MaxAbsDiff(trainer->OptimizerState(), moments), 0.0);
  EXPECT_TRUE(AllFinite(trainer->OptimizerState()));
}

}  // namespace
}  // namespace rhythm::learner

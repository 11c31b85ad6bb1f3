// The trainer with a bf16 model (model.dtype = bf16, issue 18): forward and backward in bf16,
// AdamW on fp32 masters with fp32 moments; one step lands where the fp32 trainer's step from
// the same weights lands, within bf16 rounding; the step reports the train/infer mismatch of
// rollouts at staleness 0 (and none for older ones); the guard still restores a bad step; a
// checkpoint keeps the fp32 masters, so a resumed run steps exactly as the run would have.
#include <cmath>
#include <filesystem>

#include "ATen/ATen.h"
#include "absl/strings/match.h"
#include "common/rollout/engine.h"
#include "gtest/gtest.h"
#include "learner/checkpoint.h"
#include "learner/trainer.h"
#include "learner/trainer_testing.h"

namespace rhythm::learner {
namespace {

using common::model::TensorMap;
using common::model::Transformer;

// A bf16 model and an fp32 model with the same (bf16-representable) weights.
std::pair<std::unique_ptr<Transformer>, std::unique_ptr<Transformer>> Models(uint64_t seed) {
  auto bf16 = *Transformer::RandomInit(testing::TinyModel(), seed, at::kBFloat16);
  auto fp32 = *Transformer::RandomInit(testing::TinyModel(), seed, at::kFloat);
  at::NoGradGuard no_grad;
  const TensorMap src = bf16->NamedParameters();
  for (auto& [name, t] : fp32->NamedParameters()) t.copy_(src.at(name));
  return {std::move(bf16), std::move(fp32)};
}

std::vector<Group> Rollouts(const Transformer& m, int64_t version, uint64_t seed) {
  std::vector<Group> batch = testing::EngineBatch(m, testing::SimplePrompts(3),
                                                  testing::PlainGeneration(2, 8, seed), version, 1);
  for (Group& g : batch) {
    for (v1::Rollout& r : g) r.mutable_verifier()->set_reward(r.sample_index() == 0 ? 1.0 : 0.0);
  }
  return batch;
}

TEST(TrainerBf16, StepsFp32MastersLikeTheFp32TrainerAndReportsTheMismatch) {
  auto [m16, m32] = Models(5);
  const TensorMap start = m16->NamedParameters();
  TensorMap start_copy;
  for (const auto& [name, t] : start) start_copy[name] = t.clone();
  v1::TrainerConfig tc;
  const double lr = 1e-3;
  tc.set_lr(lr);
  auto t16 = *Trainer::Create(*m16, tc, v1::CreditConfig(), 1, 0);
  auto t32 = *Trainer::Create(*m32, tc, v1::CreditConfig(), 1, 0);
  // The actor computes in bf16 too: its behaviour log-probs come from the bf16 model.
  const std::vector<Group> batch = Rollouts(*m16, 0, 9);
  absl::StatusOr<StepStats> s16 = t16->Step(batch);
  absl::StatusOr<StepStats> s32 = t32->Step(batch);
  ASSERT_TRUE(s16.ok() && s32.ok()) << s16.status() << " " << s32.status();
  ASSERT_FALSE(s16->skipped()) << s16->skipped_reason;
  for (const auto& [name, t] : t16->OptimizerState()) {
    EXPECT_EQ(t.scalar_type(), at::kFloat) << name << ": AdamW moments are fp32";
  }
  double sum = 0, moved = 0;
  int64_t n = 0;
  const TensorMap p32 = m32->NamedParameters();
  for (const auto& [name, t] : m16->NamedParameters()) {
    EXPECT_EQ(t.scalar_type(), at::kBFloat16) << name << ": the model computes in bf16";
    EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << name;
    sum += (t.to(at::kDouble) - p32.at(name).to(at::kBFloat16).to(at::kDouble)).abs().sum().item<double>();
    moved += (t.to(at::kDouble) - start_copy.at(name).to(at::kDouble)).abs().sum().item<double>();
    n += t.numel();
  }
  // An AdamW step moves each weight by about lr; bf16 compute changes where it lands by a small
  // fraction of that (the masters' rounding to bf16 is applied to both sides here).
  EXPECT_GT(moved / n, 0.3 * lr) << "the step moved the bf16 weights";
  EXPECT_LT(sum / n, 0.1 * lr) << "mean |w_bf16 - bf16(w_fp32)| after one step";
  EXPECT_NEAR(s16->loss, s32->loss, 0.02 * std::abs(s32->loss) + 1e-3);
  // Staleness 0, no sampler filter: every response token is measured.
  EXPECT_EQ(s16->logprob_mismatch_tokens, s16->tokens);
  EXPECT_GE(s16->logprob_mismatch_mean, 0);
  EXPECT_LE(s16->logprob_mismatch_mean, s16->logprob_mismatch_max);
  EXPECT_LT(s16->logprob_mismatch_max, 0.5);
  EXPECT_GT(s16->tis_weight_min, 0);
  EXPECT_GE(s16->tis_weight_max, s16->tis_weight_min);
  // The fp32 learner's forward is not the bf16 sampler's: the mismatch is there and measured.
  EXPECT_EQ(s32->logprob_mismatch_tokens, s32->tokens);
  EXPECT_GT(s32->logprob_mismatch_mean, 1e-6);
  EXPECT_GT(s32->logprob_mismatch_max, s32->logprob_mismatch_mean);
  EXPECT_LT(s32->logprob_mismatch_max, 0.5);
  EXPECT_GT(s32->tis_weight_stddev, 0);
  std::printf("bf16 trainer step: mean |w16 - w32| %.3g lr, moved %.3g lr; mismatch bf16 actor "
              "vs bf16 learner mean %.3g max %.3g (TIS stddev %.3g), vs fp32 learner mean %.3g "
              "max %.3g (TIS stddev %.3g)\n",
              sum / n / lr, moved / n / lr, s16->logprob_mismatch_mean,
              s16->logprob_mismatch_max, s16->tis_weight_stddev, s32->logprob_mismatch_mean,
              s32->logprob_mismatch_max, s32->tis_weight_stddev);
  // A second batch from the trained weights, stamped with version 0 (stale by 1): trained on,
  // but not measured.
  absl::StatusOr<StepStats> stale = t16->Step(Rollouts(*m16, 0, 10));
  ASSERT_TRUE(stale.ok()) << stale.status();
  EXPECT_EQ(stale->logprob_mismatch_tokens, 0);
  EXPECT_EQ(t16->version(), 2);
}

TEST(TrainerBf16, ANonFiniteStepRestoresTheBf16WeightsAndTheMasters) {
  auto [m16, m32] = Models(6);
  v1::TrainerConfig tc;
  tc.set_lr(1e-3);
  tc.set_mini_batches(3);
  auto t16 = *Trainer::Create(*m16, tc, v1::CreditConfig(), 1, 0);
  TensorMap before;
  for (const auto& [name, t] : m16->NamedParameters()) before[name] = t.clone();
  std::vector<Group> batch = Rollouts(*m16, 0, 11);
  batch[2][0].mutable_verifier()->set_reward(1e308);  // the last mini-batch's group
  batch[2][1].mutable_verifier()->set_reward(1.7e308);
  absl::StatusOr<StepStats> s = t16->Step(batch);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(s->skipped());
  for (const auto& [name, t] : m16->NamedParameters()) {
    EXPECT_TRUE(at::equal(t, before.at(name))) << name;
  }
  // The masters were restored too: the next good step starts from `before`, exactly as a fresh
  // trainer on the same weights does.
  auto [fresh, unused] = Models(6);
  auto t_fresh = *Trainer::Create(*fresh, tc, v1::CreditConfig(), 1, 0);
  const std::vector<Group> good = Rollouts(*m16, 0, 12);
  ASSERT_TRUE(t16->Step(good).ok());
  ASSERT_TRUE(t_fresh->Step(good).ok());
  const TensorMap f = fresh->NamedParameters();
  for (const auto& [name, t] : m16->NamedParameters()) {
    EXPECT_TRUE(at::equal(t, f.at(name))) << name;
  }
}

// The masters of a bf16 run, saved, loaded and restored: a resumed trainer holds them to the
// bit and its next step is the run's; a resume in fp32 takes them as its weights; a broken one
// is refused naming the tensor, with nothing changed.
TEST(TrainerBf16, ACheckpointKeepsTheMastersAndAResumedRunStepsAsTheRunWould) {
  auto [m16, unused] = Models(7);
  v1::TrainerConfig tc;
  tc.set_lr(1e-4);  // steps below a bf16 ulp near 1: the masters and the bf16 weights part
  auto run = *Trainer::Create(*m16, tc, v1::CreditConfig(), 1, 0);
  for (int64_t v = 0; v < 2; ++v) ASSERT_TRUE(run->Step(Rollouts(*m16, v, 20 + v)).ok());
  CheckpointContents contents;
  contents.state.set_version(2);
  contents.state.set_optimizer_steps(run->optimizer_steps());
  contents.optimizer = *run->GatherOptimizerState();
  double apart = 0;  // how far the masters are from the bf16 weights the model/ dir holds
  for (const auto& [name, t] : m16->NamedParameters()) {
    const at::Tensor& master = contents.optimizer.at(name + kMasterSuffix);
    EXPECT_EQ(master.scalar_type(), at::kFloat) << name;
    apart += (master - t.to(at::kFloat)).abs().sum().item<double>();
  }
  ASSERT_GT(apart, 0) << "the masters hold what bf16 rounds away";
  const std::string dir = ::testing::TempDir() + "/bf16_masters";
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WriteCheckpoint(dir, *m16, contents, nullptr).ok());

  absl::StatusOr<LoadedCheckpoint> ck = LoadLatestCheckpoint(dir, at::kBFloat16);
  ASSERT_TRUE(ck.ok()) << ck.status();
  ASSERT_EQ(ck->model->dtype(), at::kBFloat16);
  auto resumed = *Trainer::Create(*ck->model, tc, v1::CreditConfig(), 1, 2);
  ASSERT_TRUE(resumed->RestoreOptimizerState(ck->contents.optimizer, 2, 2).ok());
  const std::vector<Group> next = Rollouts(*m16, 2, 30);
  ASSERT_TRUE(run->Step(next).ok());
  ASSERT_TRUE(resumed->Step(next).ok());
  const TensorMap a = *run->GatherOptimizerState(), b = *resumed->GatherOptimizerState();
  for (const auto& [name, t] : a) EXPECT_TRUE(at::equal(t, b.at(name))) << name;
  const TensorMap resumed_weights = ck->model->NamedParameters();
  for (const auto& [name, t] : m16->NamedParameters()) {
    EXPECT_TRUE(at::equal(t, resumed_weights.at(name))) << name;
  }

  // Resumed in fp32: the weights are the masters, not their bf16 rounding.
  absl::StatusOr<LoadedCheckpoint> ck32 = LoadLatestCheckpoint(dir, at::kFloat);
  ASSERT_TRUE(ck32.ok()) << ck32.status();
  auto fp32 = *Trainer::Create(*ck32->model, tc, v1::CreditConfig(), 1, 2);
  ASSERT_TRUE(fp32->RestoreOptimizerState(ck32->contents.optimizer, 2, 2).ok());
  for (const auto& [name, t] : ck32->model->NamedParameters()) {
    EXPECT_TRUE(at::equal(t, contents.optimizer.at(name + kMasterSuffix))) << name;
  }

  // A non-finite master: refused, naming it; the weights stay the checkpoint's.
  TensorMap broken = ck->contents.optimizer;
  const std::string victim = broken.begin()->first.substr(0, broken.begin()->first.rfind('.'));
  broken[victim + kMasterSuffix] =
      broken.at(victim + kMasterSuffix).clone().fill_(NAN);
  absl::StatusOr<LoadedCheckpoint> again = LoadLatestCheckpoint(dir, at::kBFloat16);
  ASSERT_TRUE(again.ok());
  TensorMap before;
  for (const auto& [name, t] : again->model->NamedParameters()) before[name] = t.clone();
  auto refused = *Trainer::Create(*again->model, tc, v1::CreditConfig(), 1, 2);
  const absl::Status bad = refused->RestoreOptimizerState(broken, 2, 2);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
  EXPECT_NE(bad.message().find(victim + ".master"), std::string::npos) << bad;
  for (const auto& [name, t] : again->model->NamedParameters()) {
    EXPECT_TRUE(at::equal(t, before.at(name))) << name;
  }
}

// An fp32 run's checkpoint (no masters) resumed in bf16: the masters are its weights at full
// precision, not their bf16 rounding.
TEST(TrainerBf16, AnFp32CheckpointResumedInBf16KeepsItsFullPrecisionWeightsAsMasters) {
  auto [unused, m32] = Models(8);
  v1::TrainerConfig tc;
  tc.set_lr(1e-4);
  auto run = *Trainer::Create(*m32, tc, v1::CreditConfig(), 1, 0);
  ASSERT_TRUE(run->Step(Rollouts(*m32, 0, 40)).ok());  // fp32 weights off the bf16 grid
  CheckpointContents contents;
  contents.state.set_version(1);
  contents.optimizer = *run->GatherOptimizerState();
  for (const auto& [name, t] : contents.optimizer) {
    ASSERT_FALSE(absl::EndsWith(name, kMasterSuffix)) << "an fp32 run has no masters: " << name;
  }
  const std::string dir = ::testing::TempDir() + "/fp32_to_bf16";
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WriteCheckpoint(dir, *m32, contents, nullptr).ok());
  absl::StatusOr<LoadedCheckpoint> ck = LoadLatestCheckpoint(dir, at::kBFloat16);
  ASSERT_TRUE(ck.ok()) << ck.status();
  auto resumed = *Trainer::Create(*ck->model, tc, v1::CreditConfig(), 1, 1);
  ASSERT_TRUE(resumed->RestoreOptimizerState(ck->contents.optimizer, 1, 1).ok());
  const TensorMap state = *resumed->GatherOptimizerState();
  double off_grid = 0;
  for (const auto& [name, t] : m32->NamedParameters()) {
    EXPECT_TRUE(at::equal(state.at(name + kMasterSuffix), t)) << name;
    off_grid += (t - t.to(at::kBFloat16).to(at::kFloat)).abs().sum().item<double>();
  }
  EXPECT_GT(off_grid, 0) << "the weights were not bf16 values already";
}

}  // namespace
}  // namespace rhythm::learner

// The data-parallel learner (learner/rank_group.h, Trainer with ranks): two ranks over a real
// Gloo group (two threads of this process, TCP on loopback) train the same weights as one
// trainer alone on the same batches, with half the AdamW state each; the gathered state is the
// one-rank state; the guard skips a poisoned step on both ranks; and the batch codec round-trips.
#include "learner/rank_group.h"

#include <cmath>
#include <filesystem>
#include <thread>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "common/rollout/engine.h"
#include "gtest/gtest.h"
#include "learner/trainer.h"
#include "learner/trainer_testing.h"

namespace rhythm::learner {
namespace {

using common::model::TensorMap;
using common::model::Transformer;

std::unique_ptr<Transformer> Model(at::ScalarType dtype = at::kFloat) {
  return *Transformer::RandomInit(testing::TinyModel(), 5, dtype);
}

// `groups` prompts x `samples` samples of `m`, rewards 1 for sample 0 and 0.5 for sample 2.
std::vector<Group> Rollouts(const Transformer& m, int groups, int samples, uint64_t seed,
                            uint64_t first_id) {
  std::vector<Group> batch = testing::EngineBatch(m, testing::SimplePrompts(groups),
                                                  testing::PlainGeneration(samples, 6, seed), 0,
                                                  first_id);
  for (Group& g : batch) {
    for (v1::Rollout& r : g) {
      r.mutable_verifier()->set_reward(r.sample_index() == 0   ? 1.0
                                       : r.sample_index() == 2 ? 0.5
                                                               : 0);
    }
  }
  return batch;
}

double MaxAbsDiff(const TensorMap& a, const TensorMap& b) {
  double worst = 0;
  EXPECT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    if (b.count(name) == 0) {
      ADD_FAILURE() << "missing " << name;
      return INFINITY;
    }
    const at::Tensor d = (t.to(at::kDouble) - b.at(name).to(at::kDouble)).abs();
    if (!d.isfinite().all().item<bool>()) return INFINITY;
    worst = std::max(worst, d.max().item<double>());
  }
  return worst;
}

TensorMap Clone(const TensorMap& m) {
  TensorMap out;
  for (const auto& [name, t] : m) out[name] = t.detach().clone();
  return out;
}

v1::TrainerConfig Config(v1::LossAggregation aggregation) {
  v1::TrainerConfig tc;
  tc.set_lr(1e-2);
  tc.set_mini_batches(2);
  tc.set_micro_batch_size(2);
  tc.set_grad_clip(0.5);
  tc.set_weight_decay(0.01);
  tc.set_loss_aggregation(aggregation);
  return tc;
}

// Rank 1 of a two-rank group (run dir `name`) on a thread of its own, from weights that are not
// rank 0's (seed 99): it follows rank 0 until rank 0 stops the ranks; `params` are then its
// weights. Rank 0 joins with rank0_options.
struct FollowerRank {
  FollowerRank(const std::string& name, const v1::TrainerConfig& tc, at::ScalarType dtype) {
    const std::string dir = ::testing::TempDir() + "/" + name;
    std::filesystem::remove_all(dir);
    rank0_options.world_size = 2;
    rank0_options.run_dir = dir;
    rank0_options.timeout = absl::Seconds(30);
    thread = std::thread([this, tc, dtype] {
      RankGroup::Options o1 = rank0_options;
      o1.rank = 1;
      auto g = RankGroup::Create(o1);
      if (!g.ok()) {
        status = g.status();
        return;
      }
      auto m = *Transformer::RandomInit(testing::TinyModel(), 99, dtype);
      auto t = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0, 1.0, {}, {}, g->get());
      status = t->FollowRank0();
      params = Clone(m->NamedParameters());
    });
  }
  RankGroup::Options rank0_options;
  absl::Status status = absl::UnknownError("not run");
  TensorMap params;
  std::thread thread;
};

struct TwoRankRun {
  TensorMap rank0_params, rank1_params, gathered_state;
  int64_t rank0_state_numel = 0, rank1_state_numel = 0;
  std::vector<StepStats> stats;
  absl::Status follower = absl::UnknownError("not run");
};

// Rank 0 on this thread, rank 1 on another; both start from Model(dtype).
TwoRankRun RunTwoRanks(const v1::TrainerConfig& tc, const std::vector<std::vector<Group>>& batches,
                       const std::string& name, at::ScalarType dtype = at::kFloat) {
  const std::string dir = ::testing::TempDir() + "/rank_group_" + name;
  std::filesystem::remove_all(dir);
  RankGroup::Options o;
  o.world_size = 2;
  o.run_dir = dir;
  o.timeout = absl::Seconds(30);
  TwoRankRun run;
  std::thread rank1([&] {
    RankGroup::Options o1 = o;
    o1.rank = 1;
    absl::StatusOr<std::unique_ptr<RankGroup>> g = RankGroup::Create(o1);
    if (!g.ok()) {
      run.follower = g.status();
      return;
    }
    auto m = Model(dtype);
    auto t = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0, 1.0, {}, {}, g->get());
    run.rank1_state_numel = t->optimizer_state_numel();
    run.follower = t->FollowRank0();
    run.rank1_params = Clone(m->NamedParameters());
  });
  absl::StatusOr<std::unique_ptr<RankGroup>> g = RankGroup::Create(o);
  EXPECT_TRUE(g.ok()) << g.status();
  if (g.ok()) {
    auto m = Model(dtype);
    auto t = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0, 1.0, {}, {}, g->get());
    run.rank0_state_numel = t->optimizer_state_numel();
    for (const std::vector<Group>& b : batches) {
      absl::StatusOr<StepStats> s = t->Step(b);
      EXPECT_TRUE(s.ok()) << s.status();
      if (s.ok()) run.stats.push_back(*s);
    }
    absl::StatusOr<TensorMap> state = t->GatherOptimizerState();
    EXPECT_TRUE(state.ok()) << state.status();
    if (state.ok()) run.gathered_state = *state;
    run.rank0_params = Clone(m->NamedParameters());
    t->StopRanks();
  }
  rank1.join();
  return run;
}

class TwoRanks : public ::testing::TestWithParam<v1::LossAggregation> {};

TEST_P(TwoRanks, TrainTheWeightsOfOneRankOverThreeStepsWithHalfTheOptimizerStateEach) {
  at::set_num_threads(1);
  const v1::TrainerConfig tc = Config(GetParam());
  auto gen = Model();
  // 3 groups x 3 samples: 9 sequences, so that the ranks' shares differ in size.
  std::vector<std::vector<Group>> batches;
  for (int i = 0; i < 3; ++i) batches.push_back(Rollouts(*gen, 3, 3, 10 + i, 100 * (i + 1)));

  auto alone_model = Model();
  auto alone = *Trainer::Create(*alone_model, tc, v1::CreditConfig(), 1, 0);
  std::vector<StepStats> alone_stats;
  for (const std::vector<Group>& b : batches) alone_stats.push_back(*alone->Step(b));
  const TensorMap start = Model()->NamedParameters();
  ASSERT_GT(MaxAbsDiff(alone_model->NamedParameters(), start), 1e-3);  // it trained

  TwoRankRun run = RunTwoRanks(tc, batches, v1::LossAggregation_Name(GetParam()));
  ASSERT_TRUE(run.follower.ok()) << run.follower;
  ASSERT_EQ(run.stats.size(), 3u);
  EXPECT_LT(MaxAbsDiff(run.rank0_params, alone_model->NamedParameters()), 1e-5);
  EXPECT_LT(MaxAbsDiff(run.rank1_params, alone_model->NamedParameters()), 1e-5);
  EXPECT_LT(MaxAbsDiff(run.gathered_state, alone->OptimizerState()), 1e-5);
  // Half the state each: 2 ceil(N / 2) of AdamW's 2 N elements.
  int64_t n = 0;
  for (const auto& [name, p] : alone_model->NamedParameters()) n += p.numel();
  EXPECT_EQ(alone->optimizer_state_numel(), 2 * n);
  EXPECT_EQ(run.rank0_state_numel, 2 * ((n + 1) / 2));
  EXPECT_EQ(run.rank1_state_numel, 2 * ((n + 1) / 2));
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(run.stats[i].version, alone_stats[i].version);
    EXPECT_NEAR(run.stats[i].loss, alone_stats[i].loss, 1e-6) << "step " << i;
    EXPECT_NEAR(run.stats[i].grad_norm, alone_stats[i].grad_norm, 1e-5) << "step " << i;
    EXPECT_NEAR(run.stats[i].clip_fraction, alone_stats[i].clip_fraction, 1e-9) << "step " << i;
    // The pi_old pass is shared too: rank 0 forwarded sequences 0, 2, .., 8 of the 9.
    EXPECT_EQ(alone_stats[i].old_pass_sequences, 9);
    EXPECT_EQ(run.stats[i].old_pass_sequences, 5);
  }
}

INSTANTIATE_TEST_SUITE_P(Aggregation, TwoRanks,
                         ::testing::Values(v1::LOSS_AGGREGATION_TOKEN_MEAN,
                                           v1::LOSS_AGGREGATION_SEQ_MEAN_TOKEN_MEAN));

// bf16 (model.dtype) on two ranks: the fp32 masters and the moments are the bf16 trainer's
// alone within 1e-5; each rank's bf16 weights are its masters rounded, and the same on both.
// One sequence per micro-batch, so that both sides run the same bf16 forwards and backwards
// (a bf16 weight gradient summed over other rows rounds differently); the micro-batches' sum
// is fp32 on both (MasterWeights::AccumulateGrads).
TEST(TwoRanksBf16, StepTheMastersOfOneBf16Trainer) {
  at::set_num_threads(1);
  v1::TrainerConfig tc = Config(v1::LOSS_AGGREGATION_TOKEN_MEAN);
  tc.set_micro_batch_size(1);
  auto gen = Model(at::kBFloat16);
  std::vector<std::vector<Group>> batches;
  for (int i = 0; i < 3; ++i) batches.push_back(Rollouts(*gen, 3, 3, 30 + i, 100 * (i + 1)));
  auto alone_model = Model(at::kBFloat16);
  auto alone = *Trainer::Create(*alone_model, tc, v1::CreditConfig(), 1, 0);
  for (const std::vector<Group>& b : batches) ASSERT_TRUE(alone->Step(b).ok());
  const TensorMap alone_state = *alone->GatherOptimizerState();
  TwoRankRun run = RunTwoRanks(tc, batches, "bf16", at::kBFloat16);
  ASSERT_TRUE(run.follower.ok()) << run.follower;
  ASSERT_EQ(run.stats.size(), 3u);
  EXPECT_LT(MaxAbsDiff(run.gathered_state, alone_state), 1e-5) << "masters and moments";
  double moved = 0;
  const TensorMap start = Model(at::kBFloat16)->NamedParameters();
  for (const auto& [name, t] : run.rank0_params) {
    EXPECT_EQ(t.scalar_type(), at::kBFloat16) << name;
    EXPECT_TRUE(at::equal(t, run.gathered_state.at(name + ".master").to(at::kBFloat16))) << name;
    EXPECT_TRUE(at::equal(t, run.rank1_params.at(name))) << name;
    moved += (t.to(at::kFloat) - start.at(name).to(at::kFloat)).abs().sum().item<double>();
  }
  EXPECT_GT(moved, 0) << "it trained";
  // The masters are sharded with the moments: 3 ceil(N / 2) floats per rank, not N + 2 ceil(N / 2).
  int64_t n = 0;
  for (const auto& [name, p] : alone_model->NamedParameters()) n += p.numel();
  EXPECT_EQ(run.rank0_state_numel, 3 * ((n + 1) / 2));
  EXPECT_EQ(run.rank1_state_numel, 3 * ((n + 1) / 2));
}

// A bf16 checkpoint (bf16 weights, fp32 masters and moments) resumed on two ranks, rank 1 from
// other weights entirely: rank 0 hands out the masters, not their rounding, so the two train
// the masters of one bf16 trainer resumed alone.
TEST(TwoRanksBf16, ResumeHandsOutTheMastersNotTheirRounding) {
  at::set_num_threads(1);
  v1::TrainerConfig tc = Config(v1::LOSS_AGGREGATION_TOKEN_MEAN);
  tc.set_micro_batch_size(1);
  tc.set_lr(1e-3);
  auto gen = Model(at::kBFloat16);
  std::vector<std::vector<Group>> batches;
  for (int i = 0; i < 3; ++i) batches.push_back(Rollouts(*gen, 3, 3, 40 + i, 100 * (i + 1)));
  auto first_model = Model(at::kBFloat16);
  auto first = *Trainer::Create(*first_model, tc, v1::CreditConfig(), 1, 0);
  ASSERT_TRUE(first->Step(batches[0]).ok());
  const TensorMap ck_params = Clone(first_model->NamedParameters());
  const TensorMap ck_state = Clone(*first->GatherOptimizerState());
  double off_grid = 0;
  for (const auto& [name, p] : ck_params) {
    off_grid += (ck_state.at(name + ".master") - p.to(at::kFloat)).abs().sum().item<double>();
  }
  ASSERT_GT(off_grid, 0) << "the masters are not the bf16 weights";
  auto from_checkpoint = [&] {
    auto m = Model(at::kBFloat16);
    at::NoGradGuard no_grad;
    for (auto& [name, p] : m->NamedParameters()) p.copy_(ck_params.at(name));
    return m;
  };
  auto alone_model = from_checkpoint();
  auto alone = *Trainer::Create(*alone_model, tc, v1::CreditConfig(), 1, 1);
  ASSERT_TRUE(alone->RestoreOptimizerState(ck_state, 1, 1).ok());
  for (int i = 1; i < 3; ++i) ASSERT_TRUE(alone->Step(batches[i]).ok());
  const TensorMap alone_state = *alone->GatherOptimizerState();

  FollowerRank rank1("rank_group_bf16_resume", tc, at::kBFloat16);
  auto g = RankGroup::Create(rank1.rank0_options);
  ASSERT_TRUE(g.ok()) << g.status();
  auto m = from_checkpoint();
  auto t = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 1, 1.0, {}, {}, g->get());
  ASSERT_TRUE(t->RestoreOptimizerState(ck_state, 1, 1).ok());
  for (int i = 1; i < 3; ++i) ASSERT_TRUE(t->Step(batches[i]).ok());
  absl::StatusOr<TensorMap> state = t->GatherOptimizerState();
  ASSERT_TRUE(state.ok()) << state.status();
  t->StopRanks();
  rank1.thread.join();
  ASSERT_TRUE(rank1.status.ok()) << rank1.status;
  EXPECT_LT(MaxAbsDiff(*state, alone_state), 1e-5) << "masters and moments";
  for (const auto& [name, p] : m->NamedParameters()) {
    EXPECT_TRUE(at::equal(p, rank1.params.at(name))) << name;
    EXPECT_TRUE(at::equal(p, state->at(name + ".master").to(at::kBFloat16))) << name;
  }
}

// A resumed run: rank 0 starts from a checkpoint (weights and AdamW state after one step, with
// a KL reference copied from them), rank 1 from other weights entirely. Rank 0 hands rank 1 its
// weights, the reference and its shard of the state, so the two still train the weights of
// one trainer resumed from the same checkpoint.
TEST(TwoRanksResume, RankZeroHandsTheOtherRankItsWeightsReferenceAndStateShard) {
  at::set_num_threads(1);
  v1::TrainerConfig tc = Config(v1::LOSS_AGGREGATION_TOKEN_MEAN);
  tc.set_kl_coef(0.05);
  auto gen = Model();
  std::vector<std::vector<Group>> batches;
  for (int i = 0; i < 3; ++i) batches.push_back(Rollouts(*gen, 3, 3, 20 + i, 100 * (i + 1)));
  // The checkpoint: one step of a trainer alone.
  auto first_model = Model();
  auto first = *Trainer::Create(*first_model, tc, v1::CreditConfig(), 1, 0);
  ASSERT_TRUE(first->Step(batches[0]).ok());
  const TensorMap ck_params = Clone(first_model->NamedParameters());
  const TensorMap ck_state = Clone(first->OptimizerState());
  auto from_checkpoint = [&](uint64_t seed) {
    auto m = *Transformer::RandomInit(testing::TinyModel(), seed);
    at::NoGradGuard no_grad;
    for (auto& [name, p] : m->NamedParameters()) p.copy_(ck_params.at(name));
    return m;
  };
  // Resumed alone.
  auto alone_model = from_checkpoint(5);
  auto alone = *Trainer::Create(*alone_model, tc, v1::CreditConfig(), 1, 1);
  ASSERT_TRUE(alone->RestoreOptimizerState(ck_state, 1, 1).ok());
  std::vector<double> alone_ref_kl;
  for (int i = 1; i < 3; ++i) {
    absl::StatusOr<StepStats> s = alone->Step(batches[i]);
    ASSERT_TRUE(s.ok()) << s.status();
    alone_ref_kl.push_back(s->ref_kl);
  }
  // Resumed on two ranks.
  FollowerRank rank1("rank_group_resume", tc, at::kFloat);
  auto g = RankGroup::Create(rank1.rank0_options);
  ASSERT_TRUE(g.ok()) << g.status();
  auto m = from_checkpoint(5);
  auto t = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 1, 1.0, {}, {}, g->get());
  ASSERT_TRUE(t->RestoreOptimizerState(ck_state, 1, 1).ok());
  for (int i = 1; i < 3; ++i) {
    absl::StatusOr<StepStats> s = t->Step(batches[i]);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->version, i + 1);
    // The reference's log-probs were shared with the pi_old pass's: the same KL as alone (0
    // at the first step, where the weights are still the reference's).
    if (i == 2) {
      EXPECT_GT(s->ref_kl, 0);
    }
    EXPECT_NEAR(s->ref_kl, alone_ref_kl[static_cast<size_t>(i - 1)], 1e-7) << "step " << i;
  }
  absl::StatusOr<TensorMap> state = t->GatherOptimizerState();
  ASSERT_TRUE(state.ok()) << state.status();
  t->StopRanks();
  rank1.thread.join();
  ASSERT_TRUE(rank1.status.ok()) << rank1.status;
  EXPECT_EQ(t->optimizer_steps(), alone->optimizer_steps());  // 1 + 2 steps x 2 mini-batches
  EXPECT_LT(MaxAbsDiff(m->NamedParameters(), alone_model->NamedParameters()), 1e-5);
  EXPECT_LT(MaxAbsDiff(rank1.params, alone_model->NamedParameters()), 1e-5);
  EXPECT_LT(MaxAbsDiff(*state, alone->OptimizerState()), 1e-5);
}

TEST(TwoRanksGuard, APoisonedBatchIsSkippedOnBothRanks) {
  at::set_num_threads(1);
  const v1::TrainerConfig tc = Config(v1::LOSS_AGGREGATION_TOKEN_MEAN);
  auto gen = Model();
  std::vector<Group> poisoned = Rollouts(*gen, 2, 2, 3, 500);
  poisoned[1][0].mutable_verifier()->set_reward(1e308);
  poisoned[1][1].mutable_verifier()->set_reward(1.7e308);
  TwoRankRun run = RunTwoRanks(tc, {poisoned}, "guard");
  ASSERT_TRUE(run.follower.ok()) << run.follower;
  ASSERT_EQ(run.stats.size(), 1u);
  EXPECT_TRUE(run.stats[0].skipped());
  EXPECT_EQ(run.stats[0].version, 0);
  const TensorMap start = Model()->NamedParameters();
  EXPECT_EQ(MaxAbsDiff(run.rank0_params, start), 0.0);
  EXPECT_EQ(MaxAbsDiff(run.rank1_params, start), 0.0);
}

TEST(BatchCodec, RoundTripsAndRejectsTruncatedBytes) {
  std::vector<Group> batch(2);
  for (int g = 0; g < 2; ++g) {
    for (int i = 0; i < 2 + g; ++i) {
      v1::Rollout r;
      r.set_rollout_id(10 * g + i);
      r.add_response_token_ids(i + 3);
      r.mutable_verifier()->set_reward(0.25 * i);
      batch[g].push_back(r);
    }
  }
  const std::string bytes = EncodeBatch(batch);
  absl::StatusOr<std::vector<Group>> back = DecodeBatch(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 2u);
  ASSERT_EQ((*back)[1].size(), 3u);
  for (int g = 0; g < 2; ++g) {
    for (size_t i = 0; i < batch[g].size(); ++i) {
      EXPECT_EQ((*back)[g][i].SerializeAsString(), batch[g][i].SerializeAsString());
    }
  }
  EXPECT_EQ(DecodeBatch(bytes.substr(0, bytes.size() - 1)).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeBatch(bytes + "x").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(DecodeBatch(EncodeBatch({})).ok());
}

TEST(RankGroupCreate, RejectsARankOutsideTheWorldNamingTheField) {
  RankGroup::Options o;
  o.world_size = 2;
  o.rank = 2;
  absl::StatusOr<std::unique_ptr<RankGroup>> g = RankGroup::Create(o);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("learner.rank = 2"), std::string::npos) << g.status();
  o.rank = 0;
  o.rendezvous_address = "nohost";
  g = RankGroup::Create(o);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("learner.rendezvous_address = 'nohost'"), std::string::npos)
      << g.status();
}

}  // namespace
}  // namespace rhythm::learner

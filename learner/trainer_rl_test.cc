// What RL users expect of the trainer (issue 20): the reference-policy KL (loss or reward), GSPO,
// the off-policy masks, DAPO's overlong penalty and truncation mask, the actors' top-k / top-p
// replayed on the learner, and the config checks. The loss math itself is checked against
// brute force in common/credit/policy_loss_test.cc; here each switch is checked end to end
// through Trainer::Step against a hand computation on the same model.
#include <cmath>
#include <filesystem>

#include "ATen/ATen.h"
#include "common/credit/advantages.h"
#include "common/model/hf_checkpoint.h"
#include "common/rollout/engine.h"
#include "gtest/gtest.h"
#include "learner/trainer.h"
#include "learner/trainer_testing.h"

namespace rhythm::learner {
namespace {

using common::model::Transformer;

using testing::TinyModel;

std::unique_ptr<Transformer> Model(uint64_t seed, int64_t hidden = 32) {
  return *Transformer::RandomInit(TinyModel(hidden), seed);
}

// Rollouts of `m` by the rollout engine, `groups` prompts x g samples, without taps, ending
// at token 15 or `max_new_tokens`; reward 1 when the response contains token 7.
std::vector<Group> Rollouts(const Transformer& m, int groups, int g, uint64_t seed,
                            common::rollout::SamplingOptions sampling = {},
                            int max_new_tokens = 8) {
  common::rollout::GenerationOptions o = testing::PlainGeneration(g, max_new_tokens, seed);
  o.sampling = sampling;
  return testing::EngineBatch(m, testing::SimplePrompts(groups), o);
}

// Rewards with signal in every group (a fixed pattern), so no group is all-equal.
void SpreadRewards(std::vector<Group>& batch) {
  for (Group& g : batch) {
    for (size_t i = 0; i < g.size(); ++i) g[i].mutable_verifier()->set_reward((i % 3) * 0.5);
  }
}

// log pi(response token t) of every rollout, one sequence at a time, at temperature 1, the
// slow way: a forward per rollout and a log-softmax per position.
std::vector<std::vector<double>> TokenLogprobsByHand(const Transformer& m,
                                                     const std::vector<Group>& batch) {
  at::NoGradGuard no_grad;
  std::vector<std::vector<double>> out;
  for (const Group& g : batch) {
    for (const v1::Rollout& r : g) {
      std::vector<int64_t> ids(r.prompt_token_ids().begin(), r.prompt_token_ids().end());
      ids.insert(ids.end(), r.response_token_ids().begin(), r.response_token_ids().end());
      const int64_t n = static_cast<int64_t>(ids.size());
      const at::Tensor logits =
          m.Forward(at::tensor(ids, at::kLong).view({1, n}), at::ones({1, n}))->logits[0];
      std::vector<double> lp;
      for (int t = 0; t < r.response_token_ids_size(); ++t) {
        const int64_t pos = r.prompt_token_ids_size() - 1 + t;
        lp.push_back(at::log_softmax(logits[pos].to(at::kDouble), -1)[r.response_token_ids(t)]
                         .item<double>());
      }
      out.push_back(lp);
    }
  }
  return out;
}

double MaxAbsDiff(const Transformer& a, const Transformer& b) {
  double worst = 0;
  const common::model::TensorMap pa = a.NamedParameters(), pb = b.NamedParameters();
  for (const auto& [name, t] : pa) {
    worst = std::max(worst, (t - pb.at(name)).abs().max().item<double>());
  }
  return worst;
}

std::string ExportedModel(const Transformer& m, const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/trainer_rl_" + name;
  std::filesystem::remove_all(dir);
  EXPECT_TRUE(common::model::ExportHfModel(m, dir).ok());
  return dir;
}

double KlByHand(double ref, double logp, v1::KlEstimator e) {
  const double log_r = ref - logp;
  if (e == v1::KL_ESTIMATOR_K1) return -log_r;
  if (e == v1::KL_ESTIMATOR_K2) return log_r * log_r / 2;
  return std::exp(log_r) - 1 - log_r;
}

TEST(TrainerKl, RefKlMatchesAHandComputationForEveryEstimator) {
  auto policy = Model(3);
  auto other = Model(4);
  const std::string dir = ExportedModel(*other, "ref_estimators");
  std::vector<Group> batch = Rollouts(*policy, 2, 4, 11);
  SpreadRewards(batch);
  const std::vector<std::vector<double>> pol = TokenLogprobsByHand(*policy, batch);
  const std::vector<std::vector<double>> ref = TokenLogprobsByHand(*other, batch);
  for (auto e : {v1::KL_ESTIMATOR_K1, v1::KL_ESTIMATOR_K2, v1::KL_ESTIMATOR_K3}) {
    auto m = Model(3);
    v1::TrainerConfig tc;
    tc.set_kl_coef(0.1);
    tc.set_kl_estimator(e);
    tc.set_reference_path(dir);
    tc.set_micro_batch_size(3);  // ragged micro-batches: padding must not leak into the KL
    auto trainer = Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    absl::StatusOr<StepStats> s = (*trainer)->Step(batch);
    ASSERT_TRUE(s.ok()) << s.status();
    double sum = 0, n = 0;
    for (size_t i = 0; i < pol.size(); ++i) {
      for (size_t t = 0; t < pol[i].size(); ++t) {
        sum += KlByHand(ref[i][t], pol[i][t], e);
        n += 1;
      }
    }
    EXPECT_NEAR(s->ref_kl, sum / n, 1e-5) << v1::KlEstimator_Name(e);
    EXPECT_GT(std::abs(s->ref_kl), 1e-3) << "two different models";
  }
}

TEST(TrainerKl, DefaultReferenceIsTheStartingWeightsAndTheLossTermHoldsThePolicyNearIt) {
  // Same data, same seed: a strong KL term ends closer to the starting weights than none.
  double kl_after[2] = {0, 0};
  for (int with_kl = 0; with_kl < 2; ++with_kl) {
    auto m = Model(5);
    auto start = Model(5);
    v1::TrainerConfig tc;
    tc.set_lr(1e-2);
    tc.set_mini_batches(2);
    tc.set_kl_coef(with_kl ? 2.0 : 1e-9);  // 1e-9: a reference, but no pull
    auto trainer = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0);
    for (int step = 0; step < 6; ++step) {
      std::vector<Group> batch = Rollouts(*start, 3, 4, 40 + step);
      SpreadRewards(batch);
      absl::StatusOr<StepStats> s = trainer->Step(batch);
      ASSERT_TRUE(s.ok()) << s.status();
      if (step == 0) {
        EXPECT_NEAR(s->ref_kl, 0.0, 1e-6) << "the reference is the start";
      }
    }
    // KL(pi || start) on fresh data, by hand.
    std::vector<Group> probe = Rollouts(*start, 3, 4, 99);
    const auto a = TokenLogprobsByHand(*m, probe), b = TokenLogprobsByHand(*start, probe);
    double sum = 0, n = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      for (size_t t = 0; t < a[i].size(); ++t) {
        sum += KlByHand(b[i][t], a[i][t], v1::KL_ESTIMATOR_K3);
        n += 1;
      }
    }
    kl_after[with_kl] = sum / n;
  }
  EXPECT_GT(kl_after[0], 0.0);
  EXPECT_LT(kl_after[1], 0.7 * kl_after[0]) << kl_after[1] << " vs " << kl_after[0];
}

// kl_placement reward: the step equals a plain step whose rewards were lowered by kl_coef *
// each response's summed KL(pi_old || pi_ref), computed by hand.
TEST(TrainerKl, RewardPlacementIsARewardPenaltyBeforeTheAdvantages) {
  auto other = Model(8);
  const std::string dir = ExportedModel(*other, "ref_reward");
  auto a = Model(7), b = Model(7);
  std::vector<Group> batch = Rollouts(*a, 3, 4, 21);
  SpreadRewards(batch);
  const auto pol = TokenLogprobsByHand(*a, batch), ref = TokenLogprobsByHand(*other, batch);
  v1::TrainerConfig tc;
  tc.set_lr(1e-2);
  v1::TrainerConfig kl = tc;
  kl.set_kl_coef(0.5);
  kl.set_kl_placement(v1::KL_PLACEMENT_REWARD);
  kl.set_kl_estimator(v1::KL_ESTIMATOR_K1);
  kl.set_reference_path(dir);
  auto with_kl = *Trainer::Create(*a, kl, v1::CreditConfig(), 1, 0);
  auto plain = *Trainer::Create(*b, tc, v1::CreditConfig(), 1, 0);
  std::vector<Group> lowered = batch;
  size_t k = 0;
  double largest = 0;
  for (Group& g : lowered) {
    for (v1::Rollout& r : g) {
      double sum = 0;
      for (size_t t = 0; t < pol[k].size(); ++t) {
        sum += KlByHand(ref[k][t], pol[k][t], v1::KL_ESTIMATOR_K1);
      }
      ++k;
      largest = std::max(largest, std::abs(sum));
      r.mutable_verifier()->set_reward(r.verifier().reward() - 0.5 * sum);
    }
  }
  ASSERT_GT(largest, 0.05) << "the penalty is not negligible";
  ASSERT_TRUE(with_kl->Step(batch).ok());
  ASSERT_TRUE(plain->Step(lowered).ok());
  // AdamW's first step is lr * g / (|g| + eps) elementwise: elements with a gradient near eps
  // carry the float rounding of the KL sums (the trainer's float vs the hand's double).
  const double same = MaxAbsDiff(*a, *b);
  EXPECT_LT(same, 5e-5);
  // Without the penalty the update differs by far more.
  auto c = Model(7);
  ASSERT_TRUE((*Trainer::Create(*c, tc, v1::CreditConfig(), 1, 0))->Step(batch).ok());
  const double unpenalised = MaxAbsDiff(*a, *c);
  EXPECT_GT(unpenalised, 100 * same) << unpenalised;
}

TEST(TrainerKl, ReferencePathErrorsNameTheFieldAndTheFile) {
  auto m = Model(3);
  v1::TrainerConfig tc;
  tc.set_kl_coef(0.1);
  tc.set_reference_path("/nonexistent/ref");
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0);
  ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("trainer.reference_path = /nonexistent/ref"),
            std::string::npos)
      << t.status();
  auto wide = Model(3, 64);
  const std::string dir = ExportedModel(*wide, "ref_wide");
  tc.set_reference_path(dir);
  t = Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0);
  ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find(dir + "/config.json has hidden_size 64, the policy 32"),
            std::string::npos)
      << t.status();
  // kl_coef 0 keeps no reference: the path is not read.
  tc.set_kl_coef(0);
  EXPECT_TRUE(Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0).ok());
}

TEST(TrainerGspo, SequenceRatioStartsAtOneAndLearns) {
  auto m = Model(3);
  v1::TrainerConfig tc;
  tc.set_lr(3e-3);
  tc.set_mini_batches(2);
  tc.set_ratio_level(v1::RATIO_LEVEL_SEQUENCE);
  tc.set_clip_eps_low(3e-4);  // GSPO's ranges
  tc.set_clip_eps_high(4e-4);
  auto trainer = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0);
  auto prob7 = [&]() {
    at::NoGradGuard g;
    const at::Tensor logits =
        m->Forward(at::tensor({1, 2, 3}, at::kLong).view({1, 3}), at::ones({1, 3}))->logits;
    return at::softmax(logits[0][2], -1)[7].item<double>();
  };
  const double before = prob7();
  double clipped = 0;
  for (int step = 0; step < 8; ++step) {
    absl::StatusOr<StepStats> s = trainer->Step(Rollouts(*m, 4, 6, 100 + step));
    ASSERT_TRUE(s.ok()) << s.status();
    clipped += s->clip_fraction;
  }
  EXPECT_GT(prob7(), before * 1.3);
  EXPECT_GT(clipped, 0.0) << "the second mini-batch's sequence ratios leave the narrow range";
}

// Behaviour log-probs shifted by hand: the masks see pi_old / pi_behaviour = exp(shift).
TEST(TrainerMasks, TokenAndSequenceMasksCountAndSilenceWhatTheyMask) {
  auto m = Model(3);
  std::vector<Group> batch = Rollouts(*m, 2, 4, 5);
  SpreadRewards(batch);
  // Token 0 of every response: w = 3 (above 2); response 0 of group 0: every token also x 1.5.
  // The expected counts by hand: a response is out when its geometric-mean w exceeds 1.3 (a
  // short one can be, through its token 0 alone); a kept response loses its token 0.
  int64_t want_sequences = 0, want_tokens = 0;
  double weight_sum = 0, tokens = 0;
  for (Group& g : batch) {
    for (v1::Rollout& r : g) {
      double log_sum = 0;
      const int n = r.behaviour_logprobs_size();
      for (int t = 0; t < n; ++t) {
        double shift = t == 0 ? std::log(3.0) : 0.0;
        if (&r == &batch[0][0]) shift += std::log(1.5);
        r.set_behaviour_logprobs(t, static_cast<float>(r.behaviour_logprobs(t) - shift));
        weight_sum += std::exp(shift);
        tokens += 1;
        log_sum += shift;
      }
      const bool out = std::exp(log_sum / n) > 1.3;
      want_sequences += out;
      want_tokens += out ? 0 : 1;
    }
  }
  ASSERT_GT(want_tokens, 2);
  v1::TrainerConfig tc;
  tc.set_token_mask_high(2.0);
  tc.set_sequence_mask_high(1.3);
  auto trainer = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0);
  absl::StatusOr<StepStats> s = trainer->Step(batch);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->masked_sequences, want_sequences);
  EXPECT_EQ(s->masked_tokens, want_tokens);
  EXPECT_NEAR(s->tis_weight_mean, weight_sum / tokens, 1e-4);
  EXPECT_GT(s->tis_capped_fraction, 0.0);  // w = 3 and 4.5 are above the cap of 2

  // Every token masked (a fresh trainer: AdamW's moments would move the weights on their own):
  // the loss has nothing, so the weights do not move.
  v1::TrainerConfig token_only;
  token_only.set_token_mask_high(2.0);
  trainer = *Trainer::Create(*m, token_only, v1::CreditConfig(), 1, 0);
  for (Group& g : batch) {
    for (v1::Rollout& r : g) {
      for (int t = 0; t < r.behaviour_logprobs_size(); ++t) {
        r.set_behaviour_logprobs(t, static_cast<float>(r.behaviour_logprobs(t) - 5.0));
      }
    }
  }
  const at::Tensor before = m->NamedParameters().at("model.embed_tokens.weight").clone();
  s = trainer->Step(batch);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->masked_sequences, 0);
  EXPECT_EQ(s->masked_tokens, static_cast<int64_t>(tokens));
  EXPECT_TRUE(m->NamedParameters().at("model.embed_tokens.weight").equal(before));
}

TEST(TrainerMasks, TruncatedResponsesAreLeftOut) {
  auto m = Model(3);
  std::vector<Group> batch = Rollouts(*m, 2, 4, 5);
  SpreadRewards(batch);
  int64_t truncated = 0;
  for (Group& g : batch) {
    for (v1::Rollout& r : g) truncated += r.finish_reason() == v1::FINISH_REASON_LENGTH;
  }
  ASSERT_GT(truncated, 0);
  v1::TrainerConfig tc;
  tc.set_mask_truncated(true);
  auto trainer = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0);
  absl::StatusOr<StepStats> s = trainer->Step(batch);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->truncated_masked, truncated);
  // All truncated: nothing trains (a fresh trainer, whose AdamW has no moments yet).
  trainer = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0);
  for (Group& g : batch) {
    for (v1::Rollout& r : g) r.set_finish_reason(v1::FINISH_REASON_LENGTH);
  }
  const at::Tensor before = m->NamedParameters().at("model.embed_tokens.weight").clone();
  s = trainer->Step(batch);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->truncated_masked, s->sequences);
  EXPECT_TRUE(m->NamedParameters().at("model.embed_tokens.weight").equal(before));
}

// The overlong penalty is DAPO's formula added to the reward: the step equals a plain step on
// rewards lowered by hand.
TEST(TrainerOverlong, PenaltyIsAddedToTheRewardBeforeTheAdvantages) {
  auto a = Model(9), b = Model(9);
  std::vector<Group> batch = Rollouts(*a, 3, 4, 31, {}, 12);
  SpreadRewards(batch);
  const int64_t max_len = 12, buffer = 6;
  const double penalty = 0.8;
  std::vector<Group> lowered = batch;
  int64_t penalised = 0;
  double sum = 0, n = 0;
  for (Group& g : lowered) {
    for (v1::Rollout& r : g) {
      const double y = r.response_token_ids_size();
      double p = 0;
      if (y > max_len - buffer) p = ((max_len - buffer) - y) / buffer * penalty;
      penalised += p < 0;
      sum += p;
      n += 1;
      r.mutable_verifier()->set_reward(r.verifier().reward() + p);
    }
  }
  ASSERT_GT(penalised, 0);
  v1::TrainerConfig tc;
  tc.set_lr(1e-2);
  v1::TrainerConfig ol = tc;
  ol.set_overlong_buffer(static_cast<int32_t>(buffer));
  ol.set_overlong_penalty(penalty);
  ActorSettings actor;
  actor.max_new_tokens = max_len;
  auto with = *Trainer::Create(*a, ol, v1::CreditConfig(), 1, 0, 1.0, {}, actor);
  auto plain = *Trainer::Create(*b, tc, v1::CreditConfig(), 1, 0);
  absl::StatusOr<StepStats> s = with->Step(batch);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->overlong_penalized, penalised);
  EXPECT_NEAR(s->overlong_penalty_mean, sum / n, 1e-12);
  ASSERT_TRUE(plain->Step(lowered).ok());
  EXPECT_LT(MaxAbsDiff(*a, *b), 1e-6);
}

// The actors' top-k / top-p at staleness 0: the learner's pi_old is the weights that sampled,
// so pi_old / pi_behaviour is 1 once the filter is replayed, and biased below 1 without.
TEST(TrainerFilterReplay, TisWeightIsOneAtStalenessZeroWithFiltering) {
  for (double temperature : {1.0, 0.7}) {
    auto m = Model(3);
    common::rollout::SamplingOptions sampling;
    sampling.temperature = temperature;
    sampling.top_k = 6;
    sampling.top_p = 0.8;
    std::vector<Group> batch = Rollouts(*m, 4, 8, 17, sampling, 16);
    SpreadRewards(batch);
    v1::TrainerConfig tc;
    ActorSettings replay;
    replay.top_k = sampling.top_k;
    replay.top_p = sampling.top_p;
    auto m2 = Model(3);
    auto with = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0, temperature, {}, replay);
    auto without = *Trainer::Create(*m2, tc, v1::CreditConfig(), 1, 0, temperature, {});
    absl::StatusOr<StepStats> r = with->Step(batch);
    absl::StatusOr<StepStats> n = without->Step(batch);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(n.ok()) << n.status();
    std::printf(
        "temperature %.1f, top_k 6, top_p 0.8, %lld tokens: mean pi_old/pi_behaviour "
        "%.7f with the replay, %.7f without\n",
        temperature, static_cast<long long>(r->tokens), r->tis_weight_mean, n->tis_weight_mean);
    EXPECT_NEAR(r->tis_weight_mean, 1.0, 1e-4);
    EXPECT_EQ(r->out_of_filter_tokens, 0);
    EXPECT_LT(n->tis_weight_mean, 0.95) << "the unreplayed filter biases the weight below 1";
    EXPECT_NEAR(r->mean_ratio, 1.0, 1e-4) << "on-policy: pi_theta = pi_old on the first update";
  }
}

TEST(TrainerConfig, BadCombinationsNameTheFieldAndValue) {
  auto m = Model(3);
  struct Case {
    std::function<void(v1::TrainerConfig&, ActorSettings&)> set;
    std::string want;
  };
  const std::vector<Case> cases = {
      {[](v1::TrainerConfig& c, ActorSettings&) {
         c.set_token_mask_low(0.5);
         c.set_token_mask_high(0.5);
       },
       "trainer.token_mask_high = 0.5"},
      {[](v1::TrainerConfig& c, ActorSettings&) {
         c.set_sequence_mask_low(0.9);
         c.set_sequence_mask_high(0.8);
       },
       "trainer.sequence_mask_high = 0.8"},
      {[](v1::TrainerConfig& c, ActorSettings&) { c.set_token_mask_low(1.0); },
       "trainer.token_mask_low = 1: a low bound must be below 1"},
      {[](v1::TrainerConfig& c, ActorSettings& a) {
         c.set_overlong_buffer(100);
         a.max_new_tokens = 64;
       },
       "trainer.overlong_buffer = 100 exceeds generation.max_new_tokens = 64"},
      {[](v1::TrainerConfig& c, ActorSettings&) { c.set_overlong_buffer(4); },
       "trainer.overlong_buffer = 4: the overlong penalty needs generation.max_new_tokens"},
      {[](v1::TrainerConfig& c, ActorSettings&) {
         c.set_kl_estimator(v1::KL_ESTIMATOR_UNSPECIFIED);
       },
       "trainer.kl_estimator = KL_ESTIMATOR_UNSPECIFIED"},
      {[](v1::TrainerConfig& c, ActorSettings&) {
         c.set_kl_placement(v1::KL_PLACEMENT_UNSPECIFIED);
       },
       "trainer.kl_placement = KL_PLACEMENT_UNSPECIFIED"},
      {[](v1::TrainerConfig& c, ActorSettings&) { c.set_ratio_level(v1::RATIO_LEVEL_UNSPECIFIED); },
       "trainer.ratio_level = RATIO_LEVEL_UNSPECIFIED"},
      {[](v1::TrainerConfig&, ActorSettings& a) { a.top_p = 0; }, "generation.top_p = 0"},
      {[](v1::TrainerConfig& c, ActorSettings&) {
         c.set_kl_coef(0.1);
         c.set_reference_path("/no/such/dir");
       },
       "trainer.reference_path = /no/such/dir: no such directory"},
  };
  for (const Case& c : cases) {
    v1::TrainerConfig tc;
    ActorSettings actor;
    c.set(tc, actor);
    absl::StatusOr<std::unique_ptr<Trainer>> t =
        Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0, 1.0, {}, actor);
    ASSERT_FALSE(t.ok()) << c.want;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find(c.want), std::string::npos) << t.status();
  }
  // Valid bounds pass.
  v1::TrainerConfig ok;
  ok.set_token_mask_low(0.5);
  ok.set_token_mask_high(2);
  ok.set_sequence_mask_low(0.9);
  ok.set_sequence_mask_high(1.1);
  EXPECT_TRUE(Trainer::Create(*m, ok, v1::CreditConfig(), 1, 0).ok());
}

}  // namespace
}  // namespace rhythm::learner

// Unit tests of the learner's pieces: validation, batch assembly, the trainer (leases and
// the durable state: learner_state_test.cc).
#include <cmath>

#include "ATen/ATen.h"
#include "common/clock.h"
#include "common/fp16.h"
#include "common/rollout/engine.h"
#include "gtest/gtest.h"
#include "learner/batch_assembler.h"
#include "learner/rollout_validation.h"
#include "learner/trainer.h"
#include "learner/trainer_testing.h"

namespace rhythm::learner {
namespace {

v1::Rollout ValidRollout(uint64_t id = 1, uint64_t group = 7, uint32_t sample = 0,
                         double reward = 1.0, int64_t version = 3) {
  v1::Rollout r;
  r.set_rollout_id(id);
  r.set_actor_id("a");
  r.set_run_id("r");
  r.set_group_id(group);
  r.set_sample_index(sample);
  r.set_group_size(2);
  r.add_version_spans()->set_version(version);
  for (uint32_t t : {5u, 6u}) r.add_prompt_token_ids(t);
  for (uint32_t t : {7u, 8u, 9u}) r.add_response_token_ids(t);
  for (float lp : {-0.5f, -1.0f, -2.0f}) r.add_behaviour_logprobs(lp);
  for (float e : {0.5f, 1.0f, 2.0f}) r.add_entropy(e);
  r.mutable_verifier()->set_reward(reward);
  r.mutable_summary()->set_waad_f16(common::EncodeFp16({1.0f, 5.0f, 2.0f}));
  r.mutable_summary()->set_fai_f16(common::EncodeFp16({0.2f, NAN, NAN}));
  return r;
}

TEST(Fp16, RoundTripsRepresentableValuesAndRounds) {
  const std::vector<float> exact = {0.0f,     -0.0f,           1.0f,           -2.5f,
                                    65504.0f, 0.000061035156f, 5.9604645e-08f, 1024.0f};
  EXPECT_EQ(common::DecodeFp16(common::EncodeFp16(exact)), exact);
  const std::vector<float> back =
      common::DecodeFp16(common::EncodeFp16({0.1f, 3.14159f, 1e6f, NAN}));
  EXPECT_NEAR(back[0], 0.1f, 1e-4);
  EXPECT_NEAR(back[1], 3.14159f, 2e-3);
  EXPECT_TRUE(std::isinf(back[2]));
  EXPECT_TRUE(std::isnan(back[3]));
  // Every half value decodes and re-encodes to itself (exhaustive, NaNs aside).
  for (uint32_t h = 0; h < 65536; ++h) {
    std::string b(2, '\0');
    b[0] = static_cast<char>(h & 0xff);
    b[1] = static_cast<char>(h >> 8);
    const float f = common::DecodeFp16(b)[0];
    if (std::isnan(f)) continue;
    ASSERT_EQ(common::EncodeFp16({f}), b) << h;
  }
}

TEST(Validation, AcceptsAValidRollout) {
  EXPECT_TRUE(ValidateRollout(ValidRollout(), {100, 3, 1 << 20}).ok());
}

TEST(Validation, EveryBadCaseNamesFieldValueAndReason) {
  struct Case {
    std::function<void(v1::Rollout&)> corrupt;
    v1::RejectReason reason;
    std::string want;
  } cases[] = {
      {[](v1::Rollout& r) { r.add_entropy(1); }, v1::REJECT_REASON_LENGTH_MISMATCH,
       "entropy has 4 values, response_token_ids has 3"},
      {[](v1::Rollout& r) { r.set_response_token_ids(1, 1000); },
       v1::REJECT_REASON_TOKEN_OUT_OF_VOCAB, "response_token_ids[1] = 1000 is outside"},
      {[](v1::Rollout& r) { r.set_prompt_token_ids(0, 100); }, v1::REJECT_REASON_TOKEN_OUT_OF_VOCAB,
       "prompt_token_ids[0] = 100"},
      {[](v1::Rollout& r) { r.mutable_verifier()->set_reward(NAN); }, v1::REJECT_REASON_NON_FINITE,
       "verifier.reward = nan is not finite"},
      {[](v1::Rollout& r) { r.mutable_verifier()->set_reward(INFINITY); },
       v1::REJECT_REASON_NON_FINITE, "verifier.reward = inf"},
      {[](v1::Rollout& r) { r.set_behaviour_logprobs(2, NAN); }, v1::REJECT_REASON_NON_FINITE,
       "behaviour_logprobs[2] = nan"},
      {[](v1::Rollout& r) { r.set_behaviour_logprobs(0, 0.5f); }, v1::REJECT_REASON_NON_FINITE,
       "behaviour_logprobs[0] = 0.5 must be finite and <= 0"},
      {[](v1::Rollout& r) { r.mutable_version_spans(0)->set_version(4); },
       v1::REJECT_REASON_FUTURE_VERSION,
       "version_spans[0].version = 4 but the newest version is 3"},
      {[](v1::Rollout& r) {
         r.mutable_summary()->set_waad_f16(common::EncodeFp16({1, 2}));
       },
       v1::REJECT_REASON_SUMMARY_LENGTH, "summary.waad_f16 has 2 values, response_token_ids has 3"},
      {[](v1::Rollout& r) {
         r.mutable_summary()->set_waad_f16(common::EncodeFp16({1, NAN, 2}));
       },
       v1::REJECT_REASON_NON_FINITE, "summary.waad[1] = nan"},
      {[](v1::Rollout& r) { r.set_sample_index(2); }, v1::REJECT_REASON_MALFORMED,
       "sample_index = 2 with group_size = 2"},
      {[](v1::Rollout& r) { r.clear_response_token_ids(); }, v1::REJECT_REASON_LENGTH_MISMATCH,
       "response_token_ids is empty"},
      {[](v1::Rollout& r) { r.set_actor_id(""); }, v1::REJECT_REASON_MALFORMED,
       "actor_id and run_id must be set"},
      // Issue 17: finite values outside their range, a negative version, a wrapping span.
      {[](v1::Rollout& r) { r.mutable_verifier()->set_reward(1e308); },
       v1::REJECT_REASON_OUT_OF_RANGE,
       "verifier.reward = 1e+308 exceeds |reward| <= 1e+06 (learner.max_abs_reward)"},
      {[](v1::Rollout& r) { r.mutable_verifier()->set_reward(-2e6); },
       v1::REJECT_REASON_OUT_OF_RANGE, "verifier.reward = -2e+06 exceeds"},
      {[](v1::Rollout& r) { r.set_behaviour_logprobs(1, -1e5f); }, v1::REJECT_REASON_OUT_OF_RANGE,
       "behaviour_logprobs[1] = -100000 is below -10000 (learner.min_behaviour_logprob)"},
      {[](v1::Rollout& r) { r.set_behaviour_logprobs(1, 1e-3f); }, v1::REJECT_REASON_NON_FINITE,
       "behaviour_logprobs[1] = 0.001 must be finite and <= 0"},
      {[](v1::Rollout& r) { r.mutable_version_spans(0)->set_version(-1); },
       v1::REJECT_REASON_MALFORMED, "version_spans[0].version = -1 is negative"},
      {[](v1::Rollout& r) {
         auto* s = r.add_version_spans();
         s->set_begin(2147483648u);
         s->set_version(0);
       },
       v1::REJECT_REASON_MALFORMED,
       "version_spans[1].begin = 2147483648 is past the response (3 tokens)"},
      {[](v1::Rollout& r) {
         auto* s = r.add_version_spans();
         s->set_begin(4294967295u);
         s->set_version(0);
       },
       v1::REJECT_REASON_MALFORMED, "version_spans[1].begin = 4294967295 is past the response"},
  };
  for (const Case& c : cases) {
    v1::Rollout r = ValidRollout(42);
    c.corrupt(r);
    ValidationResult v = ValidateRollout(r, {100, 3, 1 << 20});
    EXPECT_EQ(v.status.code(), absl::StatusCode::kInvalidArgument) << c.want;
    EXPECT_EQ(v.reason, c.reason) << c.want;
    EXPECT_NE(v.status.message().find("rollout 42: "), std::string::npos) << v.status;
    EXPECT_NE(v.status.message().find(c.want), std::string::npos) << v.status;
  }
  // Id 0 is reserved (the exactly-once ledger counts it as seen).
  ValidationResult zero = ValidateRollout(ValidRollout(0), {100, 3, 1 << 20});
  EXPECT_EQ(zero.reason, v1::REJECT_REASON_MALFORMED);
  EXPECT_NE(zero.status.message().find("rollout_id = 0 is reserved"), std::string::npos)
      << zero.status;
  ValidationResult big = ValidateRollout(ValidRollout(), {100, 3, 10});
  EXPECT_EQ(big.reason, v1::REJECT_REASON_OVERSIZED);
}

TEST(Validation, RangeBoundsComeFromTheConfigAndZeroDisablesTheRewardBound) {
  v1::LearnerConfig learner;
  EXPECT_EQ(learner.max_abs_reward(), 1e6) << "the documented default";
  EXPECT_EQ(learner.min_behaviour_logprob(), -1e4) << "the documented default";
  v1::Rollout r = ValidRollout(7);
  r.mutable_verifier()->set_reward(1e6);  // the bound itself is allowed
  r.set_behaviour_logprobs(0, -1e4f);
  EXPECT_TRUE(ValidateRollout(r, ValidationLimits::FromConfig(learner, 100, 3)).ok());
  r.mutable_verifier()->set_reward(1.7e308);
  EXPECT_EQ(ValidateRollout(r, ValidationLimits::FromConfig(learner, 100, 3)).reason,
            v1::REJECT_REASON_OUT_OF_RANGE);
  learner.set_max_abs_reward(0);
  EXPECT_TRUE(ValidateRollout(r, ValidationLimits::FromConfig(learner, 100, 3)).ok())
      << "0 disables the reward bound";
  learner.set_min_behaviour_logprob(-10);
  ValidationResult low = ValidateRollout(r, ValidationLimits::FromConfig(learner, 100, 3));
  EXPECT_EQ(low.reason, v1::REJECT_REASON_OUT_OF_RANGE) << low.status;
  learner.set_max_message_bytes(10);
  EXPECT_EQ(ValidateRollout(r, ValidationLimits::FromConfig(learner, 100, 3)).reason,
            v1::REJECT_REASON_OVERSIZED);
}

TEST(BatchAssembler, CompleteGroupsOnlyStalenessAndZeroVariance) {
  BatchAssembler b({2, 1, true});
  EXPECT_EQ(b.Add(ValidRollout(1, 10, 0, 1.0, 5)), BatchAssembler::AddResult::kQueued);
  EXPECT_EQ(b.Add(ValidRollout(2, 10, 0, 1.0, 5)), BatchAssembler::AddResult::kDuplicateSample);
  EXPECT_EQ(b.Add(ValidRollout(3, 10, 1, 0.0, 5)), BatchAssembler::AddResult::kGroupComplete);
  EXPECT_FALSE(b.NextBatch(5, absl::Milliseconds(10)).has_value()) << "one group < batch of 2";
  b.Add(ValidRollout(4, 11, 0, 1.0, 3));  // stale at version 5 (lag 2 > 1)
  b.Add(ValidRollout(5, 11, 1, 0.0, 3));
  b.Add(ValidRollout(6, 12, 0, 1.0, 5));  // zero variance
  b.Add(ValidRollout(7, 12, 1, 1.0, 5));
  b.Add(ValidRollout(8, 13, 0, 0.0, 4));
  EXPECT_EQ(b.queued(), 7);
  EXPECT_EQ(b.Snapshot().size(), 7u);
  EXPECT_FALSE(b.NextBatch(5, absl::Milliseconds(10)).has_value());
  EXPECT_EQ(b.counters().dropped_stale, 1);
  EXPECT_EQ(b.counters().dropped_zero_variance, 1);
  b.Add(ValidRollout(9, 13, 1, 1.0, 4));
  auto batch = b.NextBatch(5, absl::Milliseconds(10));
  ASSERT_TRUE(batch.has_value());
  ASSERT_EQ(batch->size(), 2u);
  EXPECT_EQ((*batch)[0][0].group_id(), 10u);
  EXPECT_EQ((*batch)[1][1].rollout_id(), 9u) << "sorted by sample index";
  EXPECT_EQ(b.queued(), 0);
  b.Add(ValidRollout(10, 14, 0));
  EXPECT_EQ(b.DropGroup(14), 1);
  EXPECT_EQ(b.queued(), 0);
  b.Close();
  EXPECT_FALSE(b.NextBatch(5, absl::Seconds(10)).has_value()) << "Close wakes the waiter";
}

// Rollouts of a random tiny model, generated by the rollout engine itself, with summaries.
std::vector<Group> OnPolicyGroups(const common::model::Transformer& m, int groups, int g,
                                  uint64_t seed, int max_new_tokens = 8) {
  common::rollout::GenerationOptions o;
  o.samples_per_prompt = g;
  o.max_new_tokens = max_new_tokens;
  o.seed = seed;
  return testing::EngineBatch(m, testing::SimplePrompts(groups), o);
}

using testing::TinyModel;

TEST(Trainer, OnPolicyRatiosStartAtOneAndRewardedTokensGainProbability) {
  auto m = *common::model::Transformer::RandomInit(TinyModel(), 3);
  v1::TrainerConfig tc;
  tc.set_lr(3e-3);
  tc.set_mini_batches(2);
  tc.set_micro_batch_size(3);
  v1::CreditConfig cc;  // coupled, GRPO
  auto trainer = *Trainer::Create(*m, tc, cc, 1, 0);
  auto prob7 = [&]() {
    at::NoGradGuard g;
    const at::Tensor logits =
        m->Forward(at::tensor({1, 2, 3}, at::kLong).view({1, 3}), at::ones({1, 3}))->logits;
    return at::softmax(logits[0][2], -1)[7].item<double>();
  };
  const double before = prob7();
  double first_ratio = 0;
  for (int step = 0; step < 8; ++step) {
    std::vector<Group> batch = OnPolicyGroups(*m, 4, 6, 100 + step);
    absl::StatusOr<StepStats> s = trainer->Step(batch);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->version, step + 1);
    EXPECT_EQ(s->sequences, 24);
    EXPECT_EQ(s->missing_summaries, 0);
    // 8-token responses leave the default FAI band [10, 100] empty: no anchors, only preplan,
    // and every response is counted as one where anchor credit cannot act.
    EXPECT_EQ(s->anchor_token_fraction, 0.0);
    EXPECT_EQ(s->fai_undefined_responses, 24);
    EXPECT_EQ(s->fai_defined_fraction, 0.0);
    EXPECT_NEAR(s->preplan_token_fraction, 0.4, 0.1);
    if (step == 0) first_ratio = s->mean_ratio;
  }
  // The first mini-batch is exactly on-policy and the second only one update away.
  EXPECT_NEAR(first_ratio, 1.0, 0.05);
  EXPECT_GT(prob7(), before * 1.5) << "rewarding token 7 makes it likelier";
  EXPECT_EQ(trainer->optimizer_steps(), 16);
}

TEST(Trainer, CreditActsOnResponsesLongerThanTheFaiBand) {
  // 24-token responses with the paper's band [10, 100]: FAI is defined on tokens 0..13 of each
  // (a row t = s + 10 <= 23 exists), so exactly 14 of 24 tokens, and coupled credit selects
  // round(0.4 * 14) = 6 anchors per response.
  auto m = *common::model::Transformer::RandomInit(TinyModel(), 5);
  v1::TrainerConfig tc;
  tc.set_lr(1e-3);
  tc.set_mini_batches(4);
  tc.set_micro_batch_size(6);
  for (auto strategy : {v1::CREDIT_STRATEGY_NONE, v1::CREDIT_STRATEGY_COUPLED}) {
    v1::CreditConfig cc;
    cc.set_strategy(strategy);
    cc.set_drop_zero_variance_groups(false);
    auto trainer = *Trainer::Create(*m, tc, cc, 1, 0);
    double kl = 0;
    for (int step = 0; step < 3; ++step) {
      absl::StatusOr<StepStats> s = trainer->Step(OnPolicyGroups(*m, 4, 6, 300 + step, 24));
      ASSERT_TRUE(s.ok()) << s.status();
      EXPECT_EQ(s->fai_undefined_responses, 0);
      EXPECT_NEAR(s->fai_defined_fraction, 14.0 / 24, 1e-9);
      EXPECT_NEAR(s->anchor_token_fraction, 6.0 / 24, 1e-6);
      if (strategy == v1::CREDIT_STRATEGY_NONE) {
        EXPECT_EQ(s->amplified_token_fraction, 0.0);
      } else {
        // Anchors plus introductory tokens, some of which overlap: at least the 6 anchors.
        EXPECT_GE(s->amplified_token_fraction, 6.0 / 24 - 1e-9);
        EXPECT_LT(s->amplified_token_fraction, 0.75);
      }
      kl += std::abs(s->approx_kl);
    }
    // Four updates per batch: later mini-batches see a policy that moved.
    EXPECT_GT(kl, 0.0);
  }
}

TEST(Trainer, ZeroAdvantageLeavesWeightsUnchangedAndStateRoundTrips) {
  auto m = *common::model::Transformer::RandomInit(TinyModel(), 4);
  v1::TrainerConfig tc;
  tc.set_lr(1e-2);
  auto trainer = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0);
  std::vector<Group> batch = OnPolicyGroups(*m, 2, 3, 7);
  for (Group& g : batch) {
    for (v1::Rollout& r : g) r.mutable_verifier()->set_reward(0.5);
  }
  const at::Tensor before = m->NamedParameters().at("model.embed_tokens.weight").clone();
  ASSERT_TRUE(trainer->Step(batch).ok());
  EXPECT_TRUE(m->NamedParameters().at("model.embed_tokens.weight").equal(before));

  auto other = *Trainer::Create(*m, tc, v1::CreditConfig(), 1, 0);
  ASSERT_TRUE(other->RestoreOptimizerState(trainer->OptimizerState(), 1, 1).ok());
  EXPECT_EQ(other->version(), 1);
  common::model::TensorMap broken = trainer->OptimizerState();
  broken.erase("model.norm.weight.exp_avg");
  EXPECT_NE(other->RestoreOptimizerState(broken, 1, 1).message().find("model.norm.weight.exp_avg"),
            std::string::npos);
  v1::TrainerConfig kl = tc;
  kl.set_kl_coef(0.1);
  EXPECT_TRUE(Trainer::Create(*m, kl, v1::CreditConfig(), 1, 0).ok()) << "a frozen copy";
}

}  // namespace
}  // namespace rhythm::learner

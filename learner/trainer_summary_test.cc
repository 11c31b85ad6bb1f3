// The trainer's learner-side summaries (credit.summary_source = learner) and the agreement of
// the actor's summaries with them (credit.summary_agreement), on rollouts the generation engine
// produced from the trainer's own weights, so the two sources see one policy (staleness 0).
#include <algorithm>
#include <cmath>
#include <string>

#include "ATen/ATen.h"
#include "common/fp16.h"
#include "common/rollout/engine.h"
#include "common/rollout/summary_codec.h"
#include "gtest/gtest.h"
#include "learner/learner_metrics.h"
#include "learner/rollout_validation.h"
#include "learner/trainer.h"
#include "learner/trainer_testing.h"
#include "prometheus/registry.h"

namespace rhythm::learner {
namespace {

using testing::TinyModel;

// A band small enough for FAI to be defined on most tokens of these short responses.
common::rollout::TapOptions SmallBand() {
  common::rollout::TapOptions t;
  t.window = 3;
  t.band_lo = 2;
  t.band_hi = 8;
  t.head_quantile = 0.3;
  return t;
}

// Rollouts of `m` as an actor builds them (fp16 summaries through the codec), generated at
// `version`. Responses end at token 3 or after 28 tokens, so lengths vary and micro-batches
// are right-padded.
std::vector<Group> Generate(const common::model::Transformer& m, int groups, int g, uint64_t seed,
                            int64_t version = 0) {
  common::rollout::GenerationOptions o;
  o.samples_per_prompt = g;
  o.max_new_tokens = 28;
  o.stop_token_ids = {3};
  o.seed = seed;
  o.tap = SmallBand();
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < groups; ++i) prompts.push_back({1 + i, 2, 4 + i, 5});
  return testing::EngineBatch(m, prompts, o, version);
}

v1::TrainerConfig Config() {
  v1::TrainerConfig tc;
  tc.set_lr(1e-3);
  tc.set_mini_batches(2);
  tc.set_micro_batch_size(5);
  return tc;
}

v1::CreditConfig LearnerWithAgreement() {
  v1::CreditConfig cc;  // coupled
  cc.set_summary_source(v1::SUMMARY_SOURCE_LEARNER);
  cc.set_summary_agreement(true);
  return cc;
}

int64_t Rollouts(const std::vector<Group>& batch) {
  int64_t n = 0;
  for (const Group& g : batch) n += static_cast<int64_t>(g.size());
  return n;
}

double HistogramCount(LearnerMetrics& m, const std::string& measure, const std::string& bucket) {
  return static_cast<double>(m.summary_agreement
                                 .Add({{"measure", measure}, {"staleness", bucket}},
                                      prometheus::Histogram::BucketBoundaries{})
                                 .Collect()
                                 .histogram.sample_count);
}

TEST(TrainerSummaries, LearnerSummariesAgreeWithTheActorsWithinFp16AtStalenessZero) {
  auto m = *common::model::Transformer::RandomInit(TinyModel(), 11);
  std::vector<Group> batch = Generate(*m, 4, 6, 21);
  // FAI must be defined on a good share of tokens, or its agreement would say little.
  int64_t tokens = 0, defined = 0, multi_token = 0;
  for (const Group& g : batch) {
    for (const v1::Rollout& r : g) {
      const common::rollout::SummaryFields f = common::rollout::DecodeSummary(r.summary());
      tokens += static_cast<int64_t>(f.fai.size());
      for (float x : f.fai) defined += std::isnan(x) ? 0 : 1;
      multi_token += r.response_token_ids_size() > 1 ? 1 : 0;
      ASSERT_TRUE(ValidateRollout(r, {16, 0, 1 << 20}).ok());
    }
  }
  ASSERT_GT(defined, 0.3 * tokens) << defined << " of " << tokens;

  auto trainer = *Trainer::Create(*m, Config(), LearnerWithAgreement(), 1, 0, 1.0, SmallBand());
  absl::StatusOr<StepStats> s = trainer->Step(batch);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(static_cast<int64_t>(s->agreement.size()), Rollouts(batch));
  EXPECT_EQ(s->missing_summaries, 0);
  EXPECT_GT(s->amplified_token_fraction, 0.0);
  double waad_worst = 0, fai_worst = 0;
  int64_t waad_defined = 0, fai_defined = 0;
  for (const SummaryAgreement& a : s->agreement) {
    EXPECT_EQ(a.staleness, 0);
    waad_worst = std::max(waad_worst, a.waad_fp16_error_ratio);
    fai_worst = std::max(fai_worst, a.fai_fp16_error_ratio);
    if (!std::isnan(a.waad_spearman)) {
      ++waad_defined;
      EXPECT_GT(a.waad_spearman, 0.99);
    }
    if (!std::isnan(a.fai_spearman)) {
      ++fai_defined;
      EXPECT_GT(a.fai_spearman, 0.99);
    }
    EXPECT_EQ(a.selection_jaccard, 1.0);
    EXPECT_TRUE(a.same_heads);
  }
  EXPECT_LE(waad_worst, 1.0) << "the actor's WAAD is the learner's, fp16-rounded";
  EXPECT_LE(fai_worst, 1.0);
  EXPECT_GT(waad_worst, 0.0) << "fp16 rounding is visible: the two are not the same bytes";
  EXPECT_GE(waad_defined, multi_token - 2) << "WAAD is constant only on one-token responses";
  EXPECT_GT(fai_defined, 0);

  // Exported: one observation per rollout and defined measure, the ratio gauge per bucket.
  prometheus::Registry registry;
  LearnerMetrics metrics(registry);
  metrics.RecordStep(*s);
  EXPECT_EQ(HistogramCount(metrics, "selection_jaccard", "0"), Rollouts(batch));
  EXPECT_EQ(HistogramCount(metrics, "waad_spearman", "0"), waad_defined);
  EXPECT_EQ(HistogramCount(metrics, "fai_spearman", "0"), fai_defined);
  EXPECT_EQ(HistogramCount(metrics, "waad_spearman", "1"), 0);
  EXPECT_EQ(metrics.summary_head_split_differs.Add({{"staleness", "0"}}).Value(), 0);
  EXPECT_DOUBLE_EQ(
      metrics.summary_fp16_error_ratio.Add({{"signal", "waad"}, {"staleness", "0"}}).Value(),
      waad_worst);
  EXPECT_DOUBLE_EQ(
      metrics.summary_fp16_error_ratio.Add({{"signal", "fai"}, {"staleness", "0"}}).Value(),
      fai_worst);
}

TEST(TrainerSummaries, TamperedActorSummariesShowLowAgreement) {
  auto m = *common::model::Transformer::RandomInit(TinyModel(), 11);
  std::vector<Group> batch = Generate(*m, 4, 6, 21);
  // Reverse each rollout's WAAD and FAI series: same values, opposite order.
  for (Group& g : batch) {
    for (v1::Rollout& r : g) {
      common::rollout::SummaryFields f = common::rollout::DecodeSummary(r.summary());
      std::reverse(f.waad.begin(), f.waad.end());
      std::reverse(f.fai.begin(), f.fai.end());
      std::swap(f.local_heads, f.global_heads);
      *r.mutable_summary() = common::rollout::EncodeSummary(f);
    }
  }
  // Source actor: the credit follows the tampered summaries, the learner's are the reference.
  v1::CreditConfig cc;
  cc.set_summary_agreement(true);
  auto trainer = *Trainer::Create(*m, Config(), cc, 1, 0, 1.0, SmallBand());
  absl::StatusOr<StepStats> s = trainer->Step(batch);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(static_cast<int64_t>(s->agreement.size()), Rollouts(batch));
  double waad = 0, jaccard = 0, worst = 0;
  int64_t n = 0;
  for (const SummaryAgreement& a : s->agreement) {
    EXPECT_FALSE(a.same_heads) << "local and global heads swapped";
    worst = std::max(worst, a.waad_fp16_error_ratio);
    jaccard += a.selection_jaccard;
    if (std::isnan(a.waad_spearman)) continue;
    waad += a.waad_spearman;
    ++n;
  }
  ASSERT_GT(n, 0);
  EXPECT_LT(waad / n, 0.5) << "reversed WAAD must not look like agreement";
  EXPECT_LT(jaccard / Rollouts(batch), 0.9) << "the strategy picks other tokens";
  EXPECT_GT(worst, 10.0) << "far outside fp16 rounding";
  prometheus::Registry registry;
  LearnerMetrics metrics(registry);
  metrics.RecordStep(*s);
  EXPECT_EQ(metrics.summary_head_split_differs.Add({{"staleness", "0"}}).Value(), Rollouts(batch));
}

TEST(TrainerSummaries, LearnerSourceAppliesCreditWithoutActorSummaries) {
  auto m = *common::model::Transformer::RandomInit(TinyModel(), 12);
  std::vector<Group> batch = Generate(*m, 4, 6, 31);
  for (Group& g : batch) {
    for (v1::Rollout& r : g) {
      r.clear_summary();
      ASSERT_TRUE(ValidateRollout(r, {16, 0, 1 << 20}).ok()) << "a rollout without taps is valid";
    }
  }
  // With the actor's summaries (the default) nothing is amplified: every one is missing.
  {
    auto base = *common::model::Transformer::RandomInit(TinyModel(), 12);
    auto trainer = *Trainer::Create(*base, Config(), v1::CreditConfig(), 1, 0, 1.0, SmallBand());
    absl::StatusOr<StepStats> s = trainer->Step(batch);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->missing_summaries, Rollouts(batch));
    EXPECT_EQ(s->amplified_token_fraction, 0.0);
  }
  for (bool agreement : {false, true}) {
    v1::CreditConfig cc;
    cc.set_summary_source(v1::SUMMARY_SOURCE_LEARNER);
    cc.set_summary_agreement(agreement);
    auto trainer = *Trainer::Create(*m, Config(), cc, 1, 0, 1.0, SmallBand());
    absl::StatusOr<StepStats> s = trainer->Step(batch);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->missing_summaries, 0) << "the learner summarised every response";
    EXPECT_GT(s->amplified_token_fraction, 0.2) << "gamma > 1 on coupled credit's tokens";
    EXPECT_GT(s->fai_defined_fraction, 0.3);
    EXPECT_GT(s->anchor_token_fraction, 0.0);
    EXPECT_TRUE(s->agreement.empty()) << "nothing to compare without actor summaries";
  }
}

TEST(TrainerSummaries, AgreementIsObservationOnlyAndStalenessIsBucketed) {
  // Source actor with and without agreement: the same weights after a step.
  auto a = *common::model::Transformer::RandomInit(TinyModel(), 13);
  auto b = *common::model::Transformer::RandomInit(TinyModel(), 13);
  // Generated at version 0, trained by a trainer at version 3: staleness 3 ("3+").
  std::vector<Group> batch = Generate(*a, 3, 4, 41);
  v1::CreditConfig on;
  on.set_summary_agreement(true);
  auto ta = *Trainer::Create(*a, Config(), v1::CreditConfig(), 1, 3, 1.0, SmallBand());
  auto tb = *Trainer::Create(*b, Config(), on, 1, 3, 1.0, SmallBand());
  absl::StatusOr<StepStats> sa = ta->Step(batch), sb = tb->Step(batch);
  ASSERT_TRUE(sa.ok() && sb.ok()) << sa.status() << sb.status();
  for (const auto& [name, t] : a->NamedParameters()) {
    EXPECT_TRUE(t.equal(b->NamedParameters().at(name))) << name;
  }
  EXPECT_EQ(sa->amplified_token_fraction, sb->amplified_token_fraction);
  EXPECT_DOUBLE_EQ(sa->loss, sb->loss);
  EXPECT_TRUE(sa->agreement.empty());
  ASSERT_EQ(static_cast<int64_t>(sb->agreement.size()), Rollouts(batch));
  for (const SummaryAgreement& x : sb->agreement) EXPECT_EQ(x.staleness, 3);

  prometheus::Registry registry;
  LearnerMetrics metrics(registry);
  metrics.RecordStep(*sb);
  EXPECT_EQ(HistogramCount(metrics, "selection_jaccard", "3+"), Rollouts(batch));
  EXPECT_EQ(HistogramCount(metrics, "selection_jaccard", "0"), 0);
  EXPECT_TRUE(std::isnan(
      metrics.summary_fp16_error_ratio.Add({{"signal", "waad"}, {"staleness", "0"}}).Value()))
      << "no step filled bucket 0: no data, not 0";
  EXPECT_GE(metrics.summary_fp16_error_ratio.Add({{"signal", "waad"}, {"staleness", "3+"}}).Value(),
            0.0);
  EXPECT_STREQ(LearnerMetrics::StalenessBucket(0), "0");
  EXPECT_STREQ(LearnerMetrics::StalenessBucket(2), "2");
  EXPECT_STREQ(LearnerMetrics::StalenessBucket(17), "3+");
  EXPECT_STREQ(LearnerMetrics::StalenessBucket(-1), "0");
}

TEST(TrainerSummaries, BadSettingsAreClearErrors) {
  auto m = *common::model::Transformer::RandomInit(TinyModel(), 14);
  common::rollout::TapOptions bad = SmallBand();
  bad.layers = {5};
  absl::StatusOr<std::unique_ptr<Trainer>> t =
      Trainer::Create(*m, Config(), LearnerWithAgreement(), 1, 0, 1.0, bad);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("tap layer 5"), std::string::npos) << t.status();
  EXPECT_NE(t.status().message().find("credit.summary_source = learner"), std::string::npos)
      << t.status();
  // The actor source never reads the tap settings.
  EXPECT_TRUE(Trainer::Create(*m, Config(), v1::CreditConfig(), 1, 0, 1.0, bad).ok());

  v1::CreditConfig unspecified;
  unspecified.set_summary_source(v1::SUMMARY_SOURCE_UNSPECIFIED);
  t = Trainer::Create(*m, Config(), unspecified, 1, 0, 1.0, SmallBand());
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("credit.summary_source = SUMMARY_SOURCE_UNSPECIFIED"),
            std::string::npos)
      << t.status();

  bad = SmallBand();
  bad.band_hi = 1;  // below band_lo
  t = Trainer::Create(*m, Config(), LearnerWithAgreement(), 1, 0, 1.0, bad);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("FAI band [2, 1]"), std::string::npos) << t.status();
}

}  // namespace
}  // namespace rhythm::learner

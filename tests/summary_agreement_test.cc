// A real learner and actor with the learner computing the attention summaries under pi_old
// (credit.summary_source = learner): with credit.summary_agreement on, the learner exports how
// closely the actor's summaries agree with its own; with it off, the actor skips its taps and
// the credit still acts.
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/loop_procs.h"

namespace rhythm::testing {
namespace {

const std::vector<std::string> kLearnerSummaries = {"--set", "credit.summary_source=learner"};

TEST(SummaryAgreementProcesses, LearnerSummariesAgreeWithTheActorsAndCreditActs) {
  const std::string run = ::testing::TempDir() + "/summary_agreement";
  std::filesystem::remove_all(run);
  const int port = FreePort();
  Proc learner, actor;
  std::vector<std::string> extra = kLearnerSummaries;
  extra.insert(extra.end(), {"--set", "credit.summary_agreement=true"});
  StartLearner(learner, run, port, false, run + ".learner.log", extra);
  StartActor(actor, port, "actor-a", run + ".actor.log");
  const int m = learner.metrics_port;
  ASSERT_TRUE(WaitFor([&] { return Metric(m, "rhythm_learner_policy_version") >= 3; }, 120))
      << "the learner trains; see " << run << ".learner.log";
  // The credit acted on the learner's summaries (the small loop's 24-token responses leave FAI
  // defined on 14 of 24 tokens under the default band [10, 100]).
  EXPECT_GT(Metric(m, "rhythm_learner_fai_defined_ratio"), 0.2);
  EXPECT_GT(Metric(m, "rhythm_learner_amplified_token_fraction_ratio"), 0);
  // The first step trains on version-0 rollouts with version-0 weights: staleness 0.
  const std::string s0 = "staleness=\"0\"";
  const double waad_n =
      Metric(m, "rhythm_learner_summary_agreement_count{measure=\"waad_spearman\"," + s0 + "}");
  const double waad_sum =
      Metric(m, "rhythm_learner_summary_agreement_sum{measure=\"waad_spearman\"," + s0 + "}");
  const double jaccard_n =
      Metric(m, "rhythm_learner_summary_agreement_count{measure=\"selection_jaccard\"," + s0 + "}");
  const double fai_n =
      Metric(m, "rhythm_learner_summary_agreement_count{measure=\"fai_spearman\"," + s0 + "}");
  EXPECT_GT(waad_n, 0) << "one observation per rollout";
  EXPECT_GT(jaccard_n, 0);
  EXPECT_GT(fai_n, 0);
  EXPECT_GT(waad_sum / waad_n, 0.99) << "same weights, same summaries up to fp16";
  const double waad_ratio =
      Metric(m, "rhythm_learner_summary_fp16_error_ratio{signal=\"waad\"," + s0 + "}");
  const double fai_ratio =
      Metric(m, "rhythm_learner_summary_fp16_error_ratio{signal=\"fai\"," + s0 + "}");
  EXPECT_GE(waad_ratio, 0) << "exported (-1: absent)";
  EXPECT_LE(waad_ratio, 1) << "within the wire's fp16 rounding";
  EXPECT_GE(fai_ratio, 0);
  EXPECT_LE(fai_ratio, 1);
  ActorReport r = StopActor(actor);
  EXPECT_GT(r.acked, 0);
  EXPECT_EQ(learner.p.Stop(SIGTERM, 60), 0);
}

TEST(SummaryAgreementProcesses, WithoutAgreementTheActorSkipsItsTaps) {
  const std::string run = ::testing::TempDir() + "/summary_learner_only";
  const std::string dumps = run + ".dumps";
  std::filesystem::remove_all(run);
  std::filesystem::remove_all(dumps);
  const int port = FreePort();
  Proc learner, actor;
  std::vector<std::string> extra = kLearnerSummaries;
  extra.insert(extra.end(), {"--dump-rollouts", dumps});
  StartLearner(learner, run, port, false, run + ".learner.log", extra);
  StartActor(actor, port, "actor-a", run + ".actor.log");
  const int m = learner.metrics_port;
  ASSERT_TRUE(WaitFor([&] { return Metric(m, "rhythm_learner_policy_version") >= 2; }, 120))
      << "the learner trains; see " << run << ".learner.log";
  EXPECT_GT(Metric(m, "rhythm_learner_amplified_token_fraction_ratio"), 0)
      << "credit from the learner's summaries";
  EXPECT_EQ(Metric(m,
                   "rhythm_learner_summary_agreement_count{measure=\"waad_spearman\","
                   "staleness=\"0\"}"),
            0);
  StopActor(actor);
  EXPECT_EQ(learner.p.Stop(SIGTERM, 60), 0);
  // The trained rollouts, as dumped: none carried a summary.
  int64_t rollouts = 0;
  for (const auto& f : std::filesystem::directory_iterator(dumps)) {
    std::ifstream in(f.path());
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      ++rollouts;
      EXPECT_TRUE(j.at("waad").empty()) << "the actor sent a summary: " << f.path();
    }
  }
  EXPECT_GT(rollouts, 0);
}

}  // namespace
}  // namespace rhythm::testing

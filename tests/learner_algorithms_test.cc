// Issue 20 in the real loop (a rhythm-learner and rhythm-actor processes): DAPO dynamic
// sampling keeps batches full when most groups carry no signal, and its bound gives short
// batches; reference KL, dynamic sampling and overlong shaping act together in one run; the
// learner evaluates its own weights every learner.eval_every steps and exports the figures.
//
// The mostly-zero-variance task: one-digit additions answered with one token by a random tiny
// model sampling at temperature 1 over the ~100-character vocabulary: a sample is right about
// 1 time in 100, so a group of 8 has a right sample in ~4% of groups (none when the sum has two
// digits) and every other group's rewards are all 0.
#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/fault_audit.h"
#include "tests/loop_procs.h"

namespace rhythm::testing {
namespace {

std::vector<std::string> MostlyZeroVariance(const std::string& max_rounds) {
  return {"--set", "task.kind=arithmetic",
          "--set", "task.arithmetic.digits=1",
          "--set", "generation.max_new_tokens=1",
          "--set", "trainer.group_size=8",
          "--set", "trainer.batch_groups=2",
          "--set", "credit.drop_zero_variance_groups=true",
          "--set", "trainer.dynamic_sampling=true",
          "--set", "trainer.dynamic_sampling_max_rounds=" + max_rounds};
}
const std::vector<std::string> kBusyActor = {"--set", "actor.prompts_per_batch=16"};

TEST(DynamicSamplingProcesses, FullBatchesWhenMostGroupsCarryNoSignal) {
  const std::string run = ::testing::TempDir() + "/dynamic_sampling_full";
  std::filesystem::remove_all(run);
  const int port = FreePort();
  Proc learner, actor;
  StartLearner(learner, run, port, false, run + ".learner.log", MostlyZeroVariance("1000"));
  StartActor(actor, port, "actor-a", run + ".actor.log", kBusyActor);
  const int m = learner.metrics_port;
  ASSERT_TRUE(WaitFor([&] { return Metric(m, "rhythm_learner_steps_total") >= 4; }, 240))
      << "the learner trains; see " << run << ".learner.log";
  const double steps = Metric(m, "rhythm_learner_steps_total");
  EXPECT_EQ(Metric(m, "rhythm_learner_short_batches_total"), 0) << "every batch full";
  EXPECT_EQ(Metric(m, "rhythm_learner_batch_groups"), 2);
  // Most examined groups were filtered out: extra rounds were needed (the sum of extra rounds
  // is at least a round per step on average), and the last batch's filtered share shows it.
  const double rounds_sum = Metric(m, "rhythm_learner_sampling_extra_rounds_sum");
  const double rounds_count = Metric(m, "rhythm_learner_sampling_extra_rounds_count");
  EXPECT_GE(rounds_count, steps);
  EXPECT_GT(rounds_sum, rounds_count) << "more than one extra round per batch on average";
  const double filtered = Metric(m, "rhythm_learner_groups_filtered_ratio");
  EXPECT_GT(filtered, 0) << "the last batch had groups filtered out";
  EXPECT_LT(filtered, 1);
  ASSERT_TRUE(WaitFor(
      [&] {
        return Metric(m, "rhythm_learner_groups_dropped_total{reason=\"zero_variance\"}") >
               2 * steps;
      },
      5))
      << "more groups dropped than trained";
  ActorReport r = StopActor(actor);
  EXPECT_GT(r.acked, 0);
  EXPECT_EQ(r.rejected, 0) << "dropped groups' rollouts are acked like any other";
  EXPECT_EQ(learner.p.Stop(SIGTERM, 60), 0);
  std::cerr << "measured: " << steps << " steps, " << rounds_sum << " extra rounds in "
            << rounds_count << " batches, last filtered share " << filtered << "\n";
}

TEST(DynamicSamplingProcesses, KilledAndResumedNothingAckedIsLostOrRejected) {
  const std::string run = ::testing::TempDir() + "/dynamic_sampling_crash";
  std::filesystem::remove_all(run);
  const int port = FreePort();
  Proc first, actor;
  StartLearner(first, run, port, false, run + ".learner1.log", MostlyZeroVariance("1000"));
  StartActor(actor, port, "actor-a", run + ".actor.log", kBusyActor);
  ASSERT_TRUE(
      WaitFor([&] { return Metric(first.metrics_port, "rhythm_learner_steps_total") >= 3; }, 240))
      << "see " << run << ".learner1.log";
  const double version_at_kill = Metric(first.metrics_port, "rhythm_learner_policy_version");
  EXPECT_EQ(first.p.Stop(SIGKILL, 10), 128 + SIGKILL);
  absl::SleepFor(absl::Milliseconds(500));
  Proc second;
  StartLearner(second, run, port, true, run + ".learner2.log", MostlyZeroVariance("1000"));
  const int m = second.metrics_port;
  ASSERT_TRUE(WaitFor([&] { return Metric(m, "rhythm_learner_steps_total") >= 3; }, 240))
      << "the run continues; see " << run << ".learner2.log";
  EXPECT_GE(Metric(m, "rhythm_learner_policy_version"), version_at_kill + 3);
  EXPECT_EQ(Metric(m, "rhythm_learner_short_batches_total"), 0);
  EXPECT_GT(Metric(m, "rhythm_learner_groups_dropped_total{reason=\"zero_variance\"}"), 0);
  const ActorReport r = StopActor(actor);
  EXPECT_EQ(r.rejected, 0);
  EXPECT_EQ(r.acked, r.sent) << "every rollout, dropped group or not, acked";
  EXPECT_EQ(second.p.Stop(SIGTERM, 60), 0);
  // The exactly-once ledger holds every acked rollout once, those of dropped groups included.
  absl::StatusOr<v1::LearnerCheckpoint> ck = ReadLatestCheckpoint(run);
  ASSERT_TRUE(ck.ok()) << ck.status();
  int64_t in_ledger = 0;
  for (const v1::LedgerRun& lr : ck->durable().ledger().runs()) {
    in_ledger += static_cast<int64_t>(lr.watermark()) + lr.above_size();
  }
  EXPECT_EQ(in_ledger, r.acked);
}

TEST(DynamicSamplingProcesses, ZeroExtraRoundsTrainShortBatches) {
  const std::string run = ::testing::TempDir() + "/dynamic_sampling_short";
  std::filesystem::remove_all(run);
  const int port = FreePort();
  Proc learner, actor;
  StartLearner(learner, run, port, false, run + ".learner.log", MostlyZeroVariance("0"));
  StartActor(actor, port, "actor-a", run + ".actor.log", kBusyActor);
  const int m = learner.metrics_port;
  ASSERT_TRUE(WaitFor([&] { return Metric(m, "rhythm_learner_short_batches_total") >= 2; }, 240))
      << "with no extra round allowed, a batch with one group of signal trains; see " << run
      << ".learner.log";
  EXPECT_GE(Metric(m, "rhythm_learner_steps_total"), 2);
  StopActor(actor);
  EXPECT_EQ(learner.p.Stop(SIGTERM, 60), 0);
}

TEST(DynamicSamplingProcesses, WithoutFilteringTheSwitchIsAConfigError) {
  const std::string run = ::testing::TempDir() + "/dynamic_sampling_bad";
  std::filesystem::remove_all(run);
  std::vector<std::string> args = {BinaryPath("rhythm-learner"),
                                   "--set",
                                   "learner.run_dir=" + run,
                                   "--set",
                                   "learner.address=127.0.0.1:0",
                                   "--set",
                                   "learner.metrics_address=",
                                   "--set",
                                   "trainer.dynamic_sampling=true",
                                   "--set",
                                   "credit.drop_zero_variance_groups=false"};
  const ProcessResult p = RunProcess(args, 120);
  EXPECT_NE(p.exit_code, 0);
  EXPECT_NE(p.err.find("trainer.dynamic_sampling = true needs credit.drop_zero_variance_groups"),
            std::string::npos)
      << p.err;
}

// The issue's integration run: reference KL, dynamic sampling and overlong shaping switched on
// together in one real loop; it trains, and each one's metric shows it acting. With one-token
// answers and overlong_buffer 1 every response lies in the buffer (penalty overlong_penalty
// each), so the counter counts every trained response.
TEST(AlgorithmSwitchesProcesses, ReferenceKlDynamicSamplingAndOverlongActInOneRun) {
  const std::string run = ::testing::TempDir() + "/algorithm_switches";
  std::filesystem::remove_all(run);
  std::vector<std::string> sets = MostlyZeroVariance("1000");
  for (const char* s : {"trainer.kl_coef=0.1", "trainer.kl_estimator=k3", "trainer.lr=0.001",
                        "trainer.overlong_buffer=1", "trainer.overlong_penalty=0.5"}) {
    sets.push_back("--set");
    sets.push_back(s);
  }
  const int port = FreePort();
  Proc learner, actor;
  StartLearner(learner, run, port, false, run + ".learner.log", sets);
  StartActor(actor, port, "actor-a", run + ".actor.log", kBusyActor);
  const int m = learner.metrics_port;
  ASSERT_TRUE(WaitFor([&] { return Metric(m, "rhythm_learner_steps_total") >= 3; }, 240))
      << "the learner trains; see " << run << ".learner.log";
  const double steps = Metric(m, "rhythm_learner_steps_total");
  // Reference KL: the policy has moved away from the frozen start, and the loss saw it.
  EXPECT_GT(Metric(m, "rhythm_learner_ref_kl"), 0) << "KL to the reference after 3 updates";
  // Dynamic sampling: full batches although most groups carry no signal.
  EXPECT_EQ(Metric(m, "rhythm_learner_short_batches_total"), 0);
  EXPECT_EQ(Metric(m, "rhythm_learner_batch_groups"), 2);
  // Groups without signal were filtered out along the way (the counter: the last batch's
  // filtered share, a gauge, is 0 whenever the groups it examined all had signal, which
  // happened once in CI).
  EXPECT_GT(Metric(m, "rhythm_learner_groups_dropped_total{reason=\"zero_variance\"}"), 0);
  // Overlong shaping: every trained response was penalised, by overlong_penalty.
  EXPECT_GE(Metric(m, "rhythm_learner_overlong_penalized_responses_total"), steps * 2 * 8);
  EXPECT_NEAR(Metric(m, "rhythm_learner_overlong_penalty_mean"), -0.5, 1e-6);
  // And it stays a sane run: finite loss, nothing rejected.
  EXPECT_TRUE(std::isfinite(Metric(m, "rhythm_learner_loss")));
  std::cerr << "measured: " << steps << " steps, ref KL " << Metric(m, "rhythm_learner_ref_kl")
            << ", filtered share " << Metric(m, "rhythm_learner_groups_filtered_ratio") << "\n";
  ActorReport r = StopActor(actor);
  EXPECT_GT(r.acked, 0);
  EXPECT_EQ(r.rejected, 0);
  EXPECT_EQ(learner.p.Stop(SIGTERM, 60), 0);
}

TEST(LearnerEvalProcesses, TheLearnerExportsAvgAtKEveryEvalEverySteps) {
  const std::string run = ::testing::TempDir() + "/learner_eval";
  std::filesystem::remove_all(run);
  // A countdown benchmark file (the task's own format), 5 problems: eval_n 8 scores all 5.
  const std::string dataset = run + ".eval.jsonl";
  {
    std::ofstream out(dataset);
    for (const char* line : {R"({"prompt": "2 3 -> 5\n", "answer": "5"})",
                             R"({"prompt": "4 1 -> 3\n", "answer": "3"})",
                             R"({"prompt": "6 2 -> 12\n", "answer": "12"})",
                             R"({"prompt": "7 7 -> 1\n", "answer": "1"})",
                             R"({"prompt": "9 3 -> 6\n", "answer": "6"})"}) {
      out << line << "\n";
    }
  }
  const int port = FreePort();
  Proc learner, actor;
  StartLearner(learner, run, port, false, run + ".learner.log",
               {"--set", "learner.eval_every=2", "--set", "learner.eval_dataset=" + dataset,
                "--set", "learner.eval_n=8", "--set", "learner.eval_k=3"});
  const int m = learner.metrics_port;
  // The starting weights are scored at start-up, before any actor connects.
  ASSERT_TRUE(WaitFor([&] { return Metric(m, "rhythm_learner_eval_version") == 0; }, 60))
      << "see " << run << ".learner.log";
  EXPECT_EQ(Metric(m, "rhythm_learner_eval_problems"), 5) << "every line of the file, once";
  StartActor(actor, port, "actor-a", run + ".actor.log");
  ASSERT_TRUE(WaitFor([&] { return Metric(m, "rhythm_learner_eval_version") >= 2; }, 180))
      << "an evaluation after eval_every steps; see " << run << ".learner.log";
  const double v = Metric(m, "rhythm_learner_eval_version");
  EXPECT_EQ(static_cast<int64_t>(v) % 2, 0) << "every second step's version";
  for (const char* ratio : {"rhythm_learner_eval_pass1_ratio", "rhythm_learner_eval_avg_at_k_ratio",
                            "rhythm_learner_eval_pass_at_k_ratio"}) {
    const double x = Metric(m, ratio);
    EXPECT_GE(x, 0) << ratio;
    EXPECT_LE(x, 1) << ratio;
  }
  EXPECT_GE(Metric(m, "rhythm_learner_eval_seconds_count"), 2);
  EXPECT_EQ(Metric(m, "rhythm_learner_eval_failures_total"), 0);
  std::cerr << "measured: eval of 5 problems x (1 greedy + 3 samples): "
            << Metric(m, "rhythm_learner_eval_seconds_sum") /
                   Metric(m, "rhythm_learner_eval_seconds_count")
            << " s per evaluation\n";
  StopActor(actor);
  EXPECT_EQ(learner.p.Stop(SIGTERM, 60), 0);
}

}  // namespace
}  // namespace rhythm::testing

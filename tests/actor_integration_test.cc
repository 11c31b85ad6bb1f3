// One learner and two actor processes on localhost: the loop trains and every rollout is acked
// exactly once; then kill -9 of the learner mid-run, a restart with --resume on the same port,
// and the actors reconnect by themselves with nothing lost or duplicated.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "rhythm/v1/checkpoint.pb.h"
#include "tests/fault_audit.h"
#include "tests/loop_procs.h"

namespace rhythm::testing {
namespace {

// Weights over the Gloo broadcast group instead of gRPC chunks.
const std::vector<std::string> kGloo = {"--set", "transport.kind=gloo",
                                        "--set", "transport.collective_host=127.0.0.1",
                                        "--set", "transport.collective_timeout_s=10"};

// Weights go over the Gloo group here (the fault test below uses gRPC chunks).
TEST(ActorProcesses, TwoActorsTrainAndEveryRolloutIsAckedExactlyOnce) {
  const std::string run = ::testing::TempDir() + "/actors_train";
  std::filesystem::remove_all(run);
  const int port = FreePort();
  Proc learner, a1, a2;
  StartLearner(learner, run, port, false, run + ".learner.log", kGloo);
  StartActor(a1, port, "actor-a", run + ".a1.log", kGloo);
  StartActor(a2, port, "actor-b", run + ".a2.log", kGloo);
  ASSERT_TRUE(WaitFor([&] { return Metric(learner.metrics_port, "rhythm_learner_policy_version") >= 3; }, 240))
      << "the learner trains";
  ASSERT_TRUE(WaitFor([&] {
    return Metric(a1.metrics_port, "rhythm_actor_policy_version") >= 1 &&
           Metric(a2.metrics_port, "rhythm_actor_policy_version") >= 1;
  }, 60)) << "both actors swap in new versions";
  const std::string gloo_bytes = "rhythm_actor_weight_sync_bytes_total{transport=\"gloo\"}";
  EXPECT_TRUE(WaitFor([&] {
    return Metric(a1.metrics_port, gloo_bytes) > 0 && Metric(a2.metrics_port, gloo_bytes) > 0;
  }, 60)) << "versions arrive by Gloo broadcast";
  EXPECT_EQ(Metric(learner.metrics_port, "rhythm_learner_weight_group_size"), 2);
  // The credit can act: FAI defined on many tokens, and coupled credit amplified some (the
  // random model's rewards are all 0, so no advantage is there to shape).
  EXPECT_GT(Metric(learner.metrics_port, "rhythm_learner_fai_defined_ratio"), 0.2);
  EXPECT_GT(Metric(learner.metrics_port, "rhythm_learner_amplified_token_fraction_ratio"), 0);
  EXPECT_GT(Metric(learner.metrics_port,
                   "rhythm_learner_weight_sync_bytes_total{transport=\"gloo\"}"), 0);
  ActorReport r1 = StopActor(a1), r2 = StopActor(a2);
  EXPECT_GE(r1.version, 1);
  EXPECT_GE(r2.version, 1);
  EXPECT_GT(r1.sent, 0);
  EXPECT_GT(r2.sent, 0);
  EXPECT_EQ(r1.acked + r1.rejected, r1.sent) << "actor-a: every rollout acked";
  EXPECT_EQ(r2.acked + r2.rejected, r2.sent) << "actor-b: every rollout acked";
  EXPECT_EQ(Metric(learner.metrics_port, "rhythm_learner_rollouts_accepted_total"),
            r1.acked + r2.acked - Metric(learner.metrics_port, "rhythm_learner_rollouts_duplicate_total"));
  EXPECT_EQ(Metric(learner.metrics_port, "rhythm_learner_rollouts_duplicate_total"), 0);
  EXPECT_EQ(learner.p.Stop(SIGTERM, 60), 0);
}

TEST(ActorProcesses, LearnerKilledAndResumedActorsReconnectNothingLostOrDuplicated) {
  const std::string run = ::testing::TempDir() + "/actors_fault";
  std::filesystem::remove_all(run);
  const int port = FreePort();
  Proc first, a1, a2;
  StartLearner(first, run, port, false, run + ".learner1.log");
  StartActor(a1, port, "actor-a", run + ".a1.log");
  StartActor(a2, port, "actor-b", run + ".a2.log");
  ASSERT_TRUE(WaitFor([&] {
    return Metric(first.metrics_port, "rhythm_learner_policy_version") >= 3 &&
           Metric(a1.metrics_port, "rhythm_actor_policy_version") >= 1 &&
           Metric(a2.metrics_port, "rhythm_actor_policy_version") >= 1;
  }, 240)) << "both actors are generating before the crash";
  const double version_at_kill = Metric(first.metrics_port, "rhythm_learner_policy_version");
  EXPECT_EQ(first.p.Stop(SIGKILL, 10), 128 + SIGKILL);
  absl::SleepFor(absl::Milliseconds(500));
  Proc second;
  StartLearner(second, run, port, true, run + ".learner2.log");
  ASSERT_TRUE(WaitFor([&] {
    return Metric(second.metrics_port, "rhythm_learner_steps_total") >= 2;
  }, 240)) << "the run continues after the restart";
  // Every version trained after the restart is newer than any published before it (the
  // restored checkpoint may itself be the version published last), so two steps in the
  // version is at least two past the one read before the kill.
  EXPECT_GE(Metric(second.metrics_port, "rhythm_learner_policy_version"), version_at_kill + 2)
      << "versions only go forward";
  EXPECT_TRUE(WaitFor(
      [&] { return Metric(a1.metrics_port, "rhythm_actor_reconnects_total") >= 1; }, 10));
  ActorReport r1 = StopActor(a1), r2 = StopActor(a2);
  EXPECT_EQ(r1.rejected + r2.rejected, 0);
  EXPECT_EQ(r1.acked, r1.sent);
  EXPECT_EQ(r2.acked, r2.sent);
  EXPECT_EQ(second.p.Stop(SIGTERM, 60), 0);
  // The final checkpoint's exactly-once ledger holds every acked rollout once.
  absl::StatusOr<v1::LearnerCheckpoint> final_ck = ReadLatestCheckpoint(run);
  ASSERT_TRUE(final_ck.ok()) << final_ck.status();
  const v1::LearnerCheckpoint& ck = *final_ck;
  // Each actor run's ids are dense (1, 2, ...) and none was rejected, so the ledger's count for
  // a run is its watermark plus the ids it holds above it.
  int64_t in_ledger = 0;
  for (const v1::LedgerRun& lr : ck.durable().ledger().runs()) {
    in_ledger += static_cast<int64_t>(lr.watermark()) + lr.above_size();
  }
  EXPECT_EQ(in_ledger, r1.acked + r2.acked)
      << "every rollout an actor saw acked is in the learner's ledger, once";
}

}  // namespace
}  // namespace rhythm::testing

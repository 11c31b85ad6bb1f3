// Inputs that must not poison the model (issue 17), against a real rhythm-learner process over
// real gRPC: a group with rewards 1e308 and 1.7e308 (finite, but their mean overflows to inf) is
// rejected as out_of_range by default; with the range check off it reaches the trainer, whose
// guard skips the step (counted, logged with the rollout ids) and never publishes a version, and
// the next good group publishes finite weights. A resend of an acked rollout id with NaN content
// is acked as a duplicate and leaves its lease (and the acked sample) alone.
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/metrics_server.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "rhythm/v1/learner_service.grpc.pb.h"
#include "rhythm/v1/weights.grpc.pb.h"
#include "tests/scripted_rollout.h"
#include "tests/learner_client.h"
#include "tests/subprocess.h"

namespace rhythm::testing {
namespace {

using Learner = LearnerUnderTest;

std::string TempRunDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/learner_guard_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

void StartLearner(Learner& l, const std::string& run, std::vector<std::string> extra) {
  std::vector<std::string> args = TinyLearnerArgs(run);
  args.insert(args.end(), extra.begin(), extra.end());
  StartLearnerProcess(l, args, run + ".log");
}

std::unique_ptr<grpc::ClientContext> Context(double seconds = 30) { return Deadline(seconds); }

void Register(Learner& l) {
  v1::RegisterRequest req;
  req.set_actor_id("actor-1");
  req.set_run_id("run-1");
  v1::RegisterResponse resp;
  grpc::Status s = l.stub->Register(Context().get(), req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
}

std::vector<v1::PromptLease> Lease(Learner& l, uint32_t n) {
  v1::LeaseRequest req;
  req.set_actor_id("actor-1");
  req.set_run_id("run-1");
  req.set_max_prompts(n);
  v1::LeaseResponse resp;
  EXPECT_TRUE(l.stub->LeasePrompts(Context().get(), req, &resp).ok());
  return {resp.leases().begin(), resp.leases().end()};
}

v1::Rollout MakeRollout(const v1::PromptLease& lease, uint64_t id, uint32_t sample,
                        double reward) {
  return ScriptedRollout(lease, "actor-1", "run-1", id, sample, reward);
}

using Stream = RolloutStreamClient;


// The value of one exported sample (the full series name with labels), or -1 when absent.
double MetricValue(Learner& l, const std::string& series) {
  absl::StatusOr<std::string> m = common::ScrapeLocal(l.metrics_port);
  if (!m.ok()) return -1;
  for (absl::string_view line : absl::StrSplit(*m, '\n')) {
    if (absl::StartsWith(line, series + " ")) {
      return std::stod(std::string(line.substr(series.size() + 1)));
    }
  }
  return -1;
}

double StepsSkipped(Learner& l) {
  return MetricValue(l, "rhythm_learner_steps_skipped_total{reason=\"non_finite_loss\"}") +
         MetricValue(l, "rhythm_learner_steps_skipped_total{reason=\"non_finite_grad_norm\"}");
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(LearnerGuard, HugeRewardsAreRejectedAsOutOfRange) {
  const std::string run = TempRunDir("range");
  Learner l;
  ASSERT_NO_FATAL_FAILURE(StartLearner(l, run, {}));
  ASSERT_NO_FATAL_FAILURE(Register(l));
  std::vector<v1::PromptLease> leases = Lease(l, 1);
  ASSERT_EQ(leases.size(), 1u);
  Stream s(l, "actor-1");
  s.Send(MakeRollout(leases[0], 1, 0, 1e308));
  s.Send(MakeRollout(leases[0], 2, 1, 1.7e308));
  for (int i = 0; i < 2; ++i) {
    v1::RolloutAck ack = s.NextAck();
    EXPECT_EQ(ack.code(), 3) << ack.error_message();
    EXPECT_EQ(ack.reject_reason(), v1::REJECT_REASON_OUT_OF_RANGE) << ack.error_message();
    EXPECT_NE(ack.error_message().find("learner.max_abs_reward"), std::string::npos)
        << ack.error_message();
  }
  s.Close();
  EXPECT_EQ(MetricValue(l, "rhythm_learner_rollouts_rejected_total{reason=\"out_of_range\"}"), 2);
  EXPECT_EQ(LatestVersion(l), 0);
  l.process.Stop(SIGTERM, 30);
}

// Case two: the range check off, so the poisoned group reaches the trainer.
TEST(LearnerGuard, NonFiniteStepIsSkippedCountedAndNeverPublished) {
  const std::string run = TempRunDir("skip");
  Learner l;
  ASSERT_NO_FATAL_FAILURE(StartLearner(l, run, {"--set", "learner.max_abs_reward=0"}));
  ASSERT_NO_FATAL_FAILURE(Register(l));
  std::vector<v1::PromptLease> leases = Lease(l, 2);
  ASSERT_EQ(leases.size(), 2u);
  EXPECT_EQ(StepsSkipped(l), 0) << "both series exist from the start, at 0";
  Stream s(l, "actor-1");
  s.Send(MakeRollout(leases[0], 11, 0, 1e308));
  s.Send(MakeRollout(leases[0], 12, 1, 1.7e308));
  for (int i = 0; i < 2; ++i) {
    v1::RolloutAck ack = s.NextAck();
    ASSERT_EQ(ack.code(), 0) << "the range check is off: " << ack.error_message();
  }
  bool skipped = false;
  for (int i = 0; i < 600 && !skipped; ++i) {
    skipped = StepsSkipped(l) >= 1;
    if (!skipped) absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(skipped) << ReadFile(l.log);
  EXPECT_EQ(LatestVersion(l), 0) << "a skipped step publishes nothing";
  EXPECT_EQ(MetricValue(l, "rhythm_learner_policy_version"), 0);
  EXPECT_EQ(MetricValue(l, "rhythm_learner_steps_total"), 0);
  const std::string log = ReadFile(l.log);
  EXPECT_NE(log.find("step skipped"), std::string::npos) << log;
  EXPECT_NE(log.find("rollout ids 11,12"), std::string::npos) << log;
  // A good group afterwards trains from the untouched weights: version 1, every weight finite.
  s.Send(MakeRollout(leases[1], 13, 0, 1.0));
  s.Send(MakeRollout(leases[1], 14, 1, 0.0));
  for (int i = 0; i < 2; ++i) EXPECT_EQ(s.NextAck().code(), 0);
  ASSERT_TRUE(WaitForVersion(l, 1, 60)) << ReadFile(l.log);
  v1::FetchWeightsRequest fetch;
  fetch.set_version(1);
  auto ctx = Context();
  auto reader = l.weights->FetchWeights(ctx.get(), fetch);
  v1::WeightChunk chunk;
  std::string bytes;
  while (reader->Read(&chunk)) bytes += chunk.data();
  const grpc::Status fetched = reader->Finish();
  ASSERT_TRUE(fetched.ok()) << fetched.error_code() << ": " << fetched.error_message() << "; see "
                            << l.log;
  ASSERT_GT(bytes.size(), 10000u);
  ASSERT_EQ(bytes.size() % 4, 0u) << "fp32 on the wire";
  int64_t non_finite = 0;
  for (size_t i = 0; i < bytes.size(); i += 4) {
    float f;
    std::memcpy(&f, bytes.data() + i, 4);
    non_finite += std::isfinite(f) ? 0 : 1;
  }
  EXPECT_EQ(non_finite, 0) << "of " << bytes.size() / 4 << " weights";
  s.Close();
  l.process.Stop(SIGTERM, 30);
}

// De-duplication comes before validation: a resend of an acked id with NaN content is acked as
// a duplicate, so the lease (and the acked sample in it) stays and the group still completes.
// Validating first would reject it and release the lease: sample 1 would then be refused as
// unknown_lease.
TEST(LearnerGuard, NaNResendOfAckedIdKeepsItsLease) {
  const std::string run = TempRunDir("dedup");
  Learner l;
  ASSERT_NO_FATAL_FAILURE(StartLearner(l, run, {}));
  ASSERT_NO_FATAL_FAILURE(Register(l));
  std::vector<v1::PromptLease> leases = Lease(l, 1);
  ASSERT_EQ(leases.size(), 1u);
  Stream s(l, "actor-1");
  s.Send(MakeRollout(leases[0], 1, 0, 1.0));
  v1::RolloutAck first = s.NextAck();
  ASSERT_EQ(first.code(), 0) << first.error_message();
  ASSERT_FALSE(first.duplicate());
  v1::Rollout poisoned = MakeRollout(leases[0], 1, 0, NAN);
  poisoned.set_behaviour_logprobs(0, NAN);
  s.Send(poisoned);
  v1::RolloutAck dup = s.NextAck();
  EXPECT_EQ(dup.code(), 0) << dup.error_message();
  EXPECT_TRUE(dup.duplicate());
  s.Send(MakeRollout(leases[0], 2, 1, 0.0));
  v1::RolloutAck second = s.NextAck();
  EXPECT_EQ(second.code(), 0) << second.error_message();
  EXPECT_NE(second.reject_reason(), v1::REJECT_REASON_UNKNOWN_LEASE);
  EXPECT_TRUE(WaitForVersion(l, 1, 60)) << "the group with the acked sample trains";
  EXPECT_EQ(MetricValue(l, "rhythm_learner_rollouts_rejected_total{reason=\"non_finite\"}"), 0);
  s.Close();
  l.process.Stop(SIGTERM, 30);
}

}  // namespace
}  // namespace rhythm::testing

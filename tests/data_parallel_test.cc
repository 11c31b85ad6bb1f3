// The data-parallel learner against real processes (issue 18): rank 0 (the learner actors talk
// to) and rank 1 (rhythm-learner --set learner.rank=1) meet through the store rank 0 announces
// in its run directory, and train a step together; rank 1 is then killed with SIGKILL. Rank 0
// must exit non-zero within learner.rank_timeout_s although no batch is waiting (its
// heartbeats find the dead rank), the last checkpoint must load with the full one-rank AdamW
// state, and `--resume` with one rank must train on from it.
#include <sys/wait.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "learner/checkpoint.h"
#include "tests/learner_client.h"
#include "tests/scripted_rollout.h"
#include "tests/subprocess.h"

namespace rhythm::testing {
namespace {

constexpr double kRankTimeout = 5;

std::vector<std::string> LearnerArgs(const std::string& run, std::vector<std::string> extra) {
  std::vector<std::string> args = {BinaryPath("rhythm-learner"),
                                   "--set",
                                   "learner.run_dir=" + run,
                                   "--set",
                                   "learner.address=127.0.0.1:0",
                                   "--set",
                                   "learner.metrics_address=",
                                   "--set",
                                   "learner.checkpoint_every=1",
                                   "--set",
                                   absl::StrCat("learner.rank_timeout_s=", kRankTimeout),
                                   "--set",
                                   "task.kind=arithmetic",
                                   "--set",
                                   "trainer.group_size=2",
                                   "--set",
                                   "trainer.batch_groups=1",
                                   "--set",
                                   "trainer.lr=1e-3",
                                   "--set",
                                   "runtime.torch_threads=1",
                                   "--set",
                                   "model.tiny.hidden_size=32",
                                   "--set",
                                   "model.tiny.num_layers=2",
                                   "--set",
                                   "model.tiny.num_heads=2",
                                   "--set",
                                   "model.tiny.num_kv_heads=1",
                                   "--set",
                                   "model.tiny.intermediate_size=64"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One group of 2 scripted rollouts for a fresh lease; returns once both are acked.
void TrainOneGroup(LearnerUnderTest& l, uint64_t first_id) {
  v1::RegisterRequest reg;
  reg.set_actor_id("actor-1");
  reg.set_run_id("run-1");
  v1::RegisterResponse reg_resp;
  ASSERT_TRUE(l.stub->Register(Deadline().get(), reg, &reg_resp).ok());
  v1::LeaseRequest req;
  req.set_actor_id("actor-1");
  req.set_run_id("run-1");
  req.set_max_prompts(1);
  v1::LeaseResponse resp;
  ASSERT_TRUE(l.stub->LeasePrompts(Deadline().get(), req, &resp).ok());
  ASSERT_EQ(resp.leases_size(), 1);
  RolloutStreamClient s(l, "actor-1");
  s.Send(ScriptedRollout(resp.leases(0), "actor-1", "run-1", first_id, 0, 1.0));
  // A different response for the second sample: identical responses with advantages +a and
  // -a would cancel to a zero gradient.
  v1::Rollout other = ScriptedRollout(resp.leases(0), "actor-1", "run-1", first_id + 1, 1, 0.0);
  other.set_response_token_ids(0, other.response_token_ids(1));
  s.Send(other);
  for (int i = 0; i < 2; ++i) ASSERT_EQ(s.NextAck().code(), 0);
  s.Close();
}

// Waits up to `seconds` for `p` to exit; its exit code (128 + signal), or -1 if it did not.
int WaitExit(ChildProcess& p, double seconds) {
  const absl::Time deadline = absl::Now() + absl::Seconds(seconds);
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(p.pid(), &status, WNOHANG) == p.pid()) {
      p.Detach();
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return -1;
}

TEST(DataParallelLearner, AKilledRankStopsTheLearnerAndOneRankResumesItsCheckpoint) {
  const std::string run = ::testing::TempDir() + "/data_parallel_kill";
  std::filesystem::remove_all(run);
  const std::vector<std::string> two = {"--set", "learner.world_size=2"};
  ChildProcess rank1;
  std::vector<std::string> a1 = LearnerArgs(run, two);
  a1.insert(a1.end(), {"--set", "learner.rank=1"});
  ASSERT_TRUE(rank1.Start(a1, run + ".rank1.log"));
  LearnerUnderTest l;
  ASSERT_NO_FATAL_FAILURE(StartLearnerProcess(l, LearnerArgs(run, two), run + ".rank0.log"));
  ASSERT_NO_FATAL_FAILURE(TrainOneGroup(l, 1));
  ASSERT_TRUE(WaitForVersion(l, 1, 60)) << ReadFile(l.log) << ReadFile(run + ".rank1.log");
  // checkpoint_every = 1: the step's checkpoint follows its publication.
  const std::string latest = run + "/checkpoints/LATEST";
  for (int i = 0; i < 300 && !std::filesystem::exists(latest); ++i) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(std::filesystem::exists(latest)) << ReadFile(l.log);
  absl::SleepFor(absl::Milliseconds(300));  // the checkpoint's trim and log line

  const auto killed = std::chrono::steady_clock::now();
  ASSERT_EQ(rank1.Stop(SIGKILL, 10), 128 + SIGKILL);
  const int code = WaitExit(l.process, kRankTimeout + 10);
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  const std::string log0 = ReadFile(l.log);
  ASSERT_NE(code, -1) << "rank 0 still running " << took << " s after rank 1 died:\n" << log0;
  EXPECT_NE(code, 0) << log0;
  EXPECT_LT(took, kRankTimeout + 2) << log0;
  EXPECT_NE(log0.find("learner ranks"), std::string::npos) << log0;

  // The checkpoint holds the one-rank state: a moment pair of every parameter's shape.
  absl::StatusOr<learner::LoadedCheckpoint> ck = learner::LoadLatestCheckpoint(run);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ(ck->contents.state.version(), 1);
  EXPECT_EQ(ck->contents.state.optimizer_steps(), 1);
  const common::model::TensorMap params = ck->model->NamedParameters();
  EXPECT_EQ(ck->contents.optimizer.size(), 2 * params.size());
  for (const auto& [name, p] : params) {
    for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
      auto it = ck->contents.optimizer.find(name + suffix);
      ASSERT_NE(it, ck->contents.optimizer.end()) << name << suffix;
      EXPECT_EQ(it->second.sizes(), p.sizes()) << name << suffix;
    }
  }
  // The gathered moments are the trained ones, not zeros (rank 1's half included: the last
  // parameters in name order sit in its shard).
  int64_t zero_moments = 0;
  for (const auto& [name, m] : ck->contents.optimizer) {
    zero_moments += m.abs().sum().item<double>() == 0 ? 1 : 0;
  }
  EXPECT_EQ(zero_moments, 0);

  // One rank carries on from it.
  LearnerUnderTest alone;
  std::vector<std::string> resume = LearnerArgs(run, {"--set", "learner.world_size=1"});
  resume.insert(resume.end(), {"--resume", run});
  ASSERT_NO_FATAL_FAILURE(StartLearnerProcess(alone, resume, run + ".resume.log"));
  EXPECT_EQ(LatestVersion(alone), 1);
  ASSERT_NO_FATAL_FAILURE(TrainOneGroup(alone, 101));
  EXPECT_TRUE(WaitForVersion(alone, 2, 60)) << ReadFile(alone.log);
  EXPECT_EQ(alone.process.Stop(SIGTERM, 30), 0) << ReadFile(alone.log);
}

// A rank that hangs (SIGSTOP) rather than dies: rank 0's heartbeat waits for it, and the
// learner stops once learner.rank_timeout_s has passed, not before.
TEST(DataParallelLearner, AHungRankStopsTheLearnerAfterTheRankTimeout) {
  const std::string run = ::testing::TempDir() + "/data_parallel_hang";
  std::filesystem::remove_all(run);
  const std::vector<std::string> two = {"--set", "learner.world_size=2"};
  ChildProcess rank1;
  std::vector<std::string> a1 = LearnerArgs(run, two);
  a1.insert(a1.end(), {"--set", "learner.rank=1"});
  ASSERT_TRUE(rank1.Start(a1, run + ".rank1.log"));
  LearnerUnderTest l;
  ASSERT_NO_FATAL_FAILURE(StartLearnerProcess(l, LearnerArgs(run, two), run + ".rank0.log"));
  EXPECT_EQ(LatestVersion(l), 0);
  const auto stopped = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(rank1.pid(), SIGSTOP), 0);
  const int code = WaitExit(l.process, kRankTimeout + 10);
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  const std::string log0 = ReadFile(l.log);
  EXPECT_NE(code, -1) << "rank 0 still running " << took << " s after rank 1 hung:\n" << log0;
  EXPECT_NE(code, 0) << log0;
  EXPECT_GT(took, kRankTimeout - 1) << log0;
  EXPECT_LT(took, kRankTimeout + 3) << log0;
  rank1.Stop(SIGKILL, 10);
}

}  // namespace
}  // namespace rhythm::testing

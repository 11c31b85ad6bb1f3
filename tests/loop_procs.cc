#include "tests/loop_procs.h"

#include <signal.h>

#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/metrics_server.h"
#include "gtest/gtest.h"

namespace rhythm::testing {

std::vector<std::string> SmallLoopConfig() {
  return {"--set", "task.kind=countdown",
          "--set", "task.countdown.format=steps",
          "--set", "task.countdown.num_numbers=3",
          "--set", "task.heldout_size=20",
          "--set", "trainer.group_size=2",
          "--set", "trainer.batch_groups=2",
          "--set", "generation.max_new_tokens=24",
          "--set", "model.tiny.hidden_size=32",
          "--set", "model.tiny.num_layers=2",
          "--set", "model.tiny.num_heads=2",
          "--set", "model.tiny.num_kv_heads=1",
          "--set", "model.tiny.intermediate_size=64",
          "--set", "trainer.lr=1e-3",
          "--set", "credit.drop_zero_variance_groups=false"};
}

void StartLearner(Proc& l, const std::string& run, int port, bool resume, const std::string& log,
                  const std::vector<std::string>& extra) {
  std::vector<std::string> args = {BinaryPath("rhythm-learner"),
                                   "--set",
                                   "learner.run_dir=" + run,
                                   "--set",
                                   absl::StrCat("learner.address=127.0.0.1:", port),
                                   "--set",
                                   "learner.metrics_address=127.0.0.1:0",
                                   "--set",
                                   "learner.checkpoint_every=2"};
  for (const std::string& a : SmallLoopConfig()) args.push_back(a);
  for (const std::string& a : extra) args.push_back(a);
  if (resume) {
    args.push_back("--resume");
    args.push_back(run);
  }
  ASSERT_TRUE(l.p.Start(args, log));
  std::vector<std::string> parts = absl::StrSplit(l.p.ReadLine(60), ' ');
  ASSERT_EQ(parts.size(), 6u) << "the learner did not start; see " << log;
  l.metrics_port = std::stoi(parts[5]);
}

std::vector<std::string> ActorArgs(const std::string& learner_address, const std::string& id) {
  return {BinaryPath("rhythm-actor"),
          "--set", "actor.learner_address=" + learner_address,
          "--set", "actor.metrics_address=127.0.0.1:0",
          "--set", "actor.actor_id=" + id,
          "--set", "actor.prompts_per_batch=2",
          "--set", "actor.heartbeat_interval_s=0.2",
          "--set", "actor.backoff_initial_s=0.05",
          "--set", "actor.backoff_max_s=0.5"};
}

void StartActor(Proc& a, int port, const std::string& id, const std::string& log,
                const std::vector<std::string>& extra) {
  std::vector<std::string> args = ActorArgs(absl::StrCat("127.0.0.1:", port), id);
  for (const std::string& x : extra) args.push_back(x);
  ASSERT_TRUE(a.p.Start(args, log));
  std::vector<std::string> parts = absl::StrSplit(a.p.ReadLine(60), ' ');
  ASSERT_EQ(parts.size(), 4u) << "the actor did not start; see " << log;
  a.metrics_port = std::stoi(parts[3]);
}

double Metric(int port, const std::string& name) {
  absl::StatusOr<std::string> body = common::ScrapeLocal(port);
  if (!body.ok()) return -1;
  std::istringstream in(*body);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

bool WaitFor(const std::function<bool()>& cond, double seconds) {
  for (int i = 0; i < seconds * 20; ++i) {
    if (cond()) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

ActorReport StopActor(Proc& a) {
  kill(a.p.pid(), SIGTERM);
  ActorReport r;
  for (int i = 0; i < 10; ++i) {
    const std::string line = a.p.ReadLine(30);
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() == 11 && f[1] == "sent") {
      r = {std::stoll(f[2]), std::stoll(f[4]), std::stoll(f[6]), std::stoll(f[8]),
           std::stoll(f[10])};
      break;
    }
  }
  EXPECT_EQ(a.p.Stop(SIGTERM, 30), 0) << "SIGTERM exits 0";
  return r;
}

}  // namespace rhythm::testing

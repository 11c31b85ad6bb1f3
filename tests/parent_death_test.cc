// Children started by rhythm stop when their parent dies, however it dies: common/subprocess
// passes RHYTHM_PARENT_PID and every binary's start-up (common/startup.h) asks the kernel for
// SIGTERM on the parent's death. Here this test binary re-runs itself as the parent, starts a
// real rhythm-learner, and is killed with SIGKILL; the learner must be gone soon after.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/subprocess.h"

namespace rhythm::testing {
namespace {

constexpr char kParentMode[] = "RHYTHM_TEST_AS_PARENT_OF";

// In parent mode (set by the test below) this binary starts the learner, prints its pid and
// waits to be killed; it never reaches gtest.
const bool kRanAsParent = [] {
  const char* run_dir = std::getenv(kParentMode);
  if (run_dir == nullptr) return false;
  unsetenv(kParentMode);
  static ChildProcess learner;  // never destroyed: we die by SIGKILL
  if (!learner.Start(
          {BinaryPath("rhythm-learner"), "--set", std::string("learner.run_dir=") + run_dir,
           "--set", "learner.address=127.0.0.1:0", "--set", "learner.metrics_address=127.0.0.1:0"},
          std::string(run_dir) + ".log")) {
    std::_Exit(3);
  }
  const std::string ready = learner.ReadLine(120);  // "rhythm-learner: listening on ..."
  std::cout << learner.pid() << " " << ready << std::endl;
  while (true) pause();
}();

// True while `pid` runs (a zombie awaiting its reaper counts as gone).
bool Running(int pid) {
  if (kill(pid, 0) != 0) return false;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("State:", 0) == 0) return line.find('Z') == std::string::npos;
  }
  return false;
}

TEST(ParentDeath, ALearnerStopsWhenTheProcessThatStartedItIsKilled) {
  ASSERT_FALSE(kRanAsParent);
  const std::string run = ::testing::TempDir() + "/parent_death_run";
  std::filesystem::remove_all(run);
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  ASSERT_GT(n, 0);
  setenv(kParentMode, run.c_str(), 1);
  ChildProcess parent;
  ASSERT_TRUE(parent.Start({std::string(self, static_cast<size_t>(n))}, run + ".parent.log"));
  unsetenv(kParentMode);
  const std::string line = parent.ReadLine(120);
  std::vector<std::string> f = absl::StrSplit(line, ' ');
  ASSERT_GE(f.size(), 3u) << "'" << line << "'";
  ASSERT_EQ(f[1], "rhythm-learner:") << line;
  const int learner = std::stoi(f[0]);
  ASSERT_TRUE(Running(learner));

  EXPECT_EQ(parent.Stop(SIGKILL, 10), 128 + SIGKILL);
  const absl::Time end = absl::Now() + absl::Seconds(30);
  while (Running(learner) && absl::Now() < end) absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(Running(learner)) << "the learner outlived the process that started it";
  if (Running(learner)) kill(learner, SIGKILL);
}

}  // namespace
}  // namespace rhythm::testing

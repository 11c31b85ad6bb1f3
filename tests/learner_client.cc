#include "tests/learner_client.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace rhythm::testing {

void StartLearnerProcess(LearnerUnderTest& l, const std::vector<std::string>& args,
                         const std::string& log) {
  l.log = log;
  ASSERT_TRUE(l.process.Start(args, log));
  const std::string line = l.process.ReadLine(60);
  std::vector<std::string> parts = absl::StrSplit(line, ' ');
  ASSERT_EQ(parts.size(), 6u) << "unexpected first line: '" << line << "'; see " << log;
  l.port = std::stoi(parts[3]);
  l.metrics_port = std::stoi(parts[5]);
  auto channel =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", l.port), grpc::InsecureChannelCredentials());
  l.stub = v1::Learner::NewStub(channel);
  l.weights = v1::Weights::NewStub(channel);
}

std::vector<std::string> TinyLearnerArgs(const std::string& run) {
  return {BinaryPath("rhythm-learner"),
          "--set", "learner.run_dir=" + run,
          "--set", "learner.address=127.0.0.1:0",
          "--set", "learner.metrics_address=127.0.0.1:0",
          "--set", "learner.checkpoint_every=100",
          "--set", "task.kind=arithmetic",
          "--set", "trainer.group_size=2",
          "--set", "trainer.batch_groups=1",
          "--set", "trainer.lr=1e-3",
          "--set", "model.tiny.hidden_size=32",
          "--set", "model.tiny.num_layers=2",
          "--set", "model.tiny.num_heads=2",
          "--set", "model.tiny.num_kv_heads=1",
          "--set", "model.tiny.intermediate_size=64"};
}

std::unique_ptr<grpc::ClientContext> Deadline(double seconds) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  return ctx;
}

}  // namespace rhythm::testing

// A real rhythm-learner process and gRPC stubs to it, for the tests that drive the learner as a
// scripted client (learner_integration_test, learner_guard_test).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "rhythm/v1/learner_service.grpc.pb.h"
#include "rhythm/v1/weights.grpc.pb.h"
#include "tests/subprocess.h"

namespace rhythm::testing {

struct LearnerUnderTest {
  ChildProcess process;
  int port = 0;
  int metrics_port = 0;
  std::string log;
  std::unique_ptr<v1::Learner::Stub> stub;
  std::unique_ptr<v1::Weights::Stub> weights;
};

// Starts `args` (a rhythm-learner command line) with its output in `log`, reads its first line
// ("rhythm-learner: listening on PORT metrics PORT") and connects the stubs. Fails the current
// test (gtest ASSERT) if the learner does not start.
void StartLearnerProcess(LearnerUnderTest& l, const std::vector<std::string>& args,
                         const std::string& log);

// A client context whose deadline is `seconds` from now.
std::unique_ptr<grpc::ClientContext> Deadline(double seconds = 30);

}  // namespace rhythm::testing

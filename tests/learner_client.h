// A real rhythm-learner process and gRPC stubs to it (start, rollout stream, version polling),
// for the tests that drive the learner as a scripted client (learner_integration_test,
// learner_guard_test).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
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

// A rhythm-learner command line for scripted-client tests: run dir `run`, free local ports,
// arithmetic prompts, groups of 2, one group per batch, lr 1e-3, a 2-layer 32-wide model, a
// checkpoint every 100 steps. Append --set flags to override.
std::vector<std::string> TinyLearnerArgs(const std::string& run);

// A client context whose deadline is `seconds` from now.
std::unique_ptr<grpc::ClientContext> Deadline(double seconds = 30);

// One rollout stream of `actor` (run "run-1"): says hello, sends rollouts, reads acks and tallies
// the credits granted on the way.
class RolloutStreamClient {
 public:
  RolloutStreamClient(LearnerUnderTest& l, const std::string& actor) {
    ctx_ = Deadline(120);
    stream_ = l.stub->StreamRollouts(ctx_.get());
    v1::RolloutStreamRequest hello;
    hello.mutable_hello()->set_actor_id(actor);
    hello.mutable_hello()->set_run_id("run-1");
    EXPECT_TRUE(stream_->Write(hello));
    v1::RolloutStreamResponse first;
    EXPECT_TRUE(stream_->Read(&first));
    credits_ = first.credit();
  }
  void Send(const v1::Rollout& r) {
    v1::RolloutStreamRequest req;
    *req.mutable_rollout() = r;
    ASSERT_TRUE(stream_->Write(req));
    --credits_;
  }
  // Reads until an ack arrives; credits are tallied on the way.
  v1::RolloutAck NextAck() {
    v1::RolloutStreamResponse resp;
    while (stream_->Read(&resp)) {
      credits_ += resp.granted_credits();
      if (resp.kind_case() == v1::RolloutStreamResponse::kCredit) credits_ += resp.credit();
      if (resp.has_ack()) return resp.ack();
    }
    ADD_FAILURE() << "stream ended";
    return {};
  }
  void Close() {
    stream_->WritesDone();
    v1::RolloutStreamResponse resp;
    while (stream_->Read(&resp)) {
    }
    stream_->Finish();
  }
  int64_t credits() const { return credits_; }

 private:
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::RolloutStreamRequest, v1::RolloutStreamResponse>>
      stream_;
  int64_t credits_ = 0;
};

// The learner's latest version, from a heartbeat as actor-1 of run-1.
inline int64_t LatestVersion(LearnerUnderTest& l) {
  v1::HeartbeatRequest req;
  req.set_actor_id("actor-1");
  req.set_run_id("run-1");
  v1::HeartbeatResponse resp;
  EXPECT_TRUE(l.stub->Heartbeat(Deadline().get(), req, &resp).ok());
  return resp.latest_version();
}

// Polls LatestVersion every 100 ms until it reaches `v`; false after `seconds`.
inline bool WaitForVersion(LearnerUnderTest& l, int64_t v, double seconds) {
  for (int i = 0; i < seconds * 10; ++i) {
    if (LatestVersion(l) >= v) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

}  // namespace rhythm::testing

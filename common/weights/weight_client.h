// The actor's side of weight transport.
//   FetchOverGrpc: one version over Weights.FetchWeights, split into `streams` chunk ranges
//     fetched in parallel; a broken stream resumes at its next chunk, a chunk whose CRC32C does
//     not match is fetched again, and the whole buffer's CRC32C is checked at the end.
//   GroupMember: membership of the learner's broadcast group (Weights.WeightGroup); runs on a
//     background thread and hands every verified version to a callback, so generation only
//     pauses to swap the received buffer in.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/weights/communicator.h"
#include "common/weights/weight_metrics.h"
#include "rhythm/v1/weights.grpc.pb.h"

namespace rhythm::common::weights {

// The largest gRPC message a weights receiver (an actor's channel to the learner) accepts, both
// ways: a chunk plus its framing must fit it.
inline constexpr int kReceiverMaxMessageBytes = 64 << 20;

struct FetchOptions {
  int streams = 1;
  // Attempts per chunk range before giving up (each resumes where the last stopped).
  int max_attempts = 20;
  absl::Duration attempt_timeout = absl::Seconds(120);
  ActorWeightMetrics* metrics = nullptr;  // optional
};

// The flat buffer of `version` (its announcement), verified. NOT_FOUND when the learner no
// longer keeps it; DATA_LOSS when the whole-buffer checksum fails; UNAVAILABLE when a range did
// not arrive after max_attempts.
absl::StatusOr<std::string> FetchOverGrpc(v1::Weights::StubInterface& stub,
                                          const v1::WeightVersion& version,
                                          const FetchOptions& options);

struct ReceivedVersion {
  v1::WeightVersion announcement;
  std::string bytes;
  double seconds = 0;
};

class GroupMember {
 public:
  GroupMember(v1::Weights::StubInterface* stub, std::string actor_id,
              std::unique_ptr<CommunicatorFactory> factory, ActorWeightMetrics* metrics);
  // Joins and stays a member until the stream ends or Stop(); calls `deliver` (on this thread)
  // with every version received and verified. FAILED_PRECONDITION when the learner has no
  // group of this kind (use gRPC and stop trying); other errors: the actor may join again.
  absl::Status Run(const std::function<void(ReceivedVersion)>& deliver);
  // Cancels the stream; Run returns soon (a broadcast in flight ends at the group's timeout).
  void Stop();
  // Hands a delivered buffer back for the next broadcast to reuse (saves allocating and
  // page-faulting a model-sized buffer per version). Thread-safe.
  void Recycle(std::string buffer);
  // True between a successful connect and the end of the stream.
  bool connected() const { return connected_.load(); }
  // Test hook (fault injection): called after each bucket of a broadcast arrives, with the
  // version and the bytes received so far. Set before Run.
  void set_bucket_hook(std::function<void(int64_t, uint64_t)> hook) {
    bucket_hook_ = std::move(hook);
  }

 private:
  v1::Weights::StubInterface* stub_;
  const std::string actor_id_;
  std::unique_ptr<CommunicatorFactory> factory_;
  ActorWeightMetrics* metrics_;
  std::function<void(int64_t, uint64_t)> bucket_hook_;
  std::atomic<bool> connected_{false};
  std::atomic<bool> stop_{false};
  absl::Mutex mu_;
  grpc::ClientContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::string spare_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rhythm::common::weights

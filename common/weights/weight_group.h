// WeightGroupHost: the learner's side of the collective weight transport (rank 0). Actors
// become members through the Weights.WeightGroup stream (weights.proto documents the message
// order); one thread here forms the group and broadcasts every new version in buckets.
//
//   member joins / leaves / fails  ─► group marked dirty
//   loop: dirty? ─► form: Form(id) to every member ─► all Ready within timeout?
//                          no: drop the late ones (their streams end; they use gRPC) and form
//                              again with the rest
//                          yes: Connect(id) to every member, connect rank 0 (bounded by timeout)
//         newer version? ─► Broadcast event to every member, then the buckets
//                           failure (peer died or hung, detected by the timeout) ─► dirty
//
// The trainer never waits for any of it: Publish only stores the version. A group that has
// just formed first receives the newest version, so a joining actor gets the current weights.
// Membership changes only between broadcasts. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/weights/communicator.h"
#include "common/weights/version_store.h"
#include "common/weights/weight_metrics.h"
#include "rhythm/v1/weights.pb.h"

namespace rhythm::common::weights {

struct WeightGroupHostOptions {
  // Bounds every Ready wait, connect and broadcast.
  absl::Duration timeout = absl::Seconds(60);
  LearnerWeightMetrics* metrics = nullptr;  // optional
};

class WeightGroupHost {
 public:
  // One member's stream, as the transport adapter sees it.
  class Member {
   public:
    const std::string& actor_id() const { return actor_id_; }

   private:
    friend class WeightGroupHost;
    std::string actor_id_;
    std::deque<v1::WeightGroupEvent> outbox_;
    int64_t ready_group_ = -1;
    bool gone_ = false;     // its stream ended
    bool dropped_ = false;  // the host removed it (missed a deadline)
  };

  WeightGroupHost(const VersionStore* store, std::unique_ptr<CommunicatorFactory> factory,
                  WeightGroupHostOptions options);
  ~WeightGroupHost();  // Stop()s

  void Start();
  // Ends every member stream and the loop thread. Idempotent.
  void Stop();
  v1::TransportKind kind() const { return factory_->kind(); }

  // --- for the transport adapter (common/weights/weight_service.h) -------------------------
  std::shared_ptr<Member> Join(const std::string& actor_id);
  // The next event for `m`; nullopt after `wait` with nothing to send. Returns a non-OK status
  // when the stream must end (the host dropped the member, or is stopping).
  absl::Status NextEvent(Member& m, absl::Duration wait, v1::WeightGroupEvent* event, bool* have);
  void Ready(Member& m, int64_t group_id);
  // The member's stream ended (client went away or the adapter gave up).
  void Leave(Member& m);

  // --- introspection (tests, metrics) ------------------------------------------------------
  int group_size() const;
  int64_t group_id() const;
  int64_t reforms() const { return reforms_.load(); }
  int64_t last_broadcast_version() const { return last_sent_.load(); }

 private:
  void Loop();
  // Forms a group from the live members into comm_; leaves comm_ null when there are none or
  // connecting failed.
  void Form();
  absl::Status Broadcast(const PublishedVersion& v);
  std::vector<std::shared_ptr<Member>> LiveMembersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const VersionStore* store_;
  std::unique_ptr<CommunicatorFactory> factory_;
  const WeightGroupHostOptions options_;

  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<Member>> members_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Member>> group_ ABSL_GUARDED_BY(mu_);
  int64_t group_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  std::unique_ptr<Communicator> comm_;  // owned by the loop thread
  std::atomic<int64_t> reforms_{0};
  std::atomic<int64_t> last_sent_{-1};
  std::thread thread_;
};

}  // namespace rhythm::common::weights

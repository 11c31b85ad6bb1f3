// RolloutStreamer: the actor's side of the learner's rollout stream, resilient to the learner
// going away (docs/architecture.md §4.1, §4.7).
//
// Deliver() puts rollouts in the unacked buffer (blocking while it holds max_unacked) and
// queues them. A background connection thread keeps one StreamRollouts stream open: hello,
// then rollouts as the learner's credits allow; a reader thread takes acks (which remove
// rollouts from the buffer: accepted, duplicate, or rejected as invalid) and credits. When the
// stream breaks, the thread calls `reconnect` (the actor re-registers), backs off with jitter
// and opens a new stream, resending every unacked rollout in id order: the learner's
// de-duplication makes this exactly-once. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "actor/rollout_sink.h"
#include "common/backoff.h"
#include "rhythm/v1/learner_service.grpc.pb.h"

namespace rhythm::actor {

struct StreamerCounters {
  int64_t sent = 0;      // distinct rollouts handed to Deliver
  int64_t acked = 0;     // distinct rollouts the learner acked as accepted or duplicate
  int64_t rejected = 0;  // distinct rollouts the learner rejected as invalid
  int64_t resent = 0;    // writes of a rollout after its first
  int64_t reconnects = 0;
  int64_t unacked = 0;
};

class RolloutStreamer final : public RolloutSink {
 public:
  struct Options {
    std::string actor_id;
    std::string run_id;
    int64_t max_unacked = 1024;
    common::BackoffOptions backoff;
    uint64_t seed = 0;
    // An empty message goes on the stream after this long without a write, so the learner's
    // learner.idle_timeout_s does not cut a stream that is only waiting for generation.
    absl::Duration keepalive = absl::Seconds(30);
  };
  // `stub` must outlive the streamer. `reconnect` runs before every new stream after a break
  // (re-register); its error only delays the next attempt.
  RolloutStreamer(v1::Learner::Stub& stub, const Options& options,
                  std::function<absl::Status()> reconnect);
  ~RolloutStreamer() override;

  absl::Status Deliver(std::vector<v1::Rollout> group) override;

  // Waits until every sent rollout is acked or `timeout` passes; true when all were acked.
  bool Flush(absl::Duration timeout);
  // Stops the threads; unacked rollouts are abandoned (the learner re-issues their leases).
  void Close();
  StreamerCounters counters() const;
  // The distinct group (lease) ids of the unacked rollouts, ascending.
  std::vector<uint64_t> UnackedGroups() const;
  // Called with every ack as it arrives (for metrics).
  void SetAckObserver(std::function<void(const v1::RolloutAck&)> observer);

 private:
  void ConnectionLoop();
  // Runs one stream until it breaks or the streamer closes.
  void RunStream();

  v1::Learner::Stub& stub_;
  const Options options_;
  const std::function<absl::Status()> reconnect_;
  std::function<void(const v1::RolloutAck&)> observer_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  std::map<uint64_t, v1::Rollout> unacked_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> to_send_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, int> writes_ ABSL_GUARDED_BY(mu_);
  int64_t credits_ ABSL_GUARDED_BY(mu_) = 0;
  bool stream_broken_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  StreamerCounters counters_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* active_context_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace rhythm::actor

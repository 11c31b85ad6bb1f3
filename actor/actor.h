// Actor: the rollout loop of rhythm-actor (docs/architecture.md §1-§2).
//
//   register (retry with backoff) ─ fetch weights of the current version
//   └─▶ loop: swap in newer weights (between batches only) ─ lease prompts ─ generate G samples
//             each (attention summaries on) ─ verify ─ rollouts ─▶ RolloutSink (the streamer)
//
// Every rollout records the version that generated all its tokens (weights never change inside
// a batch). A heartbeat thread keeps the leases alive and learns the newest version. Weights
// arrive over gRPC (common/weights FetchOverGrpc) or, with transport.kind gloo or nccl, from
// the learner's broadcast group, received on a background thread into a staging buffer so
// generation only pauses for the swap; an actor that cannot join the group uses gRPC. Stop()
// (SIGTERM) ends the loop after the current batch. Thread-safety: Run on one thread; Stop and
// the accessors from any.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "actor/rollout_streamer.h"
#include "common/clock.h"
#include "common/model/transformer.h"
#include "common/tasks/task.h"
#include "common/tokenizer/tokenizer.h"
#include "common/weights/weight_client.h"
#include "common/weights/weight_metrics.h"
#include "prometheus/registry.h"
#include "rhythm/v1/config.pb.h"
#include "rhythm/v1/learner_service.grpc.pb.h"
#include "rhythm/v1/weights.grpc.pb.h"

namespace rhythm::actor {

struct ActorMetrics;

class Actor {
 public:
  struct Options {
    // The actor's own configuration (actor.* and runtime.*); the learner supplies the model,
    // task, generation and group-size sections at registration.
    v1::RhythmConfig config;
    std::string actor_id;
    std::string run_id;
    std::shared_ptr<prometheus::Registry> registry;
  };
  // The stubs (on one channel to the learner) must outlive the actor.
  Actor(v1::Learner::Stub& stub, v1::Weights::Stub& weights, Options options);
  ~Actor();

  // Registers (retrying while the learner is unreachable), then runs the loop until Stop().
  // Returns OK after a clean stop; an error for what retrying cannot fix (a model the learner's
  // weights do not fit, an unknown task).
  absl::Status Run();
  void Stop() { stop_ = true; }

  // Waits for the streamer to deliver what is unacked (on shutdown).
  bool Flush(absl::Duration timeout);
  StreamerCounters counters() const;
  int64_t version() const { return version_.load(); }

 private:
  absl::Status RegisterWithRetry();
  absl::Status Register();
  absl::Status BuildModel(const v1::RhythmConfig& learner_config);
  // Fetches the newest announced version over gRPC and swaps it in.
  absl::Status FetchLatestOverGrpc();
  // Swaps `bytes` in as the model's weights (between batches).
  absl::Status ApplyWeights(const v1::WeightVersion& version, const std::string& bytes,
                            std::chrono::steady_clock::time_point pause_start);
  // The broadcast group membership loop (background thread; only for gloo / nccl).
  void GroupLoop();
  // True while this actor is a connected member: versions then arrive by broadcast.
  bool GroupConnected();
  absl::Status GenerateBatch();
  void HeartbeatLoop();

  v1::Learner::Stub& stub_;
  v1::Weights::Stub& weights_stub_;
  Options options_;
  std::unique_ptr<ActorMetrics> metrics_;
  std::unique_ptr<common::weights::ActorWeightMetrics> weight_metrics_;
  // Group membership: the newest version received by broadcast, not yet swapped in.
  std::thread group_thread_;
  absl::Mutex group_mu_;
  std::unique_ptr<common::weights::GroupMember> member_ ABSL_GUARDED_BY(group_mu_);
  std::unique_ptr<common::weights::ReceivedVersion> received_ ABSL_GUARDED_BY(group_mu_);

  v1::RhythmConfig learner_config_;
  std::unique_ptr<common::model::Transformer> model_;
  std::unique_ptr<common::Tokenizer> tokenizer_;
  std::unique_ptr<common::tasks::Task> task_;
  std::unique_ptr<RolloutStreamer> streamer_;
  std::thread heartbeat_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> version_{-1};
  std::atomic<int64_t> latest_version_{0};
  std::atomic<bool> reregister_{false};
  // The learner's process identity: a new one (it restarted, maybe from an older checkpoint)
  // means our weights' version number may name different weights, so fetch again.
  std::string learner_session_;
  uint64_t next_rollout_id_ = 1;
  uint64_t batches_ = 0;
  // The leases of the batch being generated; with the streamer's unacked groups, what each
  // heartbeat names for renewal (the learner's lease deadlines are hard otherwise).
  absl::Mutex leases_mu_;
  std::vector<uint64_t> generating_ ABSL_GUARDED_BY(leases_mu_);
};

}  // namespace rhythm::actor

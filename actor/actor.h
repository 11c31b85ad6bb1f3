// Actor: the rollout loop of rhythm-actor.
//
//   register (retry with backoff) ─ fetch weights of the current version
//   └─▶ loop: swap in newer weights (between batches only) ─ lease prompts ─ generate G samples
//             each (attention summaries on) ─ verify ─ rollouts ─▶ RolloutSink (the streamer)
//
// Every rollout records the version that generated all its tokens (weights never change inside
// a batch). A heartbeat thread keeps the leases alive and learns the newest version. Stop()
// (SIGTERM) ends the loop after the current batch. Thread-safety: Run on one thread; Stop and
// the accessors from any.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "actor/rollout_streamer.h"
#include "common/clock.h"
#include "common/model/transformer.h"
#include "common/tasks/task.h"
#include "common/tokenizer/tokenizer.h"
#include "prometheus/registry.h"
#include "rhythm/v1/config.pb.h"
#include "rhythm/v1/learner_service.grpc.pb.h"

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
  // `stub` must outlive the actor.
  Actor(v1::Learner::Stub& stub, Options options);
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
  absl::Status FetchWeights(const v1::WeightVersion& version);
  absl::Status GenerateBatch();
  void HeartbeatLoop();

  v1::Learner::Stub& stub_;
  Options options_;
  std::unique_ptr<ActorMetrics> metrics_;
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
};

}  // namespace rhythm::actor

// Actor: rhythm-actor's process around its RolloutProducer (docs/architecture.md §1-§2).
//
//   register (retry with backoff) ─ build the model, tokenizer and task the learner names
//   └─▶ loop: RolloutProducer::RunBatch (swap in newer weights between batches, lease,
//             generate, verify, deliver to the RolloutStreamer) ─ re-register when told to
//
// The actor owns what talks to the learner: registration, the heartbeat thread (renews the
// leases of the batch being generated and of unacked rollouts, notices when it must register
// again), the RolloutStreamer, and the weight source (common/weights/weight_source.h: the
// WatchVersions stream over gRPC, or the broadcast group with gRPC as its fallback), which
// alone decides which version is newest. Stop() (SIGTERM) ends the loop after the current
// batch. Thread-safety: Run on one thread; Stop and the accessors from any.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "actor/actor_metrics.h"
#include "actor/rollout_producer.h"
#include "actor/rollout_streamer.h"
#include "common/model/transformer.h"
#include "common/tasks/task.h"
#include "common/tokenizer/tokenizer.h"
#include "common/weights/weight_source.h"
#include "prometheus/registry.h"
#include "rhythm/v1/config.pb.h"
#include "rhythm/v1/learner_service.grpc.pb.h"
#include "rhythm/v1/weights.grpc.pb.h"

namespace rhythm::actor {

class Actor {
 public:
  struct Options {
    // The actor's own configuration (actor.*, runtime.*, transport.*); the learner supplies the
    // model, task, generation and group-size sections at registration.
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
  // The version generating now; -1 before the first weights.
  int64_t version() const;

 private:
  absl::Status RegisterWithRetry();
  absl::Status Register();
  // The model, tokenizer and task of the learner's configuration, the weight source and the
  // producer over them.
  absl::Status BuildProducer();
  void HeartbeatLoop();

  v1::Learner::Stub& stub_;
  v1::Weights::Stub& weights_stub_;
  Options options_;
  std::unique_ptr<ActorMetrics> metrics_;
  std::unique_ptr<RolloutStreamer> streamer_;
  std::unique_ptr<PromptLeaser> leaser_;

  v1::RhythmConfig learner_config_;
  std::unique_ptr<common::model::Transformer> model_;
  std::unique_ptr<common::Tokenizer> tokenizer_;
  std::unique_ptr<common::tasks::Task> task_;
  std::unique_ptr<common::weights::WeightSource> weights_;
  // Set once by Run before the heartbeat starts; producer_ready_ says it is there.
  std::unique_ptr<RolloutProducer> producer_;
  std::atomic<bool> producer_ready_{false};
  std::thread heartbeat_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> reregister_{false};
  // The learner's newest version as its heartbeat replies say: for rhythm_actor_version_lag
  // only (the weight source decides what to fetch).
  std::atomic<int64_t> learner_version_{0};
  // The learner's process identity: a new one (it restarted, maybe from an older checkpoint)
  // means our weights' version number may name different weights, so fetch again.
  std::string learner_session_;
};

}  // namespace rhythm::actor

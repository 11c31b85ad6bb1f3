// LearnerServer: the rhythm-learner process minus flag parsing.
//
//   actors ─ StreamRollouts ─ validate ─ dedupe ─┐
//                                               ▼
//                    ingest thread: RolloutLog.AppendAndSync (group commit) ─ seen ids,
//                    BatchAssembler, leases ─ acks (+ credits while the queue has room)
//                                               │
//   trainer thread: NextBatch ─ Trainer.Step ─ publish version (flat weights, chunks)
//                   ─ checkpoint every N steps (then trim the log)
//   housekeeping thread: lease expiry, gauges
//   gRPC: Register, Heartbeat, LeasePrompts, StreamRollouts; and the Weights service
//   (common/weights: gRPC chunks, or a Gloo/NCCL broadcast group per transport.kind)
//
// Exactly-once: a rollout is acked only once durable; an id seen before is acked with
// duplicate = true and dropped; a restart (Create with resume) restores the last checkpoint and
// replays the log after it. Thread-safety: public methods are safe from any thread.
#pragma once

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/bounded_queue.h"
#include "common/clock.h"
#include "common/model/transformer.h"
#include "common/weights/version_store.h"
#include "common/weights/weight_group.h"
#include "common/weights/weight_metrics.h"
#include "common/weights/weight_service.h"
#include "learner/batch_assembler.h"
#include "learner/learner_metrics.h"
#include "learner/prompt_leases.h"
#include "learner/rollout_log.h"
#include "learner/trainer.h"
#include "rhythm/v1/config.pb.h"
#include "rhythm/v1/learner_service.grpc.pb.h"

namespace grpc {
class Server;
}

namespace rhythm::learner {

struct LearnerServerOptions {
  v1::RhythmConfig config;
  // Continue from <run_dir>/checkpoints/LATEST and the rollout log after it.
  bool resume = false;
  // When set, every trained batch is also written there in `rhythm shape`'s JSONL format.
  std::string dump_rollouts_dir;
  // The initial model (ignored on resume, where the checkpoint's model is used).
  std::unique_ptr<common::model::Transformer> model;
  PromptSource prompts;
  // Adds tokenizer files to a checkpoint's model directory.
  std::function<absl::Status(const std::string&)> write_tokenizer;
  common::Clock* clock = nullptr;  // default: the real clock
  std::shared_ptr<prometheus::Registry> registry;
};

class LearnerServer final : public v1::Learner::Service {
 public:
  static absl::StatusOr<std::unique_ptr<LearnerServer>> Create(LearnerServerOptions options);
  ~LearnerServer() override;

  // Starts gRPC on config.learner.address and the worker threads.
  absl::Status Start();
  int port() const { return port_; }
  // Blocks until the policy reaches version trainer.steps (never, when steps == 0) or
  // Shutdown() is called.
  void WaitUntilDone();
  bool done() const { return done_.load(); }
  // True when the learner stopped because of an error it cannot recover from in-process (a
  // failed training step, a failed log append): restart it with --resume.
  bool failed() const { return failed_.load(); }
  // Stops accepting work, finishes the current step, writes a final checkpoint, stops gRPC.
  // Idempotent.
  absl::Status Shutdown();

  int64_t version() const { return version_.load(); }

  // gRPC handlers (thin: decode, call the domain logic, convert the status).
  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest*,
                        v1::RegisterResponse*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse*) override;
  grpc::Status LeasePrompts(grpc::ServerContext*, const v1::LeaseRequest*,
                            v1::LeaseResponse*) override;
  grpc::Status StreamRollouts(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::RolloutStreamResponse, v1::RolloutStreamRequest>*) override;

 private:
  struct Pending {
    v1::Rollout rollout;
    std::string key;
    std::function<void(const v1::RolloutAck&)> done;
  };
  explicit LearnerServer(LearnerServerOptions options);
  absl::Status Init();
  absl::Status InitWeightTransport();
  void IngestLoop();
  void TrainLoop();
  void HousekeepingLoop();
  // Validates and queues one rollout for durability; `done` is called with its ack.
  void Submit(v1::Rollout rollout, std::function<void(const v1::RolloutAck&)> done);
  // Applies a durable rollout to the in-memory state. Requires state_mu_.
  void ApplyDurable(v1::Rollout rollout, const std::string& key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);
  void PublishWeights();
  // Gives up a lease whose group can no longer complete (a sample was rejected): logged, its
  // partial group dropped, its prompt re-queued. Requires state_mu_.
  void ReleaseLeaseLocked(uint64_t lease_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);
  // Logs the expiry of leases already taken out of PromptLeases, drops their partial groups
  // and counts them. An append failure is returned (the caller fails the learner).
  absl::Status LogExpiriesLocked(const std::vector<uint64_t>& lease_ids)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);
  // Stops the learner without a final checkpoint (the in-memory state cannot be trusted).
  void Fail(const absl::Status& status);
  absl::Status WriteCheckpointNow();
  void DumpBatch(const std::vector<Group>& batch, int64_t step);
  bool QueueHasRoom() const;
  static std::string RolloutKey(const v1::Rollout& r);

  LearnerServerOptions options_;
  common::Clock& clock_;
  std::unique_ptr<LearnerMetrics> metrics_;
  std::unique_ptr<common::model::Transformer> model_;
  std::unique_ptr<Trainer> trainer_;
  std::unique_ptr<RolloutLog> log_;
  std::unique_ptr<PromptLeases> leases_;
  std::unique_ptr<BatchAssembler> assembler_;
  common::BoundedQueue<Pending> ingest_queue_;
  std::atomic<int64_t> version_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> done_{false};
  std::atomic<bool> failed_{false};
  const std::string session_;
  std::atomic<int64_t> steps_done_{0};
  bool warned_fai_undefined_ = false;  // TrainLoop only
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::thread> threads_;

  mutable absl::Mutex state_mu_;
  std::set<std::string> seen_ ABSL_GUARDED_BY(state_mu_);
  // Rollouts queued for durability, with the acks of resends that arrived meanwhile (answered
  // once the original is durable, so a duplicate is never acked before the original is safe).
  std::map<std::string, std::vector<std::function<void(const v1::RolloutAck&)>>> in_flight_
      ABSL_GUARDED_BY(state_mu_);
  uint64_t log_seq_ ABSL_GUARDED_BY(state_mu_) = 0;
  std::map<std::string, std::string> actor_runs_ ABSL_GUARDED_BY(state_mu_);

  // Weight transport: every version lands in the store; the service serves it over gRPC and,
  // with a collective transport.kind, the group host broadcasts it.
  std::unique_ptr<common::weights::LearnerWeightMetrics> weight_metrics_;
  std::unique_ptr<common::weights::VersionStore> versions_;
  std::unique_ptr<common::weights::WeightGroupHost> group_;
  std::unique_ptr<common::weights::WeightService> weight_service_;

  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace rhythm::learner

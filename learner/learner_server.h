// LearnerServer: the rhythm-learner process minus flag parsing (docs/architecture.md §1-§4).
//
//   actors ─ StreamRollouts (learner/rollout_stream.h: hello, credits, acks)
//            ─ dedupe ─ validate ─┐
//                                 ▼
//                    ingest thread: journal the rollouts ─ LearnerState.Apply ─ fsync (group
//                                   commit, outside the state lock) ─ acks
//                                               │
//   trainer thread (learner/train_loop.h): NextBatch ─ Trainer.Step ─ journal + publish the
//                   version (flat weights) ─ checkpoint every N steps (LearnerState.Snapshot;
//                   then trim the journal)
//   housekeeping thread: lease expiry (hard deadlines, silent actors), gauges
//   evaluator thread (learner.eval_every > 0, learner/evaluator.h): the starting weights and
//                   every eval_every-th step's, on a copy, beside training
//   gRPC: Register, Heartbeat (names the leases to renew), LeasePrompts, StreamRollouts; and
//   the Weights service (common/weights: gRPC chunks, or a Gloo/NCCL broadcast group)
//
// Every change to the durable state is decided and journaled, then applied through
// LearnerState::Apply, the same function replay uses (learner/learner_state.h), under the
// state lock; the fsync that makes it durable runs after the lock is released, and nothing
// outside the learner (an ack, a reply, a published version, a checkpoint) learns of a change
// before it is durable. Exactly-once: a
// rollout is acked only once durable; an id seen before is acked with duplicate = true (before
// any validation, so a resend of an acked rollout is never reported rejected) and dropped.
// Versions only go forward: a resume whose checkpoint is older than the last published version
// publishes the restored weights under a new number above it. Thread-safety: public methods
// are safe from any thread.
#pragma once

#include <atomic>
#include <initializer_list>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
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
#include "learner/evaluator.h"
#include "learner/learner_metrics.h"
#include "learner/learner_state.h"
#include "learner/prompt_source.h"
#include "learner/rollout_log.h"
#include "learner/train_loop.h"
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
  // For learner.eval_every > 0 (learner/evaluator.h): the training task (its held-out split
  // and verifier, unless learner.eval_dataset names a file) and the tokenizer. Not owned; they
  // must outlive the server. Create fails with FAILED_PRECONDITION when eval_every > 0 and
  // either is missing.
  const common::tasks::Task* task = nullptr;
  const common::Tokenizer* tokenizer = nullptr;
  // Data-parallel learner (learner.world_size > 1): rank 0's group (learner/rank_group.h), not
  // owned, outliving the server. The trainer hands every batch to the other ranks; checkpoints
  // gather the AdamW shards into the one-rank form. Null = training alone.
  RankGroup* ranks = nullptr;
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
    std::string key;  // RolloutKey
    std::function<void(const v1::RolloutAck&)> done;
  };
  explicit LearnerServer(LearnerServerOptions options);
  absl::Status Init();
  absl::Status InitWeightTransport();
  // learner.eval_every > 0: the evaluation set and the evaluator thread (learner/evaluator.h).
  absl::Status InitEvaluator();
  // Hands the model's current weights to the evaluator as `version` (skipped while it is busy).
  // On the thread that owns the model: before Start's threads, then the training thread.
  void OfferEvaluation(int64_t version);
  void IngestLoop();
  void HousekeepingLoop();
  // Validates and queues one rollout for durability; `done` is called with its ack.
  // `identity` is the stream's authenticated caller ("" without authentication).
  void Submit(v1::Rollout rollout, const std::string& identity,
              std::function<void(const v1::RolloutAck&)> done);
  // Whether `identity` may act as `actor_id`: always without authentication; otherwise only
  // the identity that registered it (durable in its session). Counts a refusal.
  bool MayActAsLocked(const std::string& actor_id, const std::string& identity)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);
  // INVALID_ARGUMENT naming the first (field, value) longer than learner.max_id_bytes
  // (counted under limit max_id_bytes).
  grpc::Status CheckLengths(
      std::initializer_list<std::pair<const char*, const std::string*>> fields);
  // Ends rollout streams silent past learner.idle_timeout_s (the housekeeping thread).
  void CutIdleStreams();
  // Appends `records` to the journal (no fsync) and applies them to state_, in order; returns
  // the journal sequence number to pass to AwaitDurable before anything outside the learner
  // may learn of them (an ack, a reply, a published version, a checkpoint). No records: the
  // last committed number. An append failure is returned and nothing is applied (the caller
  // fails the learner or the RPC).
  absl::StatusOr<uint64_t> CommitLocked(const std::vector<v1::JournalRecord>& records)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);
  // Returns once the journal is durable through `seq`: one fsync, outside state_mu_, shared by
  // every commit waiting meanwhile (group commit). A failure stops the learner (Fail) and is
  // returned.
  absl::Status AwaitDurable(uint64_t seq) ABSL_LOCKS_EXCLUDED(state_mu_);
  // Journals the version, then makes its weights available to actors.
  absl::Status PublishWeights(int64_t version);
  // Gives up a lease whose sample was rejected: journaled; its acked samples wait for the next
  // lease of the prompt to complete the group (LearnerState). Returns the sequence number to
  // AwaitDurable (0: nothing to release, or the append failed and the learner is failing).
  uint64_t ReleaseLeaseLocked(uint64_t lease_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);
  // Ends `key`'s time in flight: the acks owed to resends that arrived meanwhile.
  std::vector<std::function<void(const v1::RolloutAck&)>> TakeInFlightLocked(
      const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);
  bool SilentLocked(const std::string& actor_id, absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_);
  // Stops the learner without a final checkpoint (the in-memory state cannot be trusted).
  void Fail(const absl::Status& status);
  absl::Status WriteCheckpointNow();
  bool QueueHasRoom() const;
  static std::string RolloutKey(const v1::Rollout& r);

  LearnerServerOptions options_;
  common::Clock& clock_;
  std::unique_ptr<LearnerMetrics> metrics_;
  std::unique_ptr<common::model::Transformer> model_;
  std::unique_ptr<Trainer> trainer_;
  std::unique_ptr<RolloutLog> log_;
  std::unique_ptr<BatchAssembler> assembler_;
  common::BoundedQueue<Pending> ingest_queue_;
  std::atomic<int64_t> version_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> done_{false};
  std::atomic<bool> failed_{false};
  const std::string session_;
  std::unique_ptr<TrainLoop> train_loop_;
  // learner.eval_every > 0: evaluates published versions on its own thread (it has its own
  // copy of the weights); offered by the training thread, reset after it has joined.
  std::unique_ptr<BackgroundEvaluator> evaluator_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::thread> threads_;

  mutable absl::Mutex state_mu_;
  std::unique_ptr<LearnerState> state_ ABSL_PT_GUARDED_BY(state_mu_);
  // Volatile: when each actor was last heard from (a restart gives every actor a grace period).
  std::map<std::string, absl::Time> last_heard_ ABSL_GUARDED_BY(state_mu_);
  // Rollouts queued for durability, with the acks of resends that arrived meanwhile (answered
  // once the original is durable, so a duplicate is never acked before the original is safe).
  std::map<std::string, std::vector<std::function<void(const v1::RolloutAck&)>>> in_flight_
      ABSL_GUARDED_BY(state_mu_);

  // Weight transport: every version lands in the store; the service serves it over gRPC and,
  // with a collective transport.kind, the group host broadcasts it.
  std::unique_ptr<common::weights::LearnerWeightMetrics> weight_metrics_;
  std::unique_ptr<common::weights::VersionStore> versions_;
  std::unique_ptr<common::weights::WeightGroupHost> group_;
  std::unique_ptr<common::weights::WeightService> weight_service_;

  // Callers must prove an identity (security.require_client_cert or accepted tokens).
  bool authenticates_ = false;
  // Open rollout streams and when each last sent a message, for learner.idle_timeout_s.
  struct OpenStream {
    grpc::ServerContext* context;
    std::atomic<int64_t> last_message_ns;
    std::atomic<bool> cut{false};
  };
  absl::Mutex streams_mu_;
  std::set<OpenStream*> streams_ ABSL_GUARDED_BY(streams_mu_);

  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace rhythm::learner

// TrainLoop: the learner's training thread, apart from the service that owns the state. It
// takes batches of complete groups from the BatchAssembler, dumps them (--dump-rollouts),
// steps the Trainer, has each new version published (the service journals it first), records
// the step's metrics and log line, checkpoints every learner.checkpoint_every steps, and
// finishes after trainer.steps steps in all (counting those of the weights it started from).
//
//   NextBatch ─ staleness ─ dump ─ Trainer.Step ─ publish(version) ─ metrics, log
//             ─ checkpoint() every N ─ evaluate(version) every learner.eval_every
//             ─ finished() at trainer.steps
//
// Batch assembly's figures (BatchAssembler::BatchInfo: groups, filtered share, short batch,
// extra rounds) go to the metrics and the step's log line.
//
// With data-parallel ranks (learner.world_size > 1) the trainer hands each batch to the other
// ranks; while no batch is ready the loop sends them heartbeats (Trainer::Heartbeat), so a rank
// that died or hangs stops the learner within learner.rank_timeout_s.
//
// A failed step or publication calls fail() and returns: the weights may be half-updated, so
// the learner stops and a --resume restarts from the last checkpoint and the journal.
// Thread-safety: Run on one thread; steps() and total_steps() from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "learner/batch_assembler.h"
#include "learner/learner_metrics.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::learner {

class Trainer;

class TrainLoop {
 public:
  struct Options {
    v1::RhythmConfig config;
    std::string dump_dir;        // --dump-rollouts; empty: none
    int64_t restored_steps = 0;  // training steps of the weights it starts from
  };
  struct Hooks {
    std::function<absl::Status(int64_t version)> publish;  // journal, then serve to actors
    std::function<absl::Status()> checkpoint;
    std::function<void(const absl::Status&)> fail;  // stop without a final checkpoint
    std::function<void()> finished;                 // trainer.steps reached
    // Optional: called after the version of every learner.eval_every-th training step
    // (counting the restored steps) is published; it must not hold the loop long (the
    // learner's copies the weights for its evaluator thread: learner/evaluator.h).
    std::function<void(int64_t version)> evaluate;
  };

  // `queue`, `trainer`, `metrics` and `version` (the published version, which the service
  // reads) must outlive the loop.
  TrainLoop(Options options, BatchAssembler& queue, Trainer& trainer, LearnerMetrics& metrics,
            std::atomic<int64_t>& version, Hooks hooks);

  // Trains until `stop` is true, a failure, or trainer.steps.
  void Run(const std::atomic<bool>& stop);

  int64_t steps() const { return steps_.load(); }  // in this process
  int64_t total_steps() const { return options_.restored_steps + steps_.load(); }

 private:
  const Options options_;
  BatchAssembler& queue_;
  Trainer& trainer_;
  LearnerMetrics& metrics_;
  std::atomic<int64_t>& version_;
  const Hooks hooks_;
  std::atomic<int64_t> steps_{0};
  bool warned_fai_undefined_ = false;
};

}  // namespace rhythm::learner

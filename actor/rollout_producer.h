// RolloutProducer: the actor's batch loop body, with no network of its own
// (docs/architecture.md §1 steps 2-5). One RunBatch:
//
//   weights.Newer(version) ─ a newer version? ─ swap it into the model   (between batches only)
//   leaser.Lease(prompts_per_batch) ─ no leases? sleep retry_after_s, done
//   GenerationEngine::Generate: G samples per prompt, attention summaries on
//   task.Verify each completion ─ rollouts ─▶ sink.Deliver, one lease group at a time
//
// Every rollout records the one version that generated all its tokens: the weight source is
// asked only before a batch, never while one is generated or delivered. The Actor wires it to
// the learner (LeasePrompts, the weight source of common/weights/weight_source.h, the
// RolloutStreamer); tests wire fakes and a real tiny model and task.
//
// Thread-safety: RunBatch, ForgetVersion and SetGenerationConfig on one thread (the actor
// loop); version() and GeneratingLeases() from any (the heartbeat).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "actor/actor_metrics.h"
#include "actor/rollout_sink.h"
#include "common/clock.h"
#include "common/model/transformer.h"
#include "common/tasks/task.h"
#include "common/tokenizer/tokenizer.h"
#include "common/weights/weight_source.h"
#include "rhythm/v1/config.pb.h"
#include "rhythm/v1/learner_service.pb.h"

namespace rhythm::actor {

// Where prompt leases come from (the learner's LeasePrompts).
class PromptLeaser {
 public:
  virtual ~PromptLeaser() = default;
  // Up to `max_prompts` leases; a reply with none carries retry_after_s. UNAVAILABLE and the
  // like when the learner cannot be reached.
  virtual absl::StatusOr<v1::LeaseResponse> Lease(uint32_t max_prompts) = 0;
};

class RolloutProducer {
 public:
  struct Options {
    std::string actor_id;
    std::string run_id;
    uint32_t prompts_per_batch = 1;
    // The actor's runtime.seed: batch b samples with seed * 1000003 + b.
    uint64_t seed = 0;
    // The learner's generation section (sampling, lengths, stop strings, taps).
    v1::GenerationConfig generation;
    // Compute attention summaries in the decode loop and send them (TapsWanted).
    bool taps = true;
  };

  // Whether the learner's credit section wants the actor's summaries: not when the learner
  // computes its own (summary_source = learner) and does not compare them with the actor's
  // (summary_agreement off). Skipping the taps saves the decode loop their rows and
  // accumulation, and the wire two fp16 series per rollout.
  static bool TapsWanted(const v1::CreditConfig& credit) {
    return credit.summary_source() != v1::SUMMARY_SOURCE_LEARNER || credit.summary_agreement();
  }

  // Borrows everything; all of it must outlive the producer. `model` is written only by the
  // weight swap at the start of RunBatch.
  RolloutProducer(Options options, common::model::Transformer& model,
                  const common::Tokenizer& tokenizer, const common::tasks::Task& task,
                  PromptLeaser& leaser, common::weights::WeightSource& weights, RolloutSink& sink,
                  ActorMetrics& metrics, common::Clock& clock);

  // One batch (above). Returns OK after a delivered batch, after an empty lease reply (having
  // slept its retry_after_s, at least 50 ms), and after a failed weight update while weights
  // are in hand (logged; the batch is generated with them). Otherwise:
  //   the weight source's error while no weights are in hand (nothing is leased; back off);
  //   INVALID_ARGUMENT when the update does not fit the model, the source announced something
  //     unusable, or generation rejected a prompt (retrying cannot fix these);
  //   the leaser's error; the sink's (CANCELLED once it is closed: stop). Rollouts not
  //     delivered are dropped and their leases left to expire.
  absl::Status RunBatch();

  // The version in the model; -1 before the first weights or after ForgetVersion.
  int64_t version() const { return version_.load(); }
  // The learner's identity changed, so our version number may name other weights: the next
  // RunBatch takes whatever the source has (Newer(-1)) and generates nothing until it has.
  void ForgetVersion() { version_ = -1; }
  // The learner's generation section and TapsWanted after a re-registration (used from the
  // next batch).
  void SetGenerationConfig(const v1::GenerationConfig& generation, bool taps = true) {
    options_.generation = generation;
    options_.taps = taps;
  }
  // The leases of the batch being generated, until it is delivered: the heartbeat names them
  // for renewal (afterwards the sink's unacked rollouts name them).
  std::vector<uint64_t> GeneratingLeases() const;

 private:
  // Asks the source for something newer and swaps it in.
  absl::Status UpdateWeights();
  // Generates, verifies and builds the rollouts of `leases`, grouped by lease (in lease order;
  // empty groups left out).
  absl::StatusOr<std::vector<std::vector<v1::Rollout>>> Generate(const v1::LeaseResponse& leases);

  Options options_;
  common::model::Transformer& model_;
  const common::Tokenizer& tokenizer_;
  const common::tasks::Task& task_;
  PromptLeaser& leaser_;
  common::weights::WeightSource& weights_;
  RolloutSink& sink_;
  ActorMetrics& metrics_;
  common::Clock& clock_;

  std::atomic<int64_t> version_{-1};
  uint64_t next_rollout_id_ = 1;
  uint64_t batches_ = 0;
  mutable absl::Mutex leases_mu_;
  std::vector<uint64_t> generating_ ABSL_GUARDED_BY(leases_mu_);
};

}  // namespace rhythm::actor

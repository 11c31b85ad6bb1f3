// Evaluation of a policy on a fixed problem set: greedy pass@1, and avg@k / pass@k from k
// samples at generation.temperature. One implementation, used by `rhythm eval` and `rhythm
// train` (cli/sft_eval.h re-exports it) and by the learner during training (learner.eval_every:
// BackgroundEvaluator below).
//
//   EvalSet (held-out split or learner.eval_dataset) ─ EvaluateProblems(model) ─ EvalResult
//   learner: train thread ─ Offer(version, weights: copied) ─▶ evaluator thread ─ on_report
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/model/transformer.h"
#include "common/tasks/task.h"
#include "common/tokenizer/tokenizer.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::learner {

struct EvalResult {
  int64_t problems = 0;
  double pass1 = 0;  // greedy
  double passk = 0;  // at least one of k samples correct (k = 1: same as pass1)
  // Mean accuracy of the k samples (avg@k: pass@1 at the sampling temperature; k = 1: the
  // greedy figure, as no sample is drawn).
  double sampled = 0;
  // Per problem, in order: greedy answer correct; correct samples out of k.
  std::vector<bool> greedy_correct;
  std::vector<int32_t> samples_correct;
};

// The same figures over the first `m` problems of `r` (m <= r.problems); `k` as evaluated.
// Batches of 32 get their own sampling seed, so for m a multiple of 32 this equals evaluating
// n = m directly.
EvalResult Prefix(const EvalResult& r, int64_t m, int64_t k);

// Greedy (and, for k > 1, sampled) accuracy on problems problem(0) .. problem(n-1), scored by
// `task`'s verifier, in batches of 32 prompts (the sampled pass of batch b uses seed
// runtime.seed + 32 b). Prompts are rendered by config.task()'s prompt format
// (common/tasks/prompt_format.h): INVALID_ARGUMENT when it does not fit `tokenizer` (e.g.
// prompt_format chat with the character tokenizer). `cancelled`, when given, is checked between
// batches: CANCELLED once it returns true. Thread-safety: reads `model`; any number of calls
// may run at once on different models.
absl::StatusOr<EvalResult> EvaluateProblems(
    const common::model::Transformer& model, const common::Tokenizer& tokenizer,
    const common::tasks::Task& task, const std::function<common::tasks::Problem(uint64_t)>& problem,
    int64_t n, int64_t k, const v1::RhythmConfig& config,
    const std::function<bool()>& cancelled = nullptr);

// EvaluateProblems on the held-out split [0, min(n, heldout_size)).
absl::StatusOr<EvalResult> EvaluateHeldOut(const common::model::Transformer& model,
                                           const common::Tokenizer& tokenizer,
                                           const common::tasks::Task& task, int64_t n, int64_t k,
                                           const v1::RhythmConfig& config);

// The learner's evaluation problems: the first learner.eval_n lines of learner.eval_dataset (a
// jsonl file, common/tasks/jsonl_task.h, in file order, scored by the maths verifier with
// task.answer_marker), or, with eval_dataset empty, the first eval_n problems of the training
// task's held-out split (scored by its verifier). Immutable; thread-safe.
class EvalSet {
 public:
  // INVALID_ARGUMENT naming learner.eval_dataset and the reason when the file cannot be read
  // or holds no valid line; FAILED_PRECONDITION when eval_dataset is empty and the task has no
  // held-out problems (task.heldout_size = 0). `training_task` must outlive the set.
  static absl::StatusOr<std::unique_ptr<EvalSet>> Create(const v1::RhythmConfig& config,
                                                         const common::tasks::Task& training_task);

  const common::tasks::Task& task() const { return *task_; }  // the verifier
  common::tasks::Problem Problem(uint64_t index) const;
  int64_t size() const { return size_; }
  const std::string& description() const { return description_; }
  // What reading the dataset noticed (malformed lines), for the log.
  const std::vector<std::string>& warnings() const { return task_->warnings(); }

 private:
  EvalSet() = default;
  std::unique_ptr<common::tasks::Task> owned_;  // the eval_dataset task
  const common::tasks::Task* task_ = nullptr;
  bool heldout_ = true;
  int64_t size_ = 0;
  std::string description_;
};

// Evaluates policy versions on its own thread, with its own copy of the weights, so that
// neither training nor the gRPC service waits for it: Offer (on the thread that owns the
// training model, between steps) copies the weights into the evaluator's model and returns at
// once; the evaluator thread runs EvaluateProblems on the EvalSet (learner.eval_n problems,
// learner.eval_k samples) and calls `on_report`. At most one evaluation runs: a version
// offered meanwhile is skipped (Offer returns false), so a slow evaluation costs resolution,
// never memory or a growing backlog.
//
// Costs: one more copy of the weights in memory (inference only: no gradients or optimizer
// state); the copy itself on the offering thread (a memcpy of the parameters); and the
// evaluation's generation, which shares the machine's cores with training (on CPU the step
// that runs beside it is slower).
//
// Thread-safety: Offer from one thread at a time (the training thread); idle() and
// WaitIdle() from any. The destructor cancels a running evaluation between two batches of 32
// prompts (its report is not delivered) and joins the thread.
class BackgroundEvaluator {
 public:
  struct Report {
    int64_t version = 0;
    absl::StatusOr<EvalResult> result;
    double seconds = 0;
  };
  struct Options {
    v1::RhythmConfig config;  // learner.eval_n, eval_k; generation; runtime.seed; task format
    const common::Tokenizer* tokenizer = nullptr;  // must outlive the evaluator
    std::shared_ptr<const EvalSet> problems;
    std::function<void(const Report&)> on_report;  // on the evaluator thread
  };

  // A model shaped like `like` (same config and dtype) for the copies. INVALID_ARGUMENT when
  // an option is missing.
  static absl::StatusOr<std::unique_ptr<BackgroundEvaluator>> Create(
      const common::model::Transformer& like, Options options);
  ~BackgroundEvaluator();

  // Starts evaluating `model`'s current weights as `version` unless an evaluation is running
  // (then false: skipped). INVALID_ARGUMENT (and nothing started) when `model`'s parameters do
  // not match the evaluator's.
  absl::StatusOr<bool> Offer(int64_t version, const common::model::Transformer& model);
  bool idle() const;
  // Blocks until no evaluation is running.
  void WaitIdle() const;

 private:
  BackgroundEvaluator(Options options, std::unique_ptr<common::model::Transformer> model);
  void Loop();
  bool IdleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !pending_; }
  bool WorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || pending_; }

  const Options options_;
  const std::unique_ptr<common::model::Transformer> model_;  // the evaluator thread's copy
  mutable absl::Mutex mu_;
  bool pending_ ABSL_GUARDED_BY(mu_) = false;  // weights copied, evaluation not finished
  int64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> cancel_{false};
  std::thread thread_;
};

}  // namespace rhythm::learner

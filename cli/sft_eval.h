// `rhythm sft`: supervised warm start of a tiny model on a task's reference solutions, so that
// reinforcement learning starts from a model that sometimes succeeds.
// `rhythm eval`: accuracy of a model on the task's held-out problems (never trained on):
// greedy pass@1, and pass@k from k samples at the configured temperature.
#pragma once

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/flags.h"
#include "common/model/transformer.h"
#include "common/tasks/task.h"
#include "common/tokenizer/tokenizer.h"
#include "learner/evaluator.h"
#include "nlohmann/json_fwd.hpp"
#include "rhythm/v1/config.pb.h"

namespace rhythm::cli {

struct SftEvalFlags {
  std::string steps;  // sft: default 300; train: RL steps, default 100
  std::string batch = "32";
  std::string lr = "0.003";
  std::string target;  // sft: stop at this validation accuracy (SftOptions::target_accuracy)
  std::string lr_floor;  // sft: SftOptions::lr_floor
  std::string task;    // = task.kind
  std::string n = "500";
  std::string k;  // eval: default 1; train: default 4
  std::string split = "heldout";  // eval: heldout | validation (the warm start's validation split)
};

// Registers --steps, --batch, --lr (sft), --task, --n, --pass-k (eval; --task for both). --model
// and
// --out come from the generate flags.
void RegisterSftEvalFlags(common::FlagParser& parser, SftEvalFlags& flags);

// The evaluation itself lives in learner/evaluator.h (one implementation for rhythm eval,
// rhythm train and the learner's learner.eval_every); these are the same names here.
using learner::EvalResult;
using learner::EvaluateHeldOut;
using learner::EvaluateProblems;
using learner::Prefix;

// --task T: task.kind = T, where "countdown-steps" is countdown with format steps (the
// reasoning regime). INVALID_ARGUMENT naming the value for anything else.
absl::Status ApplyTaskFlag(const std::string& task, v1::RhythmConfig& config);

// EvalResult <-> JSON ({"problems", "pass1", "passk", "sampled", "greedy_correct": [0/1...],
// "samples_correct": [...]}), side by side. ReadEvalResult: INVALID_ARGUMENT naming the file
// and field for a malformed file, NOT_FOUND if it is missing.
nlohmann::json EvalResultToJson(const EvalResult& r);
absl::StatusOr<EvalResult> EvalResultFromJson(const nlohmann::json& j);
absl::StatusOr<EvalResult> ReadEvalResult(const std::string& path);
absl::Status WriteEvalResult(const EvalResult& r, const std::string& path);

// The warm start's validation problems are training problems from this index on: the warm
// start trains on indices [0, steps * batch), far below it, and RL leases from index 0 too, so
// validation never touches the held-out split.
inline constexpr uint64_t kSftValidationBase = uint64_t{1} << 40;

struct SftOptions {
  int64_t steps = 300;  // most optimiser steps
  int64_t batch = 32;   // problems per step
  // Peak AdamW learning rate: linear warm-up over the first 20 steps, then cosine decay to
  // lr_floor of it at `steps` (a schedule that converges; a constant rate left the final loss
  // at the mercy of the machine's floating-point rounding).
  double lr = 3e-3;
  // The rate the cosine decays to, as a fraction of `lr`; 1 = constant after the warm-up.
  double lr_floor = 0.1;
  // Stop as soon as greedy accuracy on `validation_size` validation problems (see
  // kSftValidationBase) reaches this; 0 = run all `steps`. Checked every `eval_every` steps.
  double target_accuracy = 0;
  int64_t eval_every = 200;
  int64_t validation_size = 128;
};

struct SftResult {
  int64_t steps = 0;                // optimiser steps taken
  double loss = 0;                  // smoothed training loss at the end
  double validation_accuracy = -1;  // last validation figure; -1 if never measured
  double seconds = 0;
};

// Supervised warm start; progress lines go to `log`.
absl::StatusOr<SftResult> Sft(const std::string& model_dir, const std::string& out_dir,
                              const SftOptions& options, const v1::RhythmConfig& config,
                              std::ostream& log);

int RunSft(const std::string& model_dir, const std::string& out_dir, const SftEvalFlags& flags,
           v1::RhythmConfig config);
int RunEval(const std::string& model_dir, const SftEvalFlags& flags, v1::RhythmConfig config);

}  // namespace rhythm::cli

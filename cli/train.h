// `rhythm train`: the one-command local cluster.
//
//   resolved config (+ the built-in default where unset: arithmetic, one torch thread per
//   process, 500 held-out problems, 300 steps; see ApplyTrainDefaults)
//   ─ (no --model) rhythm sft on the task's reference solutions ─ held-out eval (--n, --pass-k)
//   ─ rhythm-learner + N rhythm-actor child processes on localhost (posix_spawn), supervised:
//     a crashed actor is restarted, a crashed learner stops the run
//   ─ progress line from the learner's /metrics; each new checkpoint scored on the first 256
//     held-out problems (greedy and sampled pass@1); metrics.csv; Ctrl-C stops everything
//   ─ at the end: eval of the final checkpoint, the Hugging Face export and report.html
// Run directory (--out, default runs/train-<time>): config.yaml, sft/, run/ (the learner's
// checkpoints and rollout log), dump/ (trained batches), final/ (HF export), metrics.csv,
// report.html.
#pragma once

#include <string>

#include "absl/status/statusor.h"

#include "cli/sft_eval.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::cli {

struct TrainFlags {
  std::string actors = "2";
  std::string sft_steps;   // empty: the task's default (TrainSftOptions)
  std::string sft_target;  // empty: the task's default
  std::string curve_n = "256";
  std::string before_eval;
  std::string learner_ranks = "1";  // learner.world_size: data-parallel learner processes
};

void RegisterTrainFlags(common::FlagParser& parser, TrainFlags& flags);

// The built-in default, applied to `config` only where the user set nothing: one torch thread
// per process, groups of 8, lr 5e-5; the short tasks (8 new tokens) take 8 groups and one update
// per batch and shrink W and the FAI band to 3 and [1, 8]; countdown's steps format (the
// reasoning regime) takes 3 numbers, 4 groups, 4 updates per batch, 160 new tokens and the
// paper's W = 10, band [10, 100].
void ApplyTrainDefaults(v1::RhythmConfig& config);

// The warm start `rhythm train` and `rhythm ablate` run, from --sft-steps and --sft-target
// (empty: the task's default), batches of 32 at peak lr 2e-3. The short tasks (arithmetic,
// one-line countdown, jsonl) train at a constant rate until 35% greedy accuracy on their
// validation split, at most 5,000 steps; countdown's steps format decays the rate (cosine, to a
// tenth) over 2,000 steps with no target. INVALID_ARGUMENT naming the flag for a bad value.
absl::StatusOr<SftOptions> TrainSftOptions(const TrainFlags& flags,
                                           const v1::RhythmConfig& config);

// `model_dir` (--model) skips the supervised stage; `strategy` is --strategy (may be empty).
int RunTrain(const TrainFlags& flags, const SftEvalFlags& sft_flags, const std::string& model_dir,
             const std::string& out_dir, const std::string& strategy, v1::RhythmConfig config);

}  // namespace rhythm::cli

// `rhythm ablate`: does attention-guided credit help? Credit strategies x seeds, every run
// reinforcement learning from one shared warm start, so the differences come from RL alone.
//
//   resolved config (+ rhythm train's defaults; task.seed pinned to runtime.seed, so every run
//   shares one task, one held-out split and one warm start)
//   ─ OUT/warm: rhythm sft (or --model DIR), scored once on the held-out split (OUT/warm/eval.json)
//   ─ OUT/runs/<strategy>-seed<i>: one `rhythm train --model OUT/warm --actors 1` child per run,
//     --parallel at once (default: cores / 2, since a run keeps a learner and an actor busy)
//   ─ OUT/ablation.csv (one row per run), OUT/ablation.json (runs and per-strategy summaries),
//     OUT/ablation.html (held-out curves with a band, the final table, the gamma statistics)
//
// Strategies are CreditStrategy short names, plus `coupled_inverted`: coupled credit with
// credit.invert_selection (the bottom q instead of the top q; the paper's Table 5 control).
// Resuming: a run whose directory holds result.json (written last by rhythm train) is kept; any
// other run directory is removed and the run started again, so a killed ablation continues
// where it was with the same command. A run that fails is reported and left out of the
// summaries; the command then exits 1.
//
// Statistics: per strategy, the mean over seeds with a 95% Student-t interval (seeds are the
// replicates; with 3 seeds t = 4.30); against `none`, the paired difference by seed with its
// 95% t interval. Not thread-safe (one call per process).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/sft_eval.h"
#include "cli/train.h"
#include "nlohmann/json_fwd.hpp"
#include "rhythm/v1/config.pb.h"

namespace rhythm::cli {

struct AblateFlags {
  std::string strategies = "none,random,entropy,local_chunk,global_anchor,coupled,coupled_inverted";
  std::string seeds = "3";
  std::string parallel;  // empty: max(1, cores / 2)
};

void RegisterAblateFlags(common::FlagParser& parser, AblateFlags& flags);

// One strategy of the ablation as a config change.
struct AblationArm {
  std::string name;  // "coupled_inverted", "none", ...
  v1::CreditStrategy strategy = v1::CREDIT_STRATEGY_NONE;
  bool invert_selection = false;
};

// "none,coupled_inverted" -> arms; INVALID_ARGUMENT naming an unknown or repeated name.
absl::StatusOr<std::vector<AblationArm>> ParseArms(const std::string& list);

// Mean and two-sided 95% Student-t interval of `values` (half-width 0 for one value).
struct MeanCi {
  double mean = 0, lo = 0, hi = 0;
  int n = 0;
};
MeanCi MeanWithCi(const std::vector<double>& values);

// The per-strategy summaries of ablation.json from its runs (each run: rhythm train's
// result.json plus "arm" and "seed"): accuracy means with intervals, paired differences against
// the arm named "none" (when present), and gamma statistics.
nlohmann::json SummarizeAblation(const std::vector<nlohmann::json>& runs,
                                 const std::vector<AblationArm>& arms);

int RunAblate(const AblateFlags& flags, const TrainFlags& train_flags,
              const SftEvalFlags& sft_flags, const std::string& model_dir,
              const std::string& out_dir, v1::RhythmConfig config);

}  // namespace rhythm::cli

// `rhythm analyze`: is the preplan-and-anchor rhythm in this model? The paper's three
// statistics (docs/method.md §10; arXiv 2510.13554 §4.2, Tables 1, 2 and 10) measured on the
// model's own responses, so a user can check a model before trusting the credit:
//
//   held-out prompts ─ GenerationEngine (taps on, the task's generation settings) ─ responses
//     ─ per response: WAAD, FAI (the engine's summaries), entropy
//         1. entropy at WAAD peaks against every response token
//         2. FAI peaks at or one token after a WAAD peak, against the shuffled baseline
//     ─ one forward over prompt + response capturing every layer: the same statistics per layer
//       third (bottom / middle / top), from SummaryFromMaps over that third's tapped layers
//     ─ perturbation: at the response's top-FAI and bottom-FAI token, force each of the top-k
//       alternatives to the sampled token, continue greedily, and compare with the greedy
//       continuation of the unperturbed prefix (word-set and token-set Jaccard)
//
// Peaks are defined in common/analysis/rhythm_stats.h (a strict local maximum, a plateau's
// first token); every statistic is also reported under the alternative (the top 20% of values).
// Intervals are 95% bootstrap intervals over responses. Writes analysis.json and a
// self-contained analysis.html (the statistics beside the paper's, and a few responses with
// WAAD and FAI drawn over their tokens, peaks marked) to --out.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "cli/generate.h"
#include "cli/sft_eval.h"
#include "common/flags.h"
#include "common/model/transformer.h"
#include "common/tasks/task.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json_fwd.hpp"
#include "rhythm/v1/config.pb.h"

namespace rhythm::cli {

struct AnalyzeFlags {
  std::string alternatives = "3";  // k: alternatives forced at each perturbed position
  std::string examples = "4";      // responses drawn in the page
};

// Registers --alternatives and --examples (--model, --out, --temperature, --tap-layers come
// from the generate flags; --task and --n from the sft/eval flags).
void RegisterAnalyzeFlags(common::FlagParser& parser, AnalyzeFlags& flags);

struct AnalysisOptions {
  int64_t n = 200;           // responses, on held-out problems [0, n)
  int64_t alternatives = 3;  // k
  int64_t examples = 4;
  int bootstrap = 1000;  // resamples per interval
};

// The whole analysis as JSON (see analysis.json's keys in the README). The tap layers of the
// per-third statistics are generation.tap_layers when set, else every layer.
absl::StatusOr<nlohmann::json> Analyze(const common::model::Transformer& model,
                                       const common::Tokenizer& tokenizer,
                                       const common::tasks::Task& task,
                                       const AnalysisOptions& options,
                                       const v1::RhythmConfig& config);

// The self-contained page of an Analyze result.
std::string AnalysisHtml(const nlohmann::json& analysis);

// Exit code 0 on success, 2 for bad arguments, 1 when the analysis fails.
int RunAnalyze(const AnalyzeFlags& flags, const GenerateFlags& generate,
               const SftEvalFlags& sft_eval, v1::RhythmConfig config);

}  // namespace rhythm::cli

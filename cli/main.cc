// rhythm: the command-line tool (one-machine cluster, evaluation, inspection). main.cc only
// reads flags and dispatches to a subcommand.
#include <iostream>

#include "cli/ablate.h"
#include "cli/analyze.h"
#include "cli/generate.h"
#include "cli/selfcheck.h"
#include "cli/sft_eval.h"
#include "cli/shape.h"
#include "cli/train.h"
#include "common/config.h"
#include "common/flags.h"
#include "common/runtime.h"
#include "common/startup.h"

namespace {

constexpr char kCommands[] =
    "  selfcheck   check that LibTorch (threads, BLAS), protobuf, gRPC and Prometheus work\n"
    "              together on this machine; exits non-zero if a check fails\n"
    "  config      print the resolved configuration (defaults + --config + --set) as YAML\n"
    "  shape       token-level credit for a JSONL file of responses:\n"
    "              rhythm shape --input FILE.jsonl [--strategy S] [--q 0.4] [--gamma 1.5]\n"
    "                           [--alpha 0.5] [--k 3] [--seed N] [--output FILE]\n"
    "  generate    sample from a model with attention summaries:\n"
    "              rhythm generate --model DIR (--prompt TEXT [--chat] | --prompt-ids 1,2,3)\n"
    "                [--max-new-tokens N] [--temperature T] [--seed S] [--samples G]\n"
    "                [--tap-layers 1,4,7] [--window 10] [--fai-band 10,100]\n"
    "                [--head-quantile 0.3] [--json] [--reference]\n"
    "  train       the one-command local cluster: warm start, learner + actors, report:\n"
    "              rhythm train [--task arithmetic] [--actors 2] [--strategy coupled]\n"
    "                           [--steps 300] [--out DIR] [--model DIR] [--sft-steps N]\n"
    "                           [--sft-target ACC] [--n 500] [--pass-k 4] [--curve-n 256]\n"
    "  ablate      credit strategies x seeds from one shared warm start, with CIs:\n"
    "              rhythm ablate [--strategies none,...,coupled_inverted] [--seeds 3]\n"
    "                            [--parallel P] [--steps N] [--out DIR] [--model DIR]\n"
    "                            [--sft-steps N] [--sft-target ACC] [--n 500] [--pass-k 4]\n"
    "  analyze     is the preplan-and-anchor rhythm in this model? The paper's statistics on\n"
    "              its own responses (analysis.json, analysis.html in --out):\n"
    "              rhythm analyze --model DIR [--task T] [--n 200] [--alternatives 3]\n"
    "                [--examples 4] [--temperature 0.7] [--tap-layers 1,2] [--out DIR]\n"
    "  sft         supervised warm start on the task's reference solutions:\n"
    "              rhythm sft --out DIR [--model DIR] [--task T] [--steps 300] [--batch 32]\n"
    "                         [--lr 0.003]\n"
    "  eval        held-out accuracy: rhythm eval --model DIR [--task T] [--n 500] [--pass-k 1]\n"
    "  init-model  write a random tiny model with the character tokenizer:\n"
    "              rhythm init-model --out DIR [--set model.tiny.num_layers=4 ...]\n";

int SelfCheck(const rhythm::v1::RhythmConfig& config) {
  using Outcome = rhythm::cli::CheckResult::Outcome;
  int failures = 0;
  for (const auto& r : rhythm::cli::RunSelfCheck(config)) {
    const char* tag = r.outcome == Outcome::kOk     ? "ok  "
                      : r.outcome == Outcome::kWarn ? "WARN"
                                                    : "FAIL";
    if (r.outcome == Outcome::kFail) ++failures;
    std::cout << "selfcheck " << tag << "  " << r.name << ": " << r.detail << "\n";
  }
  std::cout << (failures == 0 ? "selfcheck passed\n" : "selfcheck FAILED\n");
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  rhythm::common::KeepFreedMemoryInTheHeap();
  using namespace rhythm::common;
  CommonFlags flags;
  FlagParser parser("rhythm <command> [--config FILE] [--set KEY=VALUE ...]",
                    "rhythm: reinforcement-learning post-training with attention-structured\n"
                    "credit assignment (preplan-and-anchor, arXiv 2510.13554).");
  parser.AddSection("Commands", kCommands);
  RegisterCommonFlags(parser, flags);
  rhythm::cli::ShapeFlags shape_flags;
  rhythm::cli::RegisterShapeFlags(parser, shape_flags);
  rhythm::cli::GenerateFlags generate_flags;
  rhythm::cli::RegisterGenerateFlags(parser, generate_flags);
  rhythm::cli::SftEvalFlags sft_eval_flags;
  rhythm::cli::RegisterSftEvalFlags(parser, sft_eval_flags);
  sft_eval_flags.n.clear();  // --n's default depends on the command (below)
  rhythm::cli::TrainFlags train_flags;
  rhythm::cli::RegisterTrainFlags(parser, train_flags);
  rhythm::cli::AblateFlags ablate_flags;
  rhythm::cli::RegisterAblateFlags(parser, ablate_flags);
  rhythm::cli::AnalyzeFlags analyze_flags;
  rhythm::cli::RegisterAnalyzeFlags(parser, analyze_flags);
  std::string seed;
  parser.AddString("seed", "N", "= runtime.seed: sampling and the random credit strategy", &seed);
  Startup start = ParseStartup("rhythm", parser, flags, argc, argv, 1, 1);
  if (start.exit) return start.exit_code;
  if (!seed.empty()) {
    if (absl::Status s = ApplyOverride("runtime.seed=" + seed, start.config); !s.ok()) {
      std::cerr << "rhythm: " << s.message() << "\n";
      return 2;
    }
  }
  const std::string command = start.positionals.empty() ? "" : start.positionals[0];
  if (sft_eval_flags.n.empty()) sft_eval_flags.n = command == "analyze" ? "200" : "500";
  if (command == "selfcheck") return SelfCheck(start.config);
  if (command == "shape") return rhythm::cli::RunShape(shape_flags, start.config);
  if (command == "generate") return rhythm::cli::RunGenerate(generate_flags, start.config);
  if (command == "init-model") return rhythm::cli::RunInitModel(generate_flags, start.config);
  if (command == "sft") {
    return rhythm::cli::RunSft(generate_flags.model, generate_flags.out, sft_eval_flags,
                               start.config);
  }
  if (command == "train") {
    return rhythm::cli::RunTrain(train_flags, sft_eval_flags, generate_flags.model,
                                 generate_flags.out, shape_flags.strategy, start.config);
  }
  if (command == "ablate") {
    return rhythm::cli::RunAblate(ablate_flags, train_flags, sft_eval_flags, generate_flags.model,
                                  generate_flags.out, start.config);
  }
  if (command == "analyze") {
    return rhythm::cli::RunAnalyze(analyze_flags, generate_flags, sft_eval_flags, start.config);
  }
  if (command == "eval") {
    return rhythm::cli::RunEval(generate_flags.model, sft_eval_flags, start.config);
  }
  if (command == "config") {
    std::cout << ConfigToYaml(start.config);
    return 0;
  }
  std::cerr << "rhythm: "
            << (command.empty() ? "no command given" : "unknown command '" + command + "'")
            << "; see rhythm --help\n";
  return 2;
}

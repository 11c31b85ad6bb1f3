// `rhythm sft`: supervised warm start of a tiny model on a task's reference solutions, so that
// reinforcement learning starts from a model that sometimes succeeds.
// `rhythm eval`: accuracy of a model on the task's held-out problems (never trained on):
// greedy pass@1, and pass@k from k samples at the configured temperature.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/flags.h"
#include "common/model/transformer.h"
#include "common/tasks/task.h"
#include "common/tokenizer/tokenizer.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::cli {

struct SftEvalFlags {
  std::string steps;  // sft: default 300; train: RL steps, default 100
  std::string batch = "32";
  std::string lr = "0.003";
  std::string task;  // = task.kind
  std::string n = "500";
  std::string k;  // eval: default 1; train: default 4
};

// Registers --steps, --batch, --lr (sft), --task, --n, --pass-k (eval; --task for both). --model and
// --out come from the generate flags.
void RegisterSftEvalFlags(common::FlagParser& parser, SftEvalFlags& flags);

struct EvalResult {
  int64_t problems = 0;
  double pass1 = 0;   // greedy
  double passk = 0;   // at least one of k samples correct (k = 1: same as pass1)
  // Mean accuracy of the k samples (pass@1 at the sampling temperature; k = 1: same as pass1).
  double sampled = 0;
  // Per problem, in held-out order: greedy answer correct; correct samples out of k.
  std::vector<bool> greedy_correct;
  std::vector<int32_t> samples_correct;
};

// The same figures over the first `m` problems of `r` (m <= r.problems); `k` as evaluated.
// Batches of 32 get their own sampling seed, so for m a multiple of 32 this equals evaluating
// n = m directly.
EvalResult Prefix(const EvalResult& r, int64_t m, int64_t k);

// Greedy (and, for k > 1, sampled) generation on held-out problems [0, n) in batches of 32.
absl::StatusOr<EvalResult> EvaluateHeldOut(const common::model::Transformer& model,
                                           const common::Tokenizer& tokenizer,
                                           const common::tasks::Task& task, int64_t n, int64_t k,
                                           const v1::RhythmConfig& config);

// Supervised warm start; progress lines go to `log`.
absl::Status Sft(const std::string& model_dir, const std::string& out_dir, int64_t steps,
                 int64_t batch, double lr, const v1::RhythmConfig& config, std::ostream& log);

int RunSft(const std::string& model_dir, const std::string& out_dir, const SftEvalFlags& flags,
           v1::RhythmConfig config);
int RunEval(const std::string& model_dir, const SftEvalFlags& flags, v1::RhythmConfig config);

}  // namespace rhythm::cli

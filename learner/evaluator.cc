#include "learner/evaluator.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "common/rollout/engine.h"
#include "common/status.h"
#include "common/tasks/prompt_format.h"
#include "common/torch_status.h"

namespace rhythm::learner {

EvalResult Prefix(const EvalResult& r, int64_t m, int64_t k) {
  EvalResult p;
  p.problems = std::min<int64_t>(m, r.problems);
  int64_t pass1 = 0, passk = 0, samples = 0;
  for (int64_t i = 0; i < p.problems; ++i) {
    p.greedy_correct.push_back(r.greedy_correct[i]);
    p.samples_correct.push_back(r.samples_correct[i]);
    pass1 += r.greedy_correct[i];
    passk += k > 1 ? r.samples_correct[i] > 0 : r.greedy_correct[i];
    samples += r.samples_correct[i];
  }
  if (p.problems > 0) {
    p.pass1 = static_cast<double>(pass1) / p.problems;
    p.passk = static_cast<double>(passk) / p.problems;
    p.sampled = static_cast<double>(samples) / (p.problems * k);
  }
  return p;
}

absl::StatusOr<EvalResult> EvaluateHeldOut(const common::model::Transformer& model,
                                           const common::Tokenizer& tokenizer,
                                           const common::tasks::Task& task, int64_t n, int64_t k,
                                           const v1::RhythmConfig& config) {
  n = std::min<int64_t>(n, static_cast<int64_t>(task.heldout_size()));
  return EvaluateProblems(
      model, tokenizer, task, [&](uint64_t i) { return task.HeldOutProblem(i); }, n, k, config);
}

absl::StatusOr<EvalResult> EvaluateProblems(
    const common::model::Transformer& model, const common::Tokenizer& tokenizer,
    const common::tasks::Task& task, const std::function<common::tasks::Problem(uint64_t)>& problem,
    int64_t n, int64_t k, const v1::RhythmConfig& config, const std::function<bool()>& cancelled) {
  RHYTHM_ASSIGN_OR_RETURN(const common::tasks::PromptFormatter format,
                          common::tasks::PromptFormatter::Create(config.task(), tokenizer));
  EvalResult r;
  r.problems = n;
  r.greedy_correct.assign(n, false);
  r.samples_correct.assign(n, 0);
  constexpr int64_t kBatch = 32;
  for (int64_t start = 0; start < n; start += kBatch) {
    if (cancelled && cancelled()) return absl::CancelledError("evaluation cancelled");
    std::vector<std::vector<int32_t>> prompts;
    std::vector<common::tasks::Problem> problems;
    for (int64_t i = start; i < std::min(n, start + kBatch); ++i) {
      problems.push_back(problem(static_cast<uint64_t>(i)));
      auto ids = format.Encode(tokenizer, problems.back().prompt);
      if (!ids.ok()) return ids.status();
      prompts.push_back(*std::move(ids));
    }
    common::rollout::GenerationOptions o =
        common::rollout::GenerationOptionsFromConfig(config.generation());
    o.taps = false;
    o.stop_token_ids = {tokenizer.eos_id()};
    o.pad_id = tokenizer.pad_id();
    o.stop_strings.clear();
    // Calls `on_correct(problem index)` for every correct sample.
    auto score = [&](const common::rollout::GenerationOptions& opts,
                     const std::function<void(int64_t)>& on_correct) -> absl::Status {
      auto samples = common::rollout::GenerationEngine(model).Generate(prompts, opts);
      if (!samples.ok()) return samples.status();
      for (const auto& s : *samples) {
        std::vector<int32_t> body = s.response_ids;
        if (!body.empty() && body.back() == tokenizer.eos_id()) body.pop_back();
        const std::string text = tokenizer.Decode(body).value_or("");
        if (task.Verify(problems[s.prompt_index].answer, text).correct()) {
          on_correct(start + s.prompt_index);
        }
      }
      return absl::OkStatus();
    };
    o.sampling.temperature = 0;
    if (absl::Status s = score(o, [&](int64_t i) { r.greedy_correct[i] = true; }); !s.ok()) {
      return s;
    }
    if (k > 1) {
      common::rollout::GenerationOptions sampled = o;
      sampled.sampling.temperature = config.generation().temperature();
      sampled.samples_per_prompt = k;
      sampled.seed = config.runtime().seed() + static_cast<uint64_t>(start);
      if (absl::Status s = score(sampled, [&](int64_t i) { ++r.samples_correct[i]; }); !s.ok()) {
        return s;
      }
    } else {
      for (int64_t i = start; i < start + static_cast<int64_t>(prompts.size()); ++i) {
        r.samples_correct[i] = r.greedy_correct[i] ? 1 : 0;
      }
    }
  }
  return Prefix(r, n, k);
}

// ---- EvalSet --------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<EvalSet>> EvalSet::Create(const v1::RhythmConfig& config,
                                                         const common::tasks::Task& training) {
  const v1::LearnerConfig& l = config.learner();
  std::unique_ptr<EvalSet> set(new EvalSet());
  if (l.eval_dataset().empty()) {
    if (training.heldout_size() == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "config: learner.eval_every = ", l.eval_every(),
          " with learner.eval_dataset empty evaluates on the task's held-out split, but it has "
          "no problems (task.heldout_size = ",
          config.task().heldout_size(), "): set learner.eval_dataset or task.heldout_size"));
    }
    set->task_ = &training;
    set->size_ = std::min<int64_t>(l.eval_n(), static_cast<int64_t>(training.heldout_size()));
    set->description_ =
        absl::StrCat("the first ", set->size_, " held-out problems of ", training.name());
    return set;
  }
  // Every valid line of the file, in order: nothing held out (heldout_size 0), so training
  // problem i is line i, and line n wraps to line 0 with line 0's id.
  v1::TaskConfig t = config.task();
  t.set_kind(v1::TASK_KIND_JSONL);
  t.set_dataset_path(l.eval_dataset());
  t.set_heldout_size(0);
  absl::StatusOr<std::unique_ptr<common::tasks::Task>> task =
      common::tasks::CreateTask(t, config.runtime().seed());
  if (!task.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config: learner.eval_dataset = '", l.eval_dataset(), "': ", task.status().message()));
  }
  set->owned_ = *std::move(task);
  set->task_ = set->owned_.get();
  set->heldout_ = false;
  const uint64_t first = set->task_->TrainProblem(0).id;
  int64_t n = 1;
  while (n < l.eval_n() && set->task_->TrainProblem(static_cast<uint64_t>(n)).id != first) ++n;
  set->size_ = n;
  set->description_ = absl::StrCat("the first ", n, " problems of ", l.eval_dataset());
  return set;
}

common::tasks::Problem EvalSet::Problem(uint64_t index) const {
  return heldout_ ? task_->HeldOutProblem(index) : task_->TrainProblem(index);
}

// ---- BackgroundEvaluator --------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<BackgroundEvaluator>> BackgroundEvaluator::Create(
    const common::model::Transformer& like, Options options) {
  if (!options.tokenizer || !options.problems || !options.on_report) {
    return absl::InvalidArgumentError(
        "BackgroundEvaluator: tokenizer, problems and on_report are required");
  }
  RHYTHM_ASSIGN_OR_RETURN(
      std::unique_ptr<common::model::Transformer> model,
      common::model::Transformer::RandomInit(like.config(), 0, like.dtype(), like.device()));
  return std::unique_ptr<BackgroundEvaluator>(
      new BackgroundEvaluator(std::move(options), std::move(model)));
}

BackgroundEvaluator::BackgroundEvaluator(Options options,
                                         std::unique_ptr<common::model::Transformer> model)
    : options_(std::move(options)), model_(std::move(model)) {
  thread_ = std::thread([this] { Loop(); });
}

BackgroundEvaluator::~BackgroundEvaluator() {
  cancel_ = true;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

absl::StatusOr<bool> BackgroundEvaluator::Offer(int64_t version,
                                                const common::model::Transformer& model) {
  {
    absl::MutexLock lock(&mu_);
    if (pending_ || stop_) return false;
  }
  // Idle: the evaluator thread does not touch model_ until pending_ is set below.
  const common::model::TensorMap from = model.NamedParameters();
  common::model::TensorMap to = model_->NamedParameters();
  if (from.size() != to.size()) {
    return absl::InvalidArgumentError(absl::StrCat("evaluator: the model has ", from.size(),
                                                   " parameters, the evaluator's ", to.size()));
  }
  for (const auto& [name, t] : to) {
    auto it = from.find(name);
    if (it == from.end() || !it->second.sizes().equals(t.sizes())) {
      return absl::InvalidArgumentError(
          absl::StrCat("evaluator: parameter ", name, " is missing or shaped differently"));
    }
  }
  RHYTHM_RETURN_IF_ERROR(common::TorchCall("evaluator: copying the weights", [&] {
    at::NoGradGuard no_grad;
    for (auto& [name, t] : to) t.copy_(from.at(name));
  }));
  absl::MutexLock lock(&mu_);
  pending_ = true;
  version_ = version;
  return true;
}

bool BackgroundEvaluator::idle() const {
  absl::MutexLock lock(&mu_);
  return !pending_;
}

void BackgroundEvaluator::WaitIdle() const {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(this, &BackgroundEvaluator::IdleLocked));
}

void BackgroundEvaluator::Loop() {
  const v1::LearnerConfig& l = options_.config.learner();
  while (true) {
    int64_t version = 0;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &BackgroundEvaluator::WorkLocked));
      if (stop_) return;
      version = version_;
    }
    const auto start = std::chrono::steady_clock::now();
    Report report;
    report.version = version;
    const EvalSet& set = *options_.problems;
    report.result = EvaluateProblems(
        *model_, *options_.tokenizer, set.task(), [&set](uint64_t i) { return set.Problem(i); },
        set.size(), l.eval_k(), options_.config, [this] { return cancel_.load(); });
    report.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!cancel_.load()) options_.on_report(report);
    absl::MutexLock lock(&mu_);
    pending_ = false;
  }
}

}  // namespace rhythm::learner

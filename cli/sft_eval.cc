#include "cli/sft_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>

#include "ATen/ATen.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/config.h"
#include "common/model/adamw.h"
#include "common/model/hf_checkpoint.h"
#include "common/model/load_model.h"
#include "common/rollout/engine.h"
#include "common/runtime.h"
#include "common/status.h"
#include "common/tasks/prompt_format.h"
#include "nlohmann/json.hpp"

namespace rhythm::cli {
namespace {

int Fail(const std::string& message, int code = 2) {
  std::cerr << "rhythm: " << message << "\n";
  return code;
}

struct Loaded {
  std::unique_ptr<common::model::Transformer> model;
  std::unique_ptr<common::Tokenizer> tokenizer;
  std::unique_ptr<common::tasks::Task> task;
};

// The model (from `dir`, or a fresh tiny one), its tokenizer and the task.
absl::StatusOr<Loaded> Load(const std::string& dir, const v1::RhythmConfig& config) {
  Loaded l;
  auto loaded =
      common::model::LoadModelAndTokenizer(dir, config.model().tiny(), config.runtime().seed());
  if (!loaded.ok()) return loaded.status();
  l.model = std::move(loaded->model);
  l.tokenizer = std::move(loaded->tokenizer);
  auto task = common::tasks::CreateTask(config.task(), config.runtime().seed());
  if (!task.ok()) return task.status();
  l.task = *std::move(task);
  return l;
}

}  // namespace

void RegisterSftEvalFlags(common::FlagParser& parser, SftEvalFlags& f) {
  parser.AddString("steps", "N", "sft: optimiser steps", &f.steps);
  parser.AddString("batch", "B", "sft: problems per step", &f.batch);
  parser.AddString("lr", "LR", "sft: peak AdamW learning rate (cosine decay to --lr-floor of it)", &f.lr);
  parser.AddString("lr-floor", "F",
                   "sft: the fraction of --lr the cosine decays to at --steps; 1 = constant "
                   "(default 0.1)",
                   &f.lr_floor);
  parser.AddString("target", "ACC",
                   "sft: stop once greedy accuracy on 128 validation problems (training "
                   "problems the warm start never sees; never the held-out split) reaches ACC",
                   &f.target);
  parser.AddString("task", "T", "sft, eval: countdown | arithmetic | jsonl (= task.kind)", &f.task);
  parser.AddString("split", "S",
                   "eval: heldout (default) or validation (training-stream problems from index "
                   "2^40, which warm starts and RL runs of this length never reach)",
                   &f.split);
  parser.AddString("n", "N", "eval, train, ablate: held-out problems to score (default 500); analyze: responses (200)", &f.n);
  parser.AddString("pass-k", "K",
                   "eval, train: samples per problem for sampled pass@1 and pass@k (default: "
                   "eval 1, train 4)",
                   &f.k);
}

nlohmann::json EvalResultToJson(const EvalResult& r) {
  std::vector<int> greedy(r.greedy_correct.begin(), r.greedy_correct.end());
  return {{"problems", r.problems},   {"pass1", r.pass1},
          {"passk", r.passk},         {"sampled", r.sampled},
          {"greedy_correct", greedy}, {"samples_correct", r.samples_correct}};
}

absl::StatusOr<EvalResult> EvalResultFromJson(const nlohmann::json& j) {
  EvalResult r;
  try {
    r.problems = j.at("problems").get<int64_t>();
    r.pass1 = j.at("pass1").get<double>();
    r.passk = j.at("passk").get<double>();
    r.sampled = j.at("sampled").get<double>();
    for (int g : j.at("greedy_correct").get<std::vector<int>>()) r.greedy_correct.push_back(g);
    r.samples_correct = j.at("samples_correct").get<std::vector<int32_t>>();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("evaluation: ", e.what()));
  }
  if (r.problems < 0 || static_cast<size_t>(r.problems) != r.greedy_correct.size() ||
      r.greedy_correct.size() != r.samples_correct.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("evaluation: problems = ", r.problems, " but ", r.greedy_correct.size(),
                     " greedy_correct and ", r.samples_correct.size(), " samples_correct entries"));
  }
  return r;
}

absl::StatusOr<EvalResult> ReadEvalResult(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not JSON"));
  absl::StatusOr<EvalResult> r = EvalResultFromJson(j);
  if (!r.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", r.status().message()));
  return r;
}

absl::Status WriteEvalResult(const EvalResult& r, const std::string& path) {
  {
    std::ofstream out(path + ".tmp");
    out << EvalResultToJson(r).dump() << "\n";
    if (!out) return absl::InternalError(absl::StrCat(path, ".tmp: cannot write"));
  }
  if (std::rename((path + ".tmp").c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(path, ": cannot rename into place"));
  }
  return absl::OkStatus();
}

absl::Status ApplyTaskFlag(const std::string& task, v1::RhythmConfig& config) {
  if (task.empty()) return absl::OkStatus();
  if (task == "countdown-steps") {
    RHYTHM_RETURN_IF_ERROR(common::ApplyOverride("task.kind=countdown", config));
    return common::ApplyOverride("task.countdown.format=steps", config);
  }
  return common::ApplyOverride("task.kind=" + task, config);
}

int RunEval(const std::string& model_dir, const SftEvalFlags& f, v1::RhythmConfig config) {
  if (model_dir.empty()) return Fail("eval: --model DIR is required");
  if (absl::Status s = ApplyTaskFlag(f.task, config); !s.ok())
    return Fail(std::string(s.message()));
  int64_t n = 0, k = 0;
  if (!absl::SimpleAtoi(f.n, &n) || n < 1) return Fail("eval: --n '" + f.n + "' must be >= 1");
  const std::string k_flag = f.k.empty() ? "1" : f.k;
  if (!absl::SimpleAtoi(k_flag, &k) || k < 1) {
    return Fail("eval: --pass-k '" + k_flag + "' must be >= 1");
  }
  common::InitRuntime(config.runtime());
  absl::StatusOr<Loaded> l = Load(model_dir, config);
  if (!l.ok()) return Fail(std::string(l.status().message()), 1);
  const auto start = std::chrono::steady_clock::now();
  if (f.split != "heldout" && f.split != "validation") {
    return Fail("eval: --split '" + f.split + "' must be heldout or validation");
  }
  // Validation problems come from the training stream (kSftValidationBase): choose settings on
  // them, and keep the held-out split for the final word.
  absl::StatusOr<EvalResult> r =
      f.split == "validation"
          ? EvaluateProblems(
                *l->model, *l->tokenizer, *l->task,
                [&](uint64_t i) { return l->task->TrainProblem(kSftValidationBase + i); }, n, k,
                config)
          : EvaluateHeldOut(*l->model, *l->tokenizer, *l->task, n, k, config);
  if (!r.ok()) return Fail(std::string(r.status().message()), 1);
  std::cout << absl::StrFormat(
      "rhythm eval: %s %s n=%d pass@1 %.1f%% (greedy)%s (%.1f s)\n", l->task->name(),
      f.split == "validation" ? "validation" : "held-out", r->problems, 100 * r->pass1,
      k > 1 ? absl::StrFormat(", pass@1 %.1f%% and pass@%d %.1f%% (%d samples at temperature %g)",
                              100 * r->sampled, k, 100 * r->passk, k,
                              config.generation().temperature())
            : "",
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
}

int RunSft(const std::string& model_dir, const std::string& out_dir, const SftEvalFlags& f,
           v1::RhythmConfig config) {
  if (out_dir.empty()) return Fail("sft: --out DIR is required");
  if (absl::Status s = ApplyTaskFlag(f.task, config); !s.ok())
    return Fail(std::string(s.message()));
  int64_t steps = 300, batch = 0;
  double lr = 0;
  if (!f.steps.empty() && (!absl::SimpleAtoi(f.steps, &steps) || steps < 1)) {
    return Fail("sft: --steps '" + f.steps + "' must be >= 1");
  }
  if (!absl::SimpleAtoi(f.batch, &batch) || batch < 1) {
    return Fail("sft: --batch '" + f.batch + "' must be >= 1");
  }
  if (!absl::SimpleAtod(f.lr, &lr) || !(lr > 0))
    return Fail("sft: --lr '" + f.lr + "' must be > 0");
  SftOptions o;
  o.steps = steps;
  o.batch = batch;
  o.lr = lr;
  if (!f.target.empty() && (!absl::SimpleAtod(f.target, &o.target_accuracy) ||
                            !(o.target_accuracy >= 0 && o.target_accuracy <= 1))) {
    return Fail("sft: --target '" + f.target + "' must be in [0, 1]");
  }
  if (!f.lr_floor.empty() && (!absl::SimpleAtod(f.lr_floor, &o.lr_floor) ||
                              !(o.lr_floor >= 0 && o.lr_floor <= 1))) {
    return Fail("sft: --lr-floor '" + f.lr_floor + "' must be in [0, 1]");
  }
  common::InitRuntime(config.runtime());
  absl::StatusOr<SftResult> s = Sft(model_dir, out_dir, o, config, std::cout);
  if (!s.ok()) return Fail(std::string(s.status().message()), 1);
  std::cout << "rhythm sft: wrote " << out_dir << "\n";
  return 0;
}

absl::StatusOr<SftResult> Sft(const std::string& model_dir, const std::string& out_dir,
                              const SftOptions& options, const v1::RhythmConfig& config,
                              std::ostream& log) {
  RHYTHM_ASSIGN_OR_RETURN(Loaded l, Load(model_dir, config));
  RHYTHM_ASSIGN_OR_RETURN(const common::tasks::PromptFormatter format,
                          common::tasks::PromptFormatter::Create(config.task(), *l.tokenizer));
  common::model::Transformer& model = *l.model;
  model.SetRequiresGrad(true);
  common::model::AdamW opt(model.NamedParameters(), {});
  const auto start = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  const int64_t steps = std::max<int64_t>(1, options.steps);
  const int64_t batch = std::max<int64_t>(1, options.batch);
  constexpr int64_t kWarmup = 20;
  SftResult result;
  double avg = 0;
  for (int64_t step = 0; step < steps; ++step) {
    // Prompt + reference + EOS; the loss covers the answer only.
    std::vector<std::vector<int64_t>> seqs;
    std::vector<int64_t> answer_start;
    int64_t len = 0;
    for (int64_t i = 0; i < batch; ++i) {
      const auto p = l.task->TrainProblem(static_cast<uint64_t>(step * batch + i));
      auto prompt = format.Encode(*l.tokenizer, p.prompt);
      auto answer = l.tokenizer->Encode(p.reference_solution);
      if (!prompt.ok() || !answer.ok() || prompt->empty()) continue;
      std::vector<int64_t> ids(prompt->begin(), prompt->end());
      answer_start.push_back(static_cast<int64_t>(ids.size()));
      ids.insert(ids.end(), answer->begin(), answer->end());
      ids.push_back(l.tokenizer->eos_id());
      len = std::max<int64_t>(len, ids.size());
      seqs.push_back(std::move(ids));
    }
    const int64_t b = static_cast<int64_t>(seqs.size());
    std::vector<int64_t> ids(b * len, l.tokenizer->pad_id()), targets(b * len, -100);
    std::vector<float> mask(b * len, 0.f);
    for (int64_t i = 0; i < b; ++i) {
      for (size_t t = 0; t < seqs[i].size(); ++t) {
        ids[i * len + t] = seqs[i][t];
        mask[i * len + t] = 1.f;
        // Position t predicts token t+1; only answer tokens are targets.
        if (static_cast<int64_t>(t) + 1 >= answer_start[i] && t + 1 < seqs[i].size()) {
          targets[i * len + t] = seqs[i][t + 1];
        }
      }
    }
    opt.ZeroGrad();
    RHYTHM_ASSIGN_OR_RETURN(
        common::model::ForwardOutput out,
        model.Forward(at::tensor(ids, at::kLong).view({b, len}), at::tensor(mask).view({b, len})));
    const at::Tensor loss =
        at::cross_entropy_loss(out.logits.view({b * len, -1}), at::tensor(targets, at::kLong), {},
                               at::Reduction::Mean, /*ignore_index=*/-100);
    loss.backward();
    const double norm = opt.GradNorm();
    if (norm > 1.0) opt.ScaleGrads(1.0 / norm);
    const double progress = std::clamp(
        static_cast<double>(step - kWarmup) / std::max<int64_t>(1, steps - kWarmup), 0.0, 1.0);
    const double decay =
        options.lr_floor + (1 - options.lr_floor) * 0.5 * (1 + std::cos(M_PI * progress));
    opt.Step(options.lr * std::min(1.0, (step + 1) / static_cast<double>(kWarmup)) * decay);
    avg = step == 0 ? loss.item<double>() : 0.9 * avg + 0.1 * loss.item<double>();
    result.steps = step + 1;
    result.loss = avg;
    const bool last = step + 1 == steps;
    std::string validation;
    if (options.target_accuracy > 0 && ((step + 1) % options.eval_every == 0 || last)) {
      model.SetRequiresGrad(false);
      auto v = EvaluateProblems(
          model, *l.tokenizer, *l.task,
          [&](uint64_t i) { return l.task->TrainProblem(kSftValidationBase + i); },
          options.validation_size, 1, config);
      model.SetRequiresGrad(true);
      if (!v.ok()) return v.status();
      result.validation_accuracy = v->pass1;
      validation = absl::StrFormat(" validation %.1f%% (target %.0f%%)", 100 * v->pass1,
                                   100 * options.target_accuracy);
    }
    if (step == 0 || (step + 1) % 50 == 0 || last || !validation.empty()) {
      log << absl::StrFormat("rhythm sft: step %d/%d loss %.4f%s (%.0f s)\n", step + 1, steps, avg,
                             validation, seconds())
          << std::flush;
    }
    if (options.target_accuracy > 0 && result.validation_accuracy >= options.target_accuracy) {
      log << absl::StrFormat("rhythm sft: validation accuracy reached the target at step %d\n",
                             step + 1);
      break;
    }
  }
  model.SetRequiresGrad(false);
  common::model::ExportOptions eo;
  eo.overwrite = true;
  const common::Tokenizer* tok = l.tokenizer.get();
  eo.write_extra_files = [tok](const std::string& dir) { return tok->Save(dir); };
  RHYTHM_RETURN_IF_ERROR(common::model::ExportHfModel(model, out_dir, eo));
  result.seconds = seconds();
  return result;
}

}  // namespace rhythm::cli

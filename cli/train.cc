#include "cli/train.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "ATen/ATen.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "cli/report_html.h"
#include "common/config.h"
#include "common/credit/token_credit.h"
#include "common/metrics_server.h"
#include "common/model/hf_checkpoint.h"
#include "common/rollout/rollout_jsonl.h"
#include "common/runtime.h"
#include "common/subprocess.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace rhythm::cli {
namespace fs = std::filesystem;
namespace {

volatile std::sig_atomic_t g_interrupted = 0;
void OnInterrupt(int) { g_interrupted = 1; }

int Fail(const std::string& message, int code = 1) {
  std::cerr << "rhythm train: " << message << "\n";
  return code;
}

std::string BinaryDir() {
  const std::string self = common::SelfExecutable();
  return self.empty() ? "." : fs::path(self).parent_path().string();
}

// The built-in default, applied only where the user set nothing: small enough to learn on two
// cores in minutes (measured: see README).
}  // namespace

absl::StatusOr<SftOptions> TrainSftOptions(const TrainFlags& f, const v1::RhythmConfig& c) {
  const bool steps_format = c.task().kind() == v1::TASK_KIND_COUNTDOWN &&
                            c.task().countdown().format() ==
                                v1::CountdownConfig::COUNTDOWN_FORMAT_STEPS;
  SftOptions o;
  o.batch = 32;
  o.lr = 2e-3;
  o.eval_every = 200;
  // The short tasks' validation accuracy rises steeply somewhere between 1,400 and 2,200 steps,
  // at a step that depends on the seed and the machine (measured: a fixed 2,000 steps left 36.6%
  // greedy with seed 1234 and 17.6% with seed 7). Training to a target lands every run just
  // past it; a constant rate leaves a model that RL at 3e-4 improves, where an annealed one
  // collapsed (README, "What the default does").
  o.steps = steps_format ? 2000 : 5000;
  o.target_accuracy = steps_format ? 0 : 0.35;
  o.lr_floor = steps_format ? 0.1 : 1.0;
  if (!f.sft_steps.empty() && (!absl::SimpleAtoi(f.sft_steps, &o.steps) || o.steps < 0)) {
    return absl::InvalidArgumentError("--sft-steps '" + f.sft_steps + "' must be >= 0");
  }
  if (!f.sft_target.empty() &&
      (!absl::SimpleAtod(f.sft_target, &o.target_accuracy) ||
       !(o.target_accuracy >= 0 && o.target_accuracy <= 1))) {
    return absl::InvalidArgumentError("--sft-target '" + f.sft_target + "' must be in [0, 1]");
  }
  return o;
}

void ApplyTrainDefaults(v1::RhythmConfig& c) {
  // One intra-op thread per process: the learner, N actors and this process share the cores,
  // and OpenMP threads that spin-wait on a busy core slow every process down (measured: a
  // training step took 2.5x as long with 2 threads each on 2 cores; a 2-thread sft 20x as long
  // while another job used both cores).
  if (!c.runtime().has_torch_threads()) c.mutable_runtime()->set_torch_threads(1);
  if (!c.task().has_kind()) c.mutable_task()->set_kind(v1::TASK_KIND_ARITHMETIC);
  if (!c.task().has_heldout_size()) c.mutable_task()->set_heldout_size(500);
  auto* t = c.mutable_trainer();
  if (!t->has_group_size()) t->set_group_size(8);
  if (!t->has_micro_batch_size()) t->set_micro_batch_size(32);
  if (!t->has_steps()) t->set_steps(300);
  auto* g = c.mutable_generation();
  auto* cd = c.mutable_task()->mutable_countdown();
  const bool steps = c.task().kind() == v1::TASK_KIND_COUNTDOWN &&
                     cd->format() == v1::CountdownConfig::COUNTDOWN_FORMAT_STEPS;
  if (steps) {
    // The reasoning regime: multi-step traces of 30-150 characters, the paper's W = 10 and
    // FAI band [10, 100] (the proto's defaults).
    if (!cd->has_num_numbers()) cd->set_num_numbers(3);
    // Several optimiser updates per batch (the paper takes 16), so that the ratio leaves 1 and
    // clipping acts (with one update old == new: clip fraction and KL are always 0), at a rate
    // that keeps the policy together: at 3e-4 the batch reward fell 0.34 -> 0.27 in 60 steps
    // and held-out accuracy collapsed; at 5e-5 the batch reward rose 0.38 -> 0.47 in 40 steps.
    if (!t->has_mini_batches()) t->set_mini_batches(4);
    if (!t->has_lr()) t->set_lr(5e-5);
    if (!t->has_batch_groups()) t->set_batch_groups(4);
    if (!g->has_max_new_tokens()) g->set_max_new_tokens(160);
  } else {
    if (!g->has_max_new_tokens()) g->set_max_new_tokens(8);
    // Answers are a few tokens long: a paper-sized FAI band would leave FAI undefined, so the
    // short tasks shrink W and the band (not the paper's method; the steps format needs not).
    if (!g->has_waad_window()) g->set_waad_window(3);
    if (!g->has_fai_band_lo()) g->set_fai_band_lo(1);
    if (!g->has_fai_band_hi()) g->set_fai_band_hi(8);
  }
  // The short tasks: one update per batch at 3e-4, from the constant-rate warm start trained to
  // its validation target (README: +11.7 and +14.5 points of sampled pass@1 with seeds 1234 and
  // 7; from an annealed warm start the same rate collapsed it, 24.8% -> 13.9%).
  if (!t->has_lr()) t->set_lr(3e-4);
  if (!t->has_batch_groups()) t->set_batch_groups(8);
  auto* l = c.mutable_learner();
  if (!l->has_checkpoint_every()) l->set_checkpoint_every(25);
  if (!l->has_queue_capacity()) l->set_queue_capacity(512);
  if (!l->has_credits_per_actor()) l->set_credits_per_actor(64);
  if (!c.actor().has_prompts_per_batch()) c.mutable_actor()->set_prompts_per_batch(4);
  if (!c.actor().has_heartbeat_interval_s()) c.mutable_actor()->set_heartbeat_interval_s(1);
}

namespace {

std::map<std::string, double> Scrape(int port) {
  std::map<std::string, double> out;
  absl::StatusOr<std::string> body = common::ScrapeLocal(port);
  if (!body.ok()) return out;
  std::istringstream in(*body);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    double v = 0;
    if (sp != std::string::npos && absl::SimpleAtod(line.substr(sp + 1), &v)) {
      out[line.substr(0, sp)] = v;
    }
  }
  return out;
}

struct Row {
  int64_t version = 0;
  double seconds = 0, reward = 0, accuracy = 0, loss = 0, clip = 0, kl = 0, entropy = 0,
         tokens_per_second = 0, staleness = 0, preplan = 0, anchor = 0, fai_defined = 0,
         amplified = 0;
  // credit.summary_agreement: the mean agreement of the rollouts trained since the previous
  // row, all staleness buckets pooled (NaN: none observed). Not in metrics.csv.
  double agree_waad = std::nan(""), agree_fai = std::nan(""), agree_jaccard = std::nan("");
};

// The learner's rhythm_learner_summary_agreement histogram and fp16 error-ratio gauge, as
// `rhythm train` accumulates them from its scrapes (credit.summary_agreement).
constexpr const char* kAgreementMeasures[] = {"waad_spearman", "fai_spearman", "selection_jaccard"};
constexpr const char* kStalenessBuckets[] = {"0", "1", "2", "3+"};

std::string AgreementSeries(const char* part, const std::string& measure,
                            const std::string& staleness) {
  return absl::StrCat("rhythm_learner_summary_agreement_", part, "{measure=\"", measure,
                      "\",staleness=\"", staleness, "\"}");
}

std::string ErrorRatioSeries(const std::string& signal, const std::string& staleness) {
  return absl::StrCat("rhythm_learner_summary_fp16_error_ratio{signal=\"", signal,
                      "\",staleness=\"", staleness, "\"}");
}

// Sum and count of one measure over every staleness bucket.
std::pair<double, double> PooledAgreement(std::map<std::string, double>& m,
                                          const std::string& measure) {
  double sum = 0, count = 0;
  for (const char* b : kStalenessBuckets) {
    sum += m[AgreementSeries("sum", measure, b)];
    count += m[AgreementSeries("count", measure, b)];
  }
  return {sum, count};
}

// One held-out measurement of a checkpoint (version 0: the warm-started model) on the first
// held-out problems (Summary::subset of them).
struct HeldOutPoint {
  int64_t version = 0;
  double seconds = 0;
  double greedy = 0;   // greedy pass@1
  double sampled = 0;  // pass@1 of samples at the actors' temperature
};

Series RowSeries(const std::vector<Row>& rows, double Row::*field, const char* label,
                 const char* colour) {
  Series s{label, colour, {}, {}};
  for (const Row& r : rows) s.points.emplace_back(static_cast<double>(r.version), r.*field);
  return s;
}

// RowSeries without the rows where `field` is NaN (undefined).
Series DefinedSeries(const std::vector<Row>& rows, double Row::*field, const char* label,
                     const char* colour) {
  Series s{label, colour, {}, {}};
  for (const Row& r : rows) {
    if (!std::isnan(r.*field)) s.points.emplace_back(static_cast<double>(r.version), r.*field);
  }
  return s;
}

// The mean of the last `window` points at each point: batch rewards are noisy.
Series MovingAverage(const Series& in, size_t window, const char* label, const char* colour) {
  Series s{label, colour, {}, {}};
  double sum = 0;
  for (size_t i = 0; i < in.points.size(); ++i) {
    sum += in.points[i].second;
    if (i >= window) sum -= in.points[i - window].second;
    s.points.emplace_back(in.points[i].first, sum / std::min(i + 1, window));
  }
  return s;
}

// A few trained responses, each token shaded by WAAD (blue) and FAI (orange); preplan tokens
// underlined, anchors boxed.
std::string RenderRollouts(const std::string& dump_dir, const common::Tokenizer& tokenizer,
                           const v1::RhythmConfig& config) {
  std::vector<fs::path> files;
  if (fs::exists(dump_dir)) {
    for (const auto& e : fs::directory_iterator(dump_dir)) files.push_back(e.path());
  }
  if (files.empty()) return "<p>No trained batch was dumped.</p>";
  std::sort(files.begin(), files.end());
  std::ifstream in(files.back());
  std::string html;
  int shown = 0;
  std::map<std::string, int> per_group;  // at most two responses of each prompt
  int64_t number = 0;
  for (std::string line; std::getline(in, line) && shown < 10;) {
    absl::StatusOr<common::rollout::RolloutLine> r =
        common::rollout::ParseRolloutLine(line, ++number);
    if (!r.ok() || r->response_ids.empty()) continue;
    if (++per_group[r->group] > 2) continue;
    ++shown;
    const std::vector<double>& waad = r->waad;
    const std::vector<double>& fai = r->fai;
    const std::vector<double>& entropy = r->entropy;
    const common::credit::TokenCreditOptions o =
        common::credit::TokenCreditOptionsFromConfig(config.credit());
    auto credit = common::credit::ComputeTokenCredit(
        {at::tensor(waad), at::tensor(fai), at::tensor(entropy)}, o);
    std::set<int64_t> preplan, anchor;
    if (credit.ok()) {
      preplan.insert(credit->preplan.begin(), credit->preplan.end());
      anchor.insert(credit->anchor.begin(), credit->anchor.end());
    }
    double wmax = 1e-9, fmax = 1e-9;
    for (double w : waad) wmax = std::max(wmax, w);
    for (double f : fai) {
      if (!std::isnan(f)) fmax = std::max(fmax, f);
    }
    const std::vector<int32_t>& prompt = r->prompt_ids;
    absl::StrAppend(&html, "<div class='rollout'><span class='prompt'>",
                    Escape(tokenizer.Decode(prompt).value_or("")), "</span>");
    const std::vector<int32_t>& ids = r->response_ids;
    for (size_t t = 0; t < ids.size() && t < waad.size(); ++t) {
      const double wa = waad[t] / wmax;
      const double fa = t < fai.size() && !std::isnan(fai[t]) ? fai[t] / fmax : 0;
      absl::StrAppend(
          &html, absl::StrFormat(
                     "<span class='tok%s%s' title='WAAD %.3f FAI %s' style='background:"
                     "linear-gradient(rgba(37,99,235,%.2f),rgba(249,115,22,%.2f))'>%s</span>",
                     preplan.count(t) ? " preplan" : "", anchor.count(t) ? " anchor" : "", waad[t],
                     t < fai.size() && !std::isnan(fai[t]) ? absl::StrCat(fai[t]) : "-", 0.6 * wa,
                     0.6 * fa, Escape(tokenizer.Decode({ids[t]}).value_or("?"))));
    }
    absl::StrAppend(
        &html, absl::StrFormat(" <small>reward %.2f</small></div>", r->reward));
  }
  return html;
}

// Means over the run's steps of the credit statistics the learner exports.
struct RunCreditStats {
  double fai_defined = 0, preplan = 0, anchor = 0, amplified = 0, clip = 0, kl = 0;
};

RunCreditStats MeanCreditStats(const std::vector<Row>& rows) {
  RunCreditStats s;
  for (const Row& r : rows) {
    s.fai_defined += r.fai_defined;
    s.preplan += r.preplan;
    s.anchor += r.anchor;
    s.amplified += r.amplified;
    s.clip += r.clip;
    s.kl += r.kl;
  }
  const double n = std::max<double>(1, static_cast<double>(rows.size()));
  for (double* v : {&s.fai_defined, &s.preplan, &s.anchor, &s.amplified, &s.clip, &s.kl}) *v /= n;
  return s;
}

struct Summary {
  EvalResult before, after;  // the full held-out evaluation (n problems)
  int64_t samples = 1;       // k
  int64_t subset = 0;        // problems in each checkpoint's evaluation
  double seconds = 0;
};

void WriteReport(const std::string& path, const std::vector<Row>& rows,
                 const std::vector<HeldOutPoint>& heldout, const Summary& sum,
                 const std::string& rollouts_html, const v1::RhythmConfig& config) {
  const char* kBlue = "#2563eb";
  const char* kLightBlue = "#93c5fd";
  Series greedy{"greedy pass@1", "#16a34a", {}, {}}, sampled{"sampled pass@1", "#9333ea", {}, {}};
  for (const HeldOutPoint& p : heldout) {
    greedy.points.emplace_back(static_cast<double>(p.version), p.greedy);
    sampled.points.emplace_back(static_cast<double>(p.version), p.sampled);
  }
  std::vector<Series> heldout_series = {greedy};
  if (sum.samples > 1) heldout_series.push_back(sampled);
  const std::string temperature = absl::StrCat(config.generation().temperature());
  std::ofstream out(path);
  out << "<!doctype html><html><head><meta charset='utf-8'><title>rhythm train report</title>"
         "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}figure{display:"
         "inline-block;margin:.5em}figcaption{font-weight:bold}figcaption small{font-weight:"
         "normal;margin-left:.5em}.rollout{font-family:monospace;"
         "margin:.4em 0;font-size:15px}.tok{padding:1px 1px}.preplan{text-decoration:underline"
         " 2px #2563eb}.anchor{outline:1px solid #f97316}.prompt{color:#666}td,th{padding:"
         "2px 10px;text-align:right}th:first-child{text-align:left}</style></head><body>"
      << "<h1>rhythm train</h1><p>Task <b>"
      << common::EnumShortName(v1::TaskKind_descriptor(), config.task().kind())
      << "</b>, credit strategy <b>"
      << common::EnumShortName(v1::CreditStrategy_descriptor(), config.credit().strategy())
      << absl::StrFormat("</b>, %d steps in %.0f s.</p>", rows.empty() ? 0 : rows.back().version,
                         sum.seconds)
      << absl::StrFormat(
             "<table><tr><th></th><th>held-out pass@1 (greedy)</th>%s</tr>"
             "<tr><th>after the supervised warm start</th><td>%.1f%%</td>%s</tr>"
             "<tr><th>after reinforcement learning</th><td><b>%.1f%%</b></td>%s</tr></table>"
             "<p>%d held-out problems that training never sees.</p>",
             sum.samples > 1
                 ? absl::StrFormat("<th>pass@1 (%d samples at temperature %s)</th><th>pass@%d</th>",
                                   sum.samples, temperature, sum.samples)
                 : "",
             100 * sum.before.pass1,
             sum.samples > 1 ? absl::StrFormat("<td>%.1f%%</td><td>%.1f%%</td>",
                                               100 * sum.before.sampled, 100 * sum.before.passk)
                             : "",
             100 * sum.after.pass1,
             sum.samples > 1 ? absl::StrFormat("<td><b>%.1f%%</b></td><td>%.1f%%</td>",
                                               100 * sum.after.sampled, 100 * sum.after.passk)
                             : "",
             sum.after.problems)
      << Chart(absl::StrFormat("held-out accuracy (first %d problems)", sum.subset), heldout_series,
               Scale::kPercent, /*markers=*/true)
      << Chart("reward (batch mean)",
               {RowSeries(rows, &Row::reward, "reward", kLightBlue),
                MovingAverage(RowSeries(rows, &Row::reward, "", ""), 10, "mean of 10", kBlue)})
      << Chart("accuracy (training batch)",
               {RowSeries(rows, &Row::accuracy, "accuracy", kLightBlue),
                MovingAverage(RowSeries(rows, &Row::accuracy, "", ""), 10, "mean of 10", kBlue)},
               Scale::kPercent)
      << Chart("loss", {RowSeries(rows, &Row::loss, "loss", kBlue)})
      << Chart(config.trainer().mini_batches() == 1
                   ? "approx KL <small>(0: one update per batch, so old = new policy)</small>"
                   : "approx KL",
               {RowSeries(rows, &Row::kl, "kl", kBlue)})
      << Chart("clip fraction (tokens whose ratio was clipped)",
               {RowSeries(rows, &Row::clip, "clip fraction", kBlue)}, Scale::kFromZero)
      << Chart("credit: FAI defined, |shaped advantage| on preplan and anchor tokens",
               {RowSeries(rows, &Row::fai_defined, "FAI defined", "#16a34a"),
                RowSeries(rows, &Row::preplan, "preplan credit", kBlue),
                RowSeries(rows, &Row::anchor, "anchor credit", "#f97316")},
               Scale::kPercent)
      << (config.credit().summary_agreement()
              ? Chart("summary agreement, actor vs learner (mean over each step's rollouts; "
                      "1 = identical)",
                      {DefinedSeries(rows, &Row::agree_waad, "WAAD Spearman", kBlue),
                       DefinedSeries(rows, &Row::agree_fai, "FAI Spearman", "#f97316"),
                       DefinedSeries(rows, &Row::agree_jaccard, "selection Jaccard", "#16a34a")})
              : "")
      << Chart("entropy (nats per token)", {RowSeries(rows, &Row::entropy, "entropy", kBlue)})
      << Chart("tokens / s (learner)",
               {RowSeries(rows, &Row::tokens_per_second, "tokens/s", kBlue)}, Scale::kFromZero)
      << "<h2>Rollouts of the last trained batch</h2><p>Blue: WAAD, orange: FAI; underlined: "
         "preplan tokens; boxed: anchors. Hover a token for its values.</p>"
      << rollouts_html << "</body></html>\n";
}

}  // namespace

void RegisterTrainFlags(common::FlagParser& parser, TrainFlags& f) {
  parser.AddString("actors", "N", "train: actor processes", &f.actors);
  parser.AddString("sft-steps", "N",
                   "train, ablate: most supervised warm-start steps (default 5000; countdown "
                   "steps format 2000; --model DIR skips it)",
                   &f.sft_steps);
  parser.AddString("sft-target", "ACC",
                   "train, ablate: the warm start stops once its greedy accuracy on 128 "
                   "validation problems (never the held-out split) reaches ACC; 0 = all steps "
                   "(default 0.35; countdown steps format 0)",
                   &f.sft_target);
  parser.AddString("curve-n", "N",
                   "train: held-out problems each checkpoint is scored on (default 256)",
                   &f.curve_n);
  parser.AddString("before-eval", "FILE",
                   "train: the held-out evaluation of --model already made (eval.json of "
                   "rhythm ablate's warm start); skips evaluating it again",
                   &f.before_eval);
}

int RunTrain(const TrainFlags& f, const SftEvalFlags& sft_flags, const std::string& model_dir,
             const std::string& out_flag, const std::string& strategy, v1::RhythmConfig config) {
  int64_t actors = 0, n = 0, k = 0;
  if (!absl::SimpleAtoi(f.actors, &actors) || actors < 1 || actors > 64) {
    return Fail("--actors '" + f.actors + "' must be in [1, 64]", 2);
  }
  if (!absl::SimpleAtoi(sft_flags.n, &n) || n < 1) {
    return Fail("--n '" + sft_flags.n + "' must be >= 1", 2);
  }
  const std::string k_flag = sft_flags.k.empty() ? "4" : sft_flags.k;
  if (!absl::SimpleAtoi(k_flag, &k) || k < 1 || k > 64) {
    return Fail("--pass-k '" + k_flag + "' must be in [1, 64]", 2);
  }
  int64_t curve_n = 0;
  if (!absl::SimpleAtoi(f.curve_n, &curve_n) || curve_n < 1) {
    return Fail("--curve-n '" + f.curve_n + "' must be >= 1", 2);
  }
  std::vector<std::string> sets;
  if (absl::Status s = ApplyTaskFlag(sft_flags.task, config); !s.ok()) {
    return Fail(std::string(s.message()), 2);
  }
  if (!strategy.empty()) sets.push_back("credit.strategy=" + strategy);
  if (!sft_flags.steps.empty()) sets.push_back("trainer.steps=" + sft_flags.steps);
  for (const std::string& s : sets) {
    if (absl::Status st = common::ApplyOverride(s, config); !st.ok()) {
      return Fail(std::string(st.message()), 2);
    }
  }
  ApplyTrainDefaults(config);
  absl::StatusOr<SftOptions> sft = TrainSftOptions(f, config);
  if (!sft.ok()) return Fail(std::string(sft.status().message()), 2);
  const std::string out = out_flag.empty() ? absl::FormatTime("runs/train-%Y%m%d-%H%M%S",
                                                              absl::Now(), absl::LocalTimeZone())
                                           : out_flag;
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return Fail(out + ": " + ec.message());
  if (fs::exists(out + "/run")) return Fail(out + " already holds a run; choose a new --out", 2);
  common::InitRuntime(config.runtime());
  std::signal(SIGINT, OnInterrupt);
  std::signal(SIGTERM, OnInterrupt);
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };

  // 1. The starting model: the user's, or a supervised warm start of the tiny one.
  std::string start_model = model_dir;
  if (start_model.empty()) {
    start_model = out + "/sft";
    std::cout << "rhythm train: supervised warm start (at most " << sft->steps << " steps"
              << (sft->target_accuracy > 0
                      ? absl::StrFormat(", until %.0f%% validation accuracy",
                                        100 * sft->target_accuracy)
                      : "")
              << ") -> " << start_model << std::endl;
    absl::StatusOr<SftResult> warm = Sft("", start_model, *sft, config, std::cout);
    if (!warm.ok()) return Fail(std::string(warm.status().message()));
  }
  config.mutable_model()->set_path(fs::absolute(start_model).string());
  {
    std::ofstream yaml(out + "/config.yaml");
    yaml << common::ConfigToYaml(config);
  }
  auto tokenizer = common::LoadTokenizer(start_model);
  if (!tokenizer.ok()) return Fail(std::string(tokenizer.status().message()));
  auto task = common::tasks::CreateTask(config.task(), config.runtime().seed());
  if (!task.ok()) return Fail(std::string(task.status().message()));
  n = std::min<int64_t>(n, static_cast<int64_t>((*task)->heldout_size()));
  // Each checkpoint is scored on the first `subset` held-out problems: a multiple of the
  // evaluation batch (32), so the figures of the warm start and of the final model are prefixes
  // of their full evaluations, and small enough to cost a few seconds of one core.
  const int64_t subset = std::min<int64_t>(n, curve_n);
  Summary sum;
  sum.samples = k;
  sum.subset = subset;
  std::vector<HeldOutPoint> heldout;
  auto describe = [&](const EvalResult& r) {
    return k > 1 ? absl::StrFormat("%.1f%% greedy, %.1f%% sampled", 100 * r.pass1, 100 * r.sampled)
                 : absl::StrFormat("%.1f%%", 100 * r.pass1);
  };
  {
    absl::StatusOr<EvalResult> before;
    if (!f.before_eval.empty()) {
      before = ReadEvalResult(f.before_eval);
      if (before.ok() && before->problems < n) {
        before = absl::InvalidArgumentError(absl::StrCat(
            f.before_eval, ": holds ", before->problems, " problems, --n asks for ", n));
      }
      if (before.ok()) before = Prefix(*before, n, k);
    } else {
      auto warm = common::model::LoadHfModel(start_model);
      if (!warm.ok()) return Fail(std::string(warm.status().message()));
      before = EvaluateHeldOut(**warm, **tokenizer, **task, n, k, config);
    }
    if (!before.ok()) return Fail(std::string(before.status().message()));
    sum.before = *before;
    const EvalResult p = Prefix(*before, subset, k);
    heldout.push_back({0, elapsed(), p.pass1, p.sampled});
  }
  std::cout << absl::StrFormat("rhythm train: held-out pass@1 before RL %s (n=%d)\n",
                               describe(sum.before), sum.before.problems)
            << std::flush;

  // 2. The learner and the actors, as child processes.
  const std::string bin = BinaryDir();
  const std::string config_path = out + "/config.yaml";
  common::ChildProcess learner;
  if (!learner.Start({bin + "/rhythm-learner", "--config", config_path, "--set",
                      "learner.run_dir=" + out + "/run", "--set", "learner.address=127.0.0.1:0",
                      "--set", "learner.metrics_address=127.0.0.1:0",
                      // rhythm train decides when to stop: actors first, while the learner can
                      // still ack what they flush.
                      "--set", "trainer.steps=0", "--dump-rollouts", out + "/dump"},
                     out + "/learner.log")) {
    return Fail("cannot start " + bin + "/rhythm-learner");
  }
  std::vector<std::string> first = absl::StrSplit(learner.ReadLine(120), ' ');
  if (first.size() != 6) return Fail("the learner did not start; see " + out + "/learner.log");
  const std::string learner_port = first[3];
  const int metrics_port = std::stoi(first[5]);
  std::vector<std::unique_ptr<common::ChildProcess>> actor_procs(actors);
  auto start_actor = [&](int64_t i) {
    actor_procs[i] = std::make_unique<common::ChildProcess>();
    return actor_procs[i]->Start(
        {bin + "/rhythm-actor", "--config", config_path, "--set",
         "actor.learner_address=127.0.0.1:" + learner_port, "--set",
         absl::StrCat("actor.actor_id=actor-", i), "--set", "actor.metrics_address="},
        absl::StrCat(out, "/actor-", i, ".log"));
  };
  for (int64_t i = 0; i < actors; ++i) {
    if (!start_actor(i)) return Fail("cannot start " + bin + "/rhythm-actor");
  }

  // 3. Supervise, evaluate each new checkpoint, report progress. metrics.csv has one row per
  // observed learner version and one per held-out evaluation (its version is the checkpoint's;
  // the other kind's columns are empty).
  std::ofstream csv(out + "/metrics.csv");
  csv << "version,seconds,reward,accuracy,loss,clip_fraction,approx_kl,entropy,tokens_per_second,"
         "staleness,preplan_credit,anchor_credit,heldout_pass1,heldout_sampled_pass1,"
         "fai_defined,amplified_tokens\n";
  auto write_heldout = [&](const HeldOutPoint& p) {
    csv << absl::StrFormat("%d,%.1f,,,,,,,,,,,%.4f,%.4f,,\n", p.version, p.seconds, p.greedy,
                           p.sampled)
        << std::flush;
  };
  write_heldout(heldout.back());
  std::vector<Row> rows;
  // The agreement histogram's pooled (sum, count) per measure at the previous row, and the
  // last scrape (cumulative over the run) with the largest error ratio seen per series.
  std::map<std::string, std::pair<double, double>> agreement_before;
  std::map<std::string, double> last_scrape, worst_ratio;
  const int64_t target = config.trainer().steps();
  const double rl_start = elapsed();
  const bool tty = isatty(STDOUT_FILENO);
  int restarts = 0;
  bool learner_died = false;
  std::string evaluated_checkpoint;
  // Scores the checkpoint LATEST names, if it is new. A checkpoint the learner replaces while
  // it is read is skipped (the next one is scored).
  auto evaluate_latest = [&]() {
    std::ifstream latest(out + "/run/checkpoints/LATEST");
    std::string name;
    if (!std::getline(latest, name) || name == evaluated_checkpoint) return;
    int64_t version = 0;
    std::vector<std::string> parts = absl::StrSplit(name, '-');
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &version)) return;
    evaluated_checkpoint = name;
    auto model = common::model::LoadHfModel(out + "/run/checkpoints/" + name + "/model");
    if (!model.ok()) return;
    auto r = EvaluateHeldOut(**model, **tokenizer, **task, subset, k, config);
    if (!r.ok()) return;
    heldout.push_back({version, elapsed(), r->pass1, r->sampled});
    write_heldout(heldout.back());
  };
  while (!g_interrupted) {
    absl::SleepFor(absl::Milliseconds(500));
    int status = 0;
    if (waitpid(learner.pid(), &status, WNOHANG) == learner.pid()) {
      learner_died = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
      learner.Detach();
      break;
    }
    for (int64_t i = 0; i < actors; ++i) {
      if (waitpid(actor_procs[i]->pid(), &status, WNOHANG) == actor_procs[i]->pid()) {
        actor_procs[i]->Detach();
        std::cout << "\nrhythm train: actor-" << i << " exited; restarting it" << std::endl;
        ++restarts;
        start_actor(i);
      }
    }
    evaluate_latest();
    std::map<std::string, double> m = Scrape(metrics_port);
    const int64_t version = static_cast<int64_t>(m["rhythm_learner_policy_version"]);
    if (version > (rows.empty() ? 0 : rows.back().version)) {
      Row r;
      r.version = version;
      r.seconds = elapsed();
      r.reward = m["rhythm_learner_reward_mean"];
      r.accuracy = m["rhythm_learner_accuracy_ratio"];
      r.loss = m["rhythm_learner_loss"];
      r.clip = m["rhythm_learner_clip_fraction_ratio"];
      r.kl = m["rhythm_learner_approx_kl"];
      r.entropy = m["rhythm_learner_entropy_nats"];
      r.tokens_per_second = m["rhythm_learner_tokens_per_second"];
      const double samples = m["rhythm_learner_staleness_versions_count"];
      r.staleness = samples > 0 ? m["rhythm_learner_staleness_versions_sum"] / samples : 0;
      r.preplan = m["rhythm_learner_preplan_credit_fraction_ratio"];
      r.anchor = m["rhythm_learner_anchor_credit_fraction_ratio"];
      r.fai_defined = m["rhythm_learner_fai_defined_ratio"];
      r.amplified = m["rhythm_learner_amplified_token_fraction_ratio"];
      if (config.credit().summary_agreement()) {
        double Row::*const fields[] = {&Row::agree_waad, &Row::agree_fai, &Row::agree_jaccard};
        for (int i = 0; i < 3; ++i) {
          const char* measure = kAgreementMeasures[i];
          const std::pair<double, double> now = PooledAgreement(m, measure);
          const std::pair<double, double> was = agreement_before[measure];
          r.*fields[i] = now.second > was.second
                             ? (now.first - was.first) / (now.second - was.second)
                             : std::nan("");
          agreement_before[measure] = now;
        }
        for (const char* signal : {"waad", "fai"}) {
          for (const char* b : kStalenessBuckets) {
            const std::string key = ErrorRatioSeries(signal, b);
            if (auto it = m.find(key); it != m.end() && !std::isnan(it->second)) {
              worst_ratio[key] = std::max(worst_ratio[key], it->second);
            }
          }
        }
        last_scrape = m;
      }
      rows.push_back(r);
      csv << absl::StrFormat(
                 "%d,%.1f,%.4f,%.4f,%.5f,%.4f,%.6f,%.4f,%.1f,%.2f,%.4f,%.4f,,,%.4f,%.4f\n",
                 r.version, r.seconds, r.reward, r.accuracy, r.loss, r.clip, r.kl, r.entropy,
                 r.tokens_per_second, r.staleness, r.preplan, r.anchor, r.fai_defined, r.amplified)
          << std::flush;
      const double per_step = (r.seconds - rl_start) / std::max<int64_t>(1, version);
      const double eta = per_step * std::max<int64_t>(0, target - version);
      const HeldOutPoint& h = heldout.back();
      std::cout << absl::StrFormat(
                       "%sstep %d/%d  version %d  reward %.3f  acc %.3f  held-out %.1f%% (v%d)  "
                       "loss %.4f  kl %.5f  tok/s %.0f  staleness %.2f  ETA %d:%02d%s",
                       tty ? "\r" : "", target > 0 ? std::min(version, target) : version, target,
                       version, r.reward, r.accuracy, 100 * (k > 1 ? h.sampled : h.greedy),
                       h.version, r.loss, r.kl, r.tokens_per_second, r.staleness,
                       static_cast<int>(eta) / 60, static_cast<int>(eta) % 60,
                       tty ? "\033[K" : "\n")
                << std::flush;
      if (target > 0 && version >= target) break;  // trainer.steps = 0: until Ctrl-C
    }
  }
  if (tty) std::cout << "\n";
  // 4. Stop everything cleanly: actors first (they flush), then the learner (final checkpoint).
  for (auto& a : actor_procs) {
    if (a->pid() > 0) kill(a->pid(), SIGTERM);
  }
  for (auto& a : actor_procs) a->Stop(SIGTERM, 30);
  if (learner.pid() > 0) learner.Stop(SIGTERM, 60);
  if (learner_died) return Fail("the learner stopped with an error; see " + out + "/learner.log");
  if (g_interrupted) std::cout << "rhythm train: interrupted; the run can be resumed\n";

  // 5. Final model, evaluation, export and report.
  std::ifstream latest(out + "/run/checkpoints/LATEST");
  std::string name;
  std::getline(latest, name);
  const std::string final_model = out + "/run/checkpoints/" + name + "/model";
  auto trained = common::model::LoadHfModel(final_model);
  if (!trained.ok()) return Fail(std::string(trained.status().message()));
  common::model::ExportOptions eo;
  eo.overwrite = true;
  eo.tokenizer_source_dir = final_model;
  if (absl::Status s = common::model::ExportHfModel(**trained, out + "/final", eo); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  auto after = EvaluateHeldOut(**trained, **tokenizer, **task, n, k, config);
  if (!after.ok()) return Fail(std::string(after.status().message()));
  sum.after = *after;
  {
    int64_t version = rows.empty() ? 0 : rows.back().version;
    std::vector<std::string> parts = absl::StrSplit(name, '-');
    if (parts.size() == 3) absl::SimpleAtoi(parts[1], &version);
    const EvalResult p = Prefix(*after, subset, k);
    if (heldout.back().version == version) heldout.pop_back();
    heldout.push_back({version, elapsed(), p.pass1, p.sampled});
    write_heldout(heldout.back());
  }
  sum.seconds = elapsed();
  const RunCreditStats credit = MeanCreditStats(rows);
  // Per staleness bucket, over the run: rollouts compared, the mean of each measure, and the
  // largest fp16 error ratio of any observed step (scraped every 0.5 s, so a step the scrapes
  // missed is not in the maximum; the means are exact).
  nlohmann::json agreement_json = nlohmann::json::object();
  std::string agreement_text;
  if (config.credit().summary_agreement()) {
    for (const char* b : kStalenessBuckets) {
      nlohmann::json e;
      const double n = last_scrape[AgreementSeries("count", "selection_jaccard", b)];
      e["rollouts"] = n;
      e["head_split_differs"] = last_scrape[absl::StrCat(
          "rhythm_learner_summary_head_split_differs_total{staleness=\"", b, "\"}")];
      for (const char* measure : kAgreementMeasures) {
        const double c = last_scrape[AgreementSeries("count", measure, b)];
        e[measure] = c > 0 ? nlohmann::json(last_scrape[AgreementSeries("sum", measure, b)] / c)
                           : nlohmann::json(nullptr);
      }
      for (const char* signal : {"waad", "fai"}) {
        auto it = worst_ratio.find(ErrorRatioSeries(signal, b));
        e[absl::StrCat(signal, "_fp16_error_ratio_max")] =
            it == worst_ratio.end() ? nlohmann::json(nullptr) : nlohmann::json(it->second);
      }
      if (n > 0) {
        absl::StrAppend(
            &agreement_text,
            absl::StrFormat("rhythm train: summary agreement, staleness %s: %.0f "
                            "rollouts, WAAD Spearman %s, FAI Spearman %s, selection "
                            "Jaccard %s, fp16 error ratio WAAD %s FAI %s, head split "
                            "differs in %s\n",
                            b, n, e["waad_spearman"].dump(), e["fai_spearman"].dump(),
                            e["selection_jaccard"].dump(), e["waad_fp16_error_ratio_max"].dump(),
                            e["fai_fp16_error_ratio_max"].dump(), e["head_split_differs"].dump()));
      }
      agreement_json[b] = e;
    }
  }
  WriteReport(out + "/report.html", rows, heldout, sum,
              RenderRollouts(out + "/dump", **tokenizer, config), config);
  const int64_t reached = rows.empty() ? 0 : rows.back().version;
  if (!g_interrupted && (target == 0 || reached >= target)) {
    nlohmann::json j;
    j["strategy"] =
        common::EnumShortName(v1::CreditStrategy_descriptor(), config.credit().strategy());
    j["invert_selection"] = config.credit().invert_selection();
    j["seed"] = config.runtime().seed();
    j["version"] = rows.empty() ? 0 : rows.back().version;
    j["seconds"] = sum.seconds;
    j["rl_seconds"] = sum.seconds - rl_start;
    j["before"] = EvalResultToJson(sum.before);
    j["after"] = EvalResultToJson(sum.after);
    j["samples"] = k;
    j["fai_defined"] = credit.fai_defined;
    j["preplan_credit"] = credit.preplan;
    j["anchor_credit"] = credit.anchor;
    j["amplified_tokens"] = credit.amplified;
    j["clip_fraction"] = credit.clip;
    j["approx_kl"] = credit.kl;
    nlohmann::json curve = nlohmann::json::array();
    for (const HeldOutPoint& p : heldout) {
      curve.push_back({{"version", p.version}, {"greedy", p.greedy}, {"sampled", p.sampled}});
    }
    j["curve"] = curve;
    if (config.credit().summary_agreement()) j["summary_agreement"] = agreement_json;
    j["curve_problems"] = subset;
    // Written last, atomically: its presence marks a finished run (rhythm ablate resumes on it).
    std::ofstream(out + "/result.json.tmp") << j.dump(1) << "\n";
    fs::rename(out + "/result.json.tmp", out + "/result.json", ec);
  }
  std::cout << absl::StrFormat(
      "rhythm train: held-out pass@1 %s -> %s (n=%d) in %.0f s; %d actor restarts\n"
      "rhythm train: credit (mean over steps): FAI defined on %.1f%% of response tokens, "
      "%.1f%% of |shaped advantage| on preplan and %.1f%% on anchor tokens, %.1f%% of tokens "
      "amplified; clip fraction %.3f, approx KL %.5f\n"
      "rhythm train: %s/final (Hugging Face model), %s/report.html, %s/metrics.csv\n",
      describe(sum.before), describe(sum.after), sum.after.problems, sum.seconds, restarts,
      100 * credit.fai_defined, 100 * credit.preplan, 100 * credit.anchor, 100 * credit.amplified,
      credit.clip, credit.kl, out, out, out);
  std::cout << agreement_text;
  return 0;
}

}  // namespace rhythm::cli

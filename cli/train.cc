#include "cli/train.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "cli/train_report.h"
#include "common/config.h"
#include "common/model/hf_checkpoint.h"
#include "common/runtime.h"
#include "common/status.h"
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
  const bool steps_format =
      c.task().kind() == v1::TASK_KIND_COUNTDOWN &&
      c.task().countdown().format() == v1::CountdownConfig::COUNTDOWN_FORMAT_STEPS;
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
  if (!f.sft_target.empty() && (!absl::SimpleAtod(f.sft_target, &o.target_accuracy) ||
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

void RegisterTrainFlags(common::FlagParser& parser, TrainFlags& f) {
  parser.AddString("actors", "N", "train: actor processes", &f.actors);
  parser.AddString("learner-ranks", "N",
                   "train: data-parallel learner processes (learner.world_size; rank 0 serves "
                   "the actors, every rank trains its share of each batch; default 1)",
                   &f.learner_ranks);
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

namespace {

// What the flags and the config ask for, checked.
struct TrainPlan {
  int64_t actors = 0, n = 0, k = 0, curve_n = 0, learner_ranks = 1;
  std::string out;
  SftOptions sft;
};

// Parses the flags, applies --task, --strategy, --steps and the built-in default to `config`,
// and creates --out. INVALID_ARGUMENT names the flag or key; ALREADY_EXISTS for an --out that
// holds a run.
absl::StatusOr<TrainPlan> Plan(const TrainFlags& f, const SftEvalFlags& sft_flags,
                               const std::string& out_flag, const std::string& strategy,
                               v1::RhythmConfig& config) {
  TrainPlan plan;
  if (!absl::SimpleAtoi(f.actors, &plan.actors) || plan.actors < 1 || plan.actors > 64) {
    return absl::InvalidArgumentError("--actors '" + f.actors + "' must be in [1, 64]");
  }
  if (!absl::SimpleAtoi(f.learner_ranks, &plan.learner_ranks) || plan.learner_ranks < 1 ||
      plan.learner_ranks > 64) {
    return absl::InvalidArgumentError("--learner-ranks '" + f.learner_ranks +
                                      "' must be in [1, 64]");
  }
  if (!absl::SimpleAtoi(sft_flags.n, &plan.n) || plan.n < 1) {
    return absl::InvalidArgumentError("--n '" + sft_flags.n + "' must be >= 1");
  }
  const std::string k_flag = sft_flags.k.empty() ? "4" : sft_flags.k;
  if (!absl::SimpleAtoi(k_flag, &plan.k) || plan.k < 1 || plan.k > 64) {
    return absl::InvalidArgumentError("--pass-k '" + k_flag + "' must be in [1, 64]");
  }
  if (!absl::SimpleAtoi(f.curve_n, &plan.curve_n) || plan.curve_n < 1) {
    return absl::InvalidArgumentError("--curve-n '" + f.curve_n + "' must be >= 1");
  }
  RHYTHM_RETURN_IF_ERROR(ApplyTaskFlag(sft_flags.task, config));
  std::vector<std::string> sets;
  if (!strategy.empty()) sets.push_back("credit.strategy=" + strategy);
  if (!sft_flags.steps.empty()) sets.push_back("trainer.steps=" + sft_flags.steps);
  for (const std::string& s : sets) RHYTHM_RETURN_IF_ERROR(common::ApplyOverride(s, config));
  ApplyTrainDefaults(config);
  RHYTHM_ASSIGN_OR_RETURN(plan.sft, TrainSftOptions(f, config));
  plan.out = out_flag.empty()
                 ? absl::FormatTime("runs/train-%Y%m%d-%H%M%S", absl::Now(), absl::LocalTimeZone())
                 : out_flag;
  std::error_code ec;
  fs::create_directories(plan.out, ec);
  if (ec) return absl::InternalError(plan.out + ": " + ec.message());
  if (fs::exists(plan.out + "/run")) {
    return absl::AlreadyExistsError(plan.out + " already holds a run; choose a new --out");
  }
  return plan;
}

// 1. The starting model: --model, or a supervised warm start of the tiny one in out/sft.
absl::StatusOr<std::string> StartingModel(const TrainPlan& plan, const std::string& model_dir,
                                          const v1::RhythmConfig& config) {
  if (!model_dir.empty()) return model_dir;
  const std::string dir = plan.out + "/sft";
  std::cout << "rhythm train: supervised warm start (at most " << plan.sft.steps << " steps"
            << (plan.sft.target_accuracy > 0 ? absl::StrFormat(", until %.0f%% validation accuracy",
                                                               100 * plan.sft.target_accuracy)
                                             : "")
            << ") -> " << dir << std::endl;
  RHYTHM_RETURN_IF_ERROR(Sft("", dir, plan.sft, config, std::cout).status());
  return dir;
}

// The held-out figures of a model, as the progress line and the summary print them.
std::string Describe(const EvalResult& r, int64_t k) {
  return k > 1 ? absl::StrFormat("%.1f%% greedy, %.1f%% sampled", 100 * r.pass1, 100 * r.sampled)
               : absl::StrFormat("%.1f%%", 100 * r.pass1);
}

// The learner and the actors as child processes on localhost: a crashed actor is restarted, a
// crashed learner (any of its ranks: rank 0 then stops) ends the run. With `learner_ranks` > 1
// ranks 1 .. N-1 start first (learner-rank-<i>.log) and meet rank 0 through the store it
// announces in out/run; they exit when rank 0 does.
class LocalCluster {
 public:
  absl::Status Start(const std::string& out, int64_t actors, int64_t learner_ranks = 1) {
    out_ = out;
    bin_ = BinaryDir();
    config_path_ = out + "/config.yaml";
    auto learner_args = [&](int64_t rank) {
      return std::vector<std::string>{
          bin_ + "/rhythm-learner", "--config", config_path_, "--set",
          "learner.run_dir=" + out + "/run", "--set", "learner.address=127.0.0.1:0", "--set",
          rank == 0 ? "learner.metrics_address=127.0.0.1:0" : "learner.metrics_address=",
          // rhythm train decides when to stop: actors first, while the learner
          // can still ack what they flush.
          "--set", "trainer.steps=0", "--set",
          absl::StrCat("learner.world_size=", learner_ranks), "--set",
          absl::StrCat("learner.rank=", rank)};
    };
    for (int64_t r = 1; r < learner_ranks; ++r) {
      ranks_.push_back(std::make_unique<common::ChildProcess>());
      if (!ranks_.back()->Start(learner_args(r), absl::StrCat(out, "/learner-rank-", r, ".log"))) {
        return absl::InternalError("cannot start " + bin_ + "/rhythm-learner");
      }
    }
    std::vector<std::string> args0 = learner_args(0);
    args0.insert(args0.end(), {"--dump-rollouts", out + "/dump"});
    if (!learner_.Start(args0, out + "/learner.log")) {
      return absl::InternalError("cannot start " + bin_ + "/rhythm-learner");
    }
    std::vector<std::string> first = absl::StrSplit(learner_.ReadLine(120), ' ');
    if (first.size() != 6) {
      return absl::InternalError("the learner did not start; see " + out + "/learner.log");
    }
    learner_port_ = first[3];
    metrics_port_ = std::stoi(first[5]);
    actors_.resize(actors);
    for (int64_t i = 0; i < actors; ++i) {
      if (!StartActor(i)) return absl::InternalError("cannot start " + bin_ + "/rhythm-actor");
    }
    return absl::OkStatus();
  }

  int metrics_port() const { return metrics_port_; }
  int restarts() const { return restarts_; }

  // False once the learner has exited (`failed`: with an error). Restarts actors that exited.
  bool Poll(bool& failed) {
    int status = 0;
    if (waitpid(learner_.pid(), &status, WNOHANG) == learner_.pid()) {
      failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
      learner_.Detach();
      return false;
    }
    for (size_t i = 0; i < actors_.size(); ++i) {
      if (waitpid(actors_[i]->pid(), &status, WNOHANG) == actors_[i]->pid()) {
        actors_[i]->Detach();
        std::cout << "\nrhythm train: actor-" << i << " exited; restarting it" << std::endl;
        ++restarts_;
        StartActor(static_cast<int64_t>(i));
      }
    }
    return true;
  }

  // Actors first (they flush), then the learner (its final checkpoint).
  void Stop() {
    for (auto& a : actors_) {
      if (a->pid() > 0) kill(a->pid(), SIGTERM);
    }
    for (auto& a : actors_) a->Stop(SIGTERM, 30);
    if (learner_.pid() > 0) learner_.Stop(SIGTERM, 60);
    // Rank 0 stopped them after its final checkpoint (or they saw it die).
    for (auto& r : ranks_) r->Stop(SIGTERM, 30);
  }

 private:
  bool StartActor(int64_t i) {
    actors_[i] = std::make_unique<common::ChildProcess>();
    return actors_[i]->Start(
        {bin_ + "/rhythm-actor", "--config", config_path_, "--set",
         "actor.learner_address=127.0.0.1:" + learner_port_, "--set",
         absl::StrCat("actor.actor_id=actor-", i), "--set", "actor.metrics_address="},
        absl::StrCat(out_, "/actor-", i, ".log"));
  }

  std::string out_, bin_, config_path_, learner_port_;
  int metrics_port_ = 0, restarts_ = 0;
  common::ChildProcess learner_;
  std::vector<std::unique_ptr<common::ChildProcess>> ranks_;  // learner ranks 1 .. N-1
  std::vector<std::unique_ptr<common::ChildProcess>> actors_;
};

// What the stages of one run share: the plan, the task and tokenizer, and the record.
struct Run {
  TrainPlan plan;
  const common::Tokenizer* tokenizer = nullptr;
  const common::tasks::Task* task = nullptr;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  TrainSummary sum;
  std::vector<HeldOutPoint> heldout;
  std::vector<TrainRow> rows;
  AgreementRecord agreement;
  std::ofstream csv;

  double Elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  void AddHeldOut(const HeldOutPoint& p) {
    heldout.push_back(p);
    csv << CsvLine(p) << std::flush;
  }
};

// 2. The starting model's held-out figures (--before-eval: read, not measured).
absl::Status EvaluateBefore(Run& run, const std::string& start_model, const TrainFlags& f,
                            const v1::RhythmConfig& config) {
  const int64_t n = run.plan.n, k = run.plan.k;
  absl::StatusOr<EvalResult> before;
  if (!f.before_eval.empty()) {
    before = ReadEvalResult(f.before_eval);
    if (before.ok() && before->problems < n) {
      before = absl::InvalidArgumentError(
          absl::StrCat(f.before_eval, ": holds ", before->problems, " problems, --n asks for ", n));
    }
    if (before.ok()) before = Prefix(*before, n, k);
  } else {
    RHYTHM_ASSIGN_OR_RETURN(auto warm, common::model::LoadHfModel(start_model));
    before = EvaluateHeldOut(*warm, *run.tokenizer, *run.task, n, k, config);
  }
  RHYTHM_RETURN_IF_ERROR(before.status());
  run.sum.before = *before;
  const EvalResult p = Prefix(*before, run.sum.subset, k);
  run.AddHeldOut({0, run.Elapsed(), p.pass1, p.sampled});
  std::cout << absl::StrFormat("rhythm train: held-out pass@1 before RL %s (n=%d)\n",
                               Describe(run.sum.before, k), run.sum.before.problems)
            << std::flush;
  return absl::OkStatus();
}

// 3. Supervises the cluster until trainer.steps versions (0: until Ctrl-C): one row per new
// learner version, each new checkpoint scored on the held-out subset, the progress line.
// Returns false if the learner stopped with an error.
bool Supervise(Run& run, LocalCluster& cluster, const v1::RhythmConfig& config) {
  const std::string out = run.plan.out;
  const int64_t target = config.trainer().steps(), k = run.plan.k;
  const double rl_start = run.Elapsed();
  const bool tty = isatty(STDOUT_FILENO);
  std::string evaluated_checkpoint;
  // Scores the checkpoint LATEST names, if it is new. A checkpoint the learner replaces while it
  // is read is skipped (the next one is scored).
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
    auto r = EvaluateHeldOut(**model, *run.tokenizer, *run.task, run.sum.subset, k, config);
    if (!r.ok()) return;
    run.AddHeldOut({version, run.Elapsed(), r->pass1, r->sampled});
  };
  bool failed = false;
  while (!g_interrupted) {
    absl::SleepFor(absl::Milliseconds(500));
    if (!cluster.Poll(failed)) break;
    evaluate_latest();
    const std::map<std::string, double> m = ScrapeLearner(cluster.metrics_port());
    auto it = m.find("rhythm_learner_policy_version");
    const int64_t version = it == m.end() ? 0 : static_cast<int64_t>(it->second);
    if (version <= (run.rows.empty() ? 0 : run.rows.back().version)) continue;
    TrainRow r = RowFromScrape(m, version, run.Elapsed());
    if (config.credit().summary_agreement()) run.agreement.Observe(m, r);
    run.rows.push_back(r);
    run.csv << CsvLine(r) << std::flush;
    const double per_step = (r.seconds - rl_start) / std::max<int64_t>(1, version);
    const double eta = per_step * std::max<int64_t>(0, target - version);
    const HeldOutPoint& h = run.heldout.back();
    std::cout << absl::StrFormat(
                     "%sstep %d/%d  version %d  reward %.3f  acc %.3f  held-out %.1f%% (v%d)  "
                     "loss %.4f  kl %.5f  tok/s %.0f  staleness %.2f  ETA %d:%02d%s",
                     tty ? "\r" : "", target > 0 ? std::min(version, target) : version, target,
                     version, r.reward, r.accuracy, 100 * (k > 1 ? h.sampled : h.greedy), h.version,
                     r.loss, r.kl, r.tokens_per_second, r.staleness, static_cast<int>(eta) / 60,
                     static_cast<int>(eta) % 60, tty ? "\033[K" : "\n")
              << std::flush;
    if (target > 0 && version >= target) break;
  }
  if (tty) std::cout << "\n";
  return !failed;
}

// 4. The final checkpoint: exported to out/final, evaluated on all n problems, then the report,
// result.json (a finished run only) and the closing lines.
absl::Status Finish(Run& run, double rl_start, int restarts, const v1::RhythmConfig& config) {
  const std::string out = run.plan.out;
  const int64_t k = run.plan.k;
  std::ifstream latest(out + "/run/checkpoints/LATEST");
  std::string name;
  std::getline(latest, name);
  const std::string final_model = out + "/run/checkpoints/" + name + "/model";
  RHYTHM_ASSIGN_OR_RETURN(auto trained, common::model::LoadHfModel(final_model));
  common::model::ExportOptions eo;
  eo.overwrite = true;
  eo.tokenizer_source_dir = final_model;
  RHYTHM_RETURN_IF_ERROR(common::model::ExportHfModel(*trained, out + "/final", eo));
  RHYTHM_ASSIGN_OR_RETURN(
      run.sum.after, EvaluateHeldOut(*trained, *run.tokenizer, *run.task, run.plan.n, k, config));
  {
    int64_t version = run.rows.empty() ? 0 : run.rows.back().version;
    std::vector<std::string> parts = absl::StrSplit(name, '-');
    if (parts.size() == 3) absl::SimpleAtoi(parts[1], &version);
    const EvalResult p = Prefix(run.sum.after, run.sum.subset, k);
    if (run.heldout.back().version == version) run.heldout.pop_back();
    run.AddHeldOut({version, run.Elapsed(), p.pass1, p.sampled});
  }
  run.sum.seconds = run.Elapsed();
  const RunCreditStats credit = MeanCreditStats(run.rows);
  WriteTrainReport(out + "/report.html", run.rows, run.heldout, run.sum,
                   RenderRollouts(out + "/dump", *run.tokenizer, config), config);
  const int64_t target = config.trainer().steps();
  const int64_t reached = run.rows.empty() ? 0 : run.rows.back().version;
  if (!g_interrupted && (target == 0 || reached >= target)) {
    nlohmann::json j;
    j["strategy"] =
        common::EnumShortName(v1::CreditStrategy_descriptor(), config.credit().strategy());
    j["invert_selection"] = config.credit().invert_selection();
    j["seed"] = config.runtime().seed();
    j["version"] = reached;
    j["seconds"] = run.sum.seconds;
    j["rl_seconds"] = run.sum.seconds - rl_start;
    j["before"] = EvalResultToJson(run.sum.before);
    j["after"] = EvalResultToJson(run.sum.after);
    j["samples"] = k;
    j["fai_defined"] = credit.fai_defined;
    j["preplan_credit"] = credit.preplan;
    j["anchor_credit"] = credit.anchor;
    j["amplified_tokens"] = credit.amplified;
    j["clip_fraction"] = credit.clip;
    j["approx_kl"] = credit.kl;
    nlohmann::json curve = nlohmann::json::array();
    for (const HeldOutPoint& p : run.heldout) {
      curve.push_back({{"version", p.version}, {"greedy", p.greedy}, {"sampled", p.sampled}});
    }
    j["curve"] = curve;
    if (config.credit().summary_agreement()) j["summary_agreement"] = run.agreement.Json();
    j["curve_problems"] = run.sum.subset;
    // Written last, atomically: its presence marks a finished run (rhythm ablate resumes on it).
    std::ofstream(out + "/result.json.tmp") << j.dump(1) << "\n";
    std::error_code ec;
    fs::rename(out + "/result.json.tmp", out + "/result.json", ec);
  }
  std::cout << absl::StrFormat(
      "rhythm train: held-out pass@1 %s -> %s (n=%d) in %.0f s; %d actor restarts\n"
      "rhythm train: credit (mean over steps): FAI defined on %.1f%% of response tokens, "
      "%.1f%% of |shaped advantage| on preplan and %.1f%% on anchor tokens, %.1f%% of tokens "
      "amplified; clip fraction %.3f, approx KL %.5f\n"
      "rhythm train: %s/final (Hugging Face model), %s/report.html, %s/metrics.csv\n",
      Describe(run.sum.before, k), Describe(run.sum.after, k), run.sum.after.problems,
      run.sum.seconds, restarts, 100 * credit.fai_defined, 100 * credit.preplan,
      100 * credit.anchor, 100 * credit.amplified, credit.clip, credit.kl, out, out, out);
  if (config.credit().summary_agreement()) std::cout << run.agreement.Text();
  return absl::OkStatus();
}

// Exit code 2 for what the user asked wrongly, 1 for what failed.
int FailWith(const absl::Status& s) {
  const bool usage = s.code() == absl::StatusCode::kInvalidArgument ||
                     s.code() == absl::StatusCode::kAlreadyExists;
  return Fail(std::string(s.message()), usage ? 2 : 1);
}

}  // namespace

int RunTrain(const TrainFlags& f, const SftEvalFlags& sft_flags, const std::string& model_dir,
             const std::string& out_flag, const std::string& strategy, v1::RhythmConfig config) {
  Run run;
  {
    absl::StatusOr<TrainPlan> plan = Plan(f, sft_flags, out_flag, strategy, config);
    if (!plan.ok()) return FailWith(plan.status());
    run.plan = *std::move(plan);
  }
  const std::string out = run.plan.out;
  common::InitRuntime(config.runtime());
  std::signal(SIGINT, OnInterrupt);
  std::signal(SIGTERM, OnInterrupt);
  run.t0 = std::chrono::steady_clock::now();

  // 1. The starting model.
  absl::StatusOr<std::string> start_model = StartingModel(run.plan, model_dir, config);
  if (!start_model.ok()) return Fail(std::string(start_model.status().message()));
  config.mutable_model()->set_path(fs::absolute(*start_model).string());
  std::ofstream(out + "/config.yaml") << common::ConfigToYaml(config);
  auto tokenizer = common::LoadTokenizer(*start_model);
  if (!tokenizer.ok()) return Fail(std::string(tokenizer.status().message()));
  auto task = common::tasks::CreateTask(config.task(), config.runtime().seed());
  if (!task.ok()) return Fail(std::string(task.status().message()));
  run.tokenizer = tokenizer->get();
  run.task = task->get();
  run.plan.n = std::min<int64_t>(run.plan.n, static_cast<int64_t>((*task)->heldout_size()));
  // Each checkpoint is scored on the first `subset` held-out problems: a multiple of the
  // evaluation batch (32), so the figures of the warm start and of the final model are prefixes
  // of their full evaluations, and small enough to cost a few seconds of one core.
  run.sum.samples = run.plan.k;
  run.sum.subset = std::min<int64_t>(run.plan.n, run.plan.curve_n);
  run.csv.open(out + "/metrics.csv");
  run.csv << CsvHeader();

  // 2. Its held-out figures.
  if (absl::Status s = EvaluateBefore(run, *start_model, f, config); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  // 3. The learner and the actors, supervised until the last step.
  LocalCluster cluster;
  if (absl::Status s = cluster.Start(out, run.plan.actors, run.plan.learner_ranks); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  const double rl_start = run.Elapsed();
  const bool learner_ok = Supervise(run, cluster, config);
  cluster.Stop();
  if (!learner_ok) return Fail("the learner stopped with an error; see " + out + "/learner.log");
  if (g_interrupted) std::cout << "rhythm train: interrupted; the run can be resumed\n";
  // 4. The final model, its evaluation, the report.
  if (absl::Status s = Finish(run, rl_start, cluster.restarts(), config); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  return 0;
}

}  // namespace rhythm::cli

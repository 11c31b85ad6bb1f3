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
#include "common/config.h"
#include "common/credit/token_credit.h"
#include "common/metrics_server.h"
#include "common/model/hf_checkpoint.h"
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
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  return fs::path(std::string(buf, static_cast<size_t>(n))).parent_path().string();
}

// The built-in default, applied only where the user set nothing: small enough to learn on two
// cores in minutes (measured: see README).
void ApplyTrainDefaults(v1::RhythmConfig& c) {
  if (!c.task().has_kind()) c.mutable_task()->set_kind(v1::TASK_KIND_ARITHMETIC);
  auto* t = c.mutable_trainer();
  if (!t->has_lr()) t->set_lr(5e-5);
  if (!t->has_group_size()) t->set_group_size(8);
  if (!t->has_batch_groups()) t->set_batch_groups(8);
  if (!t->has_micro_batch_size()) t->set_micro_batch_size(32);
  if (!t->has_steps()) t->set_steps(200);
  auto* g = c.mutable_generation();
  if (!g->has_max_new_tokens()) g->set_max_new_tokens(8);
  // Responses are a few tokens long: a paper-sized FAI band would leave FAI undefined.
  if (!g->has_waad_window()) g->set_waad_window(3);
  if (!g->has_fai_band_lo()) g->set_fai_band_lo(1);
  if (!g->has_fai_band_hi()) g->set_fai_band_hi(8);
  auto* l = c.mutable_learner();
  if (!l->has_checkpoint_every()) l->set_checkpoint_every(25);
  if (!l->has_queue_capacity()) l->set_queue_capacity(512);
  if (!l->has_credits_per_actor()) l->set_credits_per_actor(64);
  if (!c.actor().has_prompts_per_batch()) c.mutable_actor()->set_prompts_per_batch(4);
  if (!c.actor().has_heartbeat_interval_s()) c.mutable_actor()->set_heartbeat_interval_s(1);
}

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
         tokens_per_second = 0, staleness = 0, preplan = 0, anchor = 0;
};

std::string Chart(const std::vector<Row>& rows, const char* title, double Row::*field) {
  if (rows.empty()) return "";
  double lo = 1e300, hi = -1e300;
  for (const Row& r : rows) {
    lo = std::min(lo, r.*field);
    hi = std::max(hi, r.*field);
  }
  if (hi - lo < 1e-12) hi = lo + 1;
  const double w = 420, h = 160;
  std::string points;
  for (size_t i = 0; i < rows.size(); ++i) {
    const double x = rows.size() > 1 ? w * i / (rows.size() - 1) : 0;
    const double y = h - h * (rows[i].*field - lo) / (hi - lo);
    absl::StrAppend(&points, absl::StrFormat("%.1f,%.1f ", x + 40, y + 10));
  }
  return absl::StrFormat(
      "<figure><figcaption>%s</figcaption><svg width='480' height='190'>"
      "<rect x='40' y='10' width='%g' height='%g' fill='#fafafa' stroke='#ccc'/>"
      "<text x='2' y='18' font-size='10'>%.3g</text><text x='2' y='%g' font-size='10'>%.3g</text>"
      "<polyline fill='none' stroke='#2563eb' stroke-width='2' points='%s'/>"
      "<text x='40' y='185' font-size='10'>version %d</text>"
      "<text x='%g' y='185' font-size='10' text-anchor='end'>version %d</text></svg></figure>",
      title, w, h, hi, h + 10, lo, points, rows.front().version, w + 40, rows.back().version);
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '\n') out += "&#8629;";
    else out += c;
  }
  return out;
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
  for (std::string line; std::getline(in, line) && shown < 8; ++shown) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("response_ids") || j["waad"].empty()) continue;
    std::vector<double> waad = j["waad"].get<std::vector<double>>(), fai;
    for (const auto& f : j["fai"]) fai.push_back(f.is_null() ? std::nan("") : f.get<double>());
    std::vector<double> entropy = j["entropy"].get<std::vector<double>>();
    common::credit::TokenCreditOptions o;
    o.quantile = config.credit().quantile();
    o.lookback = config.credit().lookback();
    auto credit = common::credit::ComputeTokenCredit(
        {at::tensor(waad), at::tensor(fai), at::tensor(entropy)}, o);
    std::set<int64_t> preplan, anchor;
    if (credit.ok()) {
      preplan.insert(credit->preplan.begin(), credit->preplan.end());
      anchor.insert(credit->anchor.begin(), credit->anchor.end());
    }
    double wmax = 1e-9, fmax = 1e-9;
    for (double w : waad) wmax = std::max(wmax, w);
    for (double f : fai) if (!std::isnan(f)) fmax = std::max(fmax, f);
    const std::vector<int32_t> prompt = j["prompt_ids"].get<std::vector<int32_t>>();
    absl::StrAppend(&html, "<div class='rollout'><span class='prompt'>",
                    Escape(tokenizer.Decode(prompt).value_or("")), "</span>");
    const std::vector<int32_t> ids = j["response_ids"].get<std::vector<int32_t>>();
    for (size_t t = 0; t < ids.size() && t < waad.size(); ++t) {
      const double wa = waad[t] / wmax;
      const double fa = t < fai.size() && !std::isnan(fai[t]) ? fai[t] / fmax : 0;
      absl::StrAppend(
          &html,
          absl::StrFormat("<span class='tok%s%s' title='WAAD %.3f FAI %s' style='background:"
                          "linear-gradient(rgba(37,99,235,%.2f),rgba(249,115,22,%.2f))'>%s</span>",
                          preplan.count(t) ? " preplan" : "", anchor.count(t) ? " anchor" : "",
                          waad[t], t < fai.size() && !std::isnan(fai[t]) ? absl::StrCat(fai[t]) : "-",
                          0.6 * wa, 0.6 * fa, Escape(tokenizer.Decode({ids[t]}).value_or("?"))));
    }
    absl::StrAppend(&html, absl::StrFormat(" <small>reward %.2f</small></div>",
                                           j["reward"].get<double>()));
  }
  return html;
}

void WriteReport(const std::string& path, const std::vector<Row>& rows, double before,
                 double after, const std::string& rollouts_html, const v1::RhythmConfig& config) {
  std::ofstream out(path);
  out << "<!doctype html><html><head><meta charset='utf-8'><title>rhythm train report</title>"
         "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}figure{display:"
         "inline-block;margin:.5em}figcaption{font-weight:bold}.rollout{font-family:monospace;"
         "margin:.4em 0;font-size:15px}.tok{padding:1px 1px}.preplan{text-decoration:underline"
         " 2px #2563eb}.anchor{outline:1px solid #f97316}.prompt{color:#666}</style></head><body>"
      << "<h1>rhythm train</h1><p>Task <b>"
      << common::EnumShortName(v1::TaskKind_descriptor(), config.task().kind())
      << "</b>, credit strategy <b>"
      << common::EnumShortName(v1::CreditStrategy_descriptor(), config.credit().strategy())
      << absl::StrFormat("</b>. Held-out accuracy (greedy pass@1): <b>%.1f%%</b> after the "
                         "supervised warm start, <b>%.1f%%</b> after reinforcement learning.</p>",
                         100 * before, 100 * after)
      << Chart(rows, "reward (batch mean)", &Row::reward)
      << Chart(rows, "accuracy (training batch)", &Row::accuracy)
      << Chart(rows, "loss", &Row::loss) << Chart(rows, "approx KL", &Row::kl)
      << Chart(rows, "tokens / s (learner)", &Row::tokens_per_second)
      << "<h2>Rollouts of the last trained batch</h2><p>Blue: WAAD, orange: FAI; underlined: "
         "preplan tokens; boxed: anchors. Hover a token for its values.</p>"
      << rollouts_html << "</body></html>\n";
}

}  // namespace

void RegisterTrainFlags(common::FlagParser& parser, TrainFlags& f) {
  parser.AddString("actors", "N", "train: actor processes", &f.actors);
  parser.AddString("sft-steps", "N", "train: supervised warm-start steps (0 = none)",
                   &f.sft_steps);
}

int RunTrain(const TrainFlags& f, const SftEvalFlags& sft_flags, const std::string& model_dir,
             const std::string& out_flag, const std::string& strategy, v1::RhythmConfig config) {
  int64_t actors = 0, sft_steps = 0;
  if (!absl::SimpleAtoi(f.actors, &actors) || actors < 1 || actors > 64) {
    return Fail("--actors '" + f.actors + "' must be in [1, 64]", 2);
  }
  if (!absl::SimpleAtoi(f.sft_steps, &sft_steps) || sft_steps < 0) {
    return Fail("--sft-steps '" + f.sft_steps + "' must be >= 0", 2);
  }
  std::vector<std::string> sets;
  if (!sft_flags.task.empty()) sets.push_back("task.kind=" + sft_flags.task);
  if (!strategy.empty()) sets.push_back("credit.strategy=" + strategy);
  if (!sft_flags.steps.empty()) sets.push_back("trainer.steps=" + sft_flags.steps);
  for (const std::string& s : sets) {
    if (absl::Status st = common::ApplyOverride(s, config); !st.ok()) {
      return Fail(std::string(st.message()), 2);
    }
  }
  ApplyTrainDefaults(config);
  const std::string out = out_flag.empty()
                              ? absl::FormatTime("runs/train-%Y%m%d-%H%M%S", absl::Now(),
                                                 absl::LocalTimeZone())
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
    std::cout << "rhythm train: supervised warm start (" << sft_steps << " steps) -> "
              << start_model << std::endl;
    if (absl::Status s = Sft("", start_model, std::max<int64_t>(sft_steps, 1), 32, 2e-3, config,
                             std::cout);
        !s.ok()) {
      return Fail(std::string(s.message()));
    }
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
  auto warm = common::model::LoadHfModel(start_model);
  if (!warm.ok()) return Fail(std::string(warm.status().message()));
  auto before = EvaluateHeldOut(**warm, **tokenizer, **task, 200, 1, config);
  if (!before.ok()) return Fail(std::string(before.status().message()));
  std::cout << absl::StrFormat("rhythm train: held-out accuracy before RL %.1f%% (n=%d)\n",
                               100 * before->pass1, before->problems)
            << std::flush;

  // 2. The learner and the actors, as child processes.
  const std::string bin = BinaryDir();
  const std::string config_path = out + "/config.yaml";
  common::ChildProcess learner;
  if (!learner.Start({bin + "/rhythm-learner", "--config", config_path, "--set",
                      "learner.run_dir=" + out + "/run", "--set",
                      "learner.address=127.0.0.1:0", "--set",
                      "learner.metrics_address=127.0.0.1:0",
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

  // 3. Supervise and report progress.
  std::ofstream csv(out + "/metrics.csv");
  csv << "version,seconds,reward,accuracy,loss,clip_fraction,approx_kl,entropy,tokens_per_second,"
         "staleness,preplan_credit,anchor_credit\n";
  std::vector<Row> rows;
  const int64_t target = config.trainer().steps();
  const double rl_start = elapsed();
  const bool tty = isatty(STDOUT_FILENO);
  int restarts = 0;
  bool learner_died = false;
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
      const double n = m["rhythm_learner_staleness_versions_count"];
      r.staleness = n > 0 ? m["rhythm_learner_staleness_versions_sum"] / n : 0;
      r.preplan = m["rhythm_learner_preplan_credit_fraction_ratio"];
      r.anchor = m["rhythm_learner_anchor_credit_fraction_ratio"];
      rows.push_back(r);
      csv << absl::StrFormat("%d,%.1f,%.4f,%.4f,%.5f,%.4f,%.6f,%.4f,%.1f,%.2f,%.4f,%.4f\n",
                             r.version, r.seconds, r.reward, r.accuracy, r.loss, r.clip, r.kl,
                             r.entropy, r.tokens_per_second, r.staleness, r.preplan, r.anchor)
          << std::flush;
      const double per_step = (r.seconds - rl_start) / std::max<int64_t>(1, version);
      const double eta = per_step * std::max<int64_t>(0, target - version);
      std::cout << absl::StrFormat(
                       "%sstep %d/%d  version %d  reward %.3f  acc %.3f  loss %.4f  kl %.5f  "
                       "tok/s %.0f  staleness %.2f  ETA %d:%02d%s",
                       tty ? "\r" : "", version, target, version, r.reward, r.accuracy, r.loss,
                       r.kl, r.tokens_per_second, r.staleness, static_cast<int>(eta) / 60,
                       static_cast<int>(eta) % 60, tty ? "" : "\n")
                << std::flush;
      if (version >= target) break;
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
  auto after = EvaluateHeldOut(**trained, **tokenizer, **task, 200, 1, config);
  if (!after.ok()) return Fail(std::string(after.status().message()));
  WriteReport(out + "/report.html", rows, before->pass1, after->pass1,
              RenderRollouts(out + "/dump", **tokenizer, config), config);
  std::cout << absl::StrFormat(
      "rhythm train: held-out accuracy %.1f%% -> %.1f%% (n=%d) in %.0f s; %d actor restarts\n"
      "rhythm train: %s/final (Hugging Face model), %s/report.html, %s/metrics.csv\n",
      100 * before->pass1, 100 * after->pass1, after->problems, elapsed(), restarts, out, out,
      out);
  return 0;
}

}  // namespace rhythm::cli

#include "cli/ablate.h"

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
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "cli/report_html.h"
#include "common/config.h"
#include "common/model/hf_checkpoint.h"
#include "common/runtime.h"
#include "common/subprocess.h"
#include "common/tasks/task.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace rhythm::cli {
namespace fs = std::filesystem;
namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnStop(int) { g_stop = 1; }

int Fail(const std::string& message, int code = 1) {
  std::cerr << "rhythm ablate: " << message << "\n";
  return code;
}

// Two-sided 95% quantile of Student's t with `df` degrees of freedom.
double T975(int df) {
  static const double kTable[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306,
                                  2.262,  2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
                                  2.110,  2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
                                  2.060,  2.056, 2.052, 2.048, 2.045, 2.042};
  if (df < 1) return 0;
  if (df <= 30) return kTable[df - 1];
  return df <= 40 ? 2.021 : df <= 60 ? 2.000 : df <= 120 ? 1.980 : 1.960;
}

nlohmann::json CiJson(const MeanCi& c) {
  return {{"mean", c.mean}, {"lo", c.lo}, {"hi", c.hi}, {"n", c.n}};
}

std::string Pct(const MeanCi& c) {
  if (c.n == 0) return "-";
  if (c.n == 1) return absl::StrFormat("%.1f%%", 100 * c.mean);
  return absl::StrFormat("%.1f%% <small>[%.1f, %.1f]</small>", 100 * c.mean, 100 * c.lo,
                         100 * c.hi);
}

std::string SignedPct(const MeanCi& c) {
  if (c.n == 0) return "-";
  if (c.n == 1) return absl::StrFormat("%+.1f", 100 * c.mean);
  return absl::StrFormat("%+.1f <small>[%+.1f, %+.1f]</small>", 100 * c.mean, 100 * c.lo,
                         100 * c.hi);
}

MeanCi FromJson(const nlohmann::json& j) {
  MeanCi c;
  c.mean = j.value("mean", 0.0);
  c.lo = j.value("lo", 0.0);
  c.hi = j.value("hi", 0.0);
  c.n = j.value("n", 0);
  return c;
}

const char* kColours[] = {"#6b7280", "#a16207", "#0891b2", "#2563eb",
                          "#f97316", "#16a34a", "#dc2626", "#9333ea"};

void WriteHtml(const std::string& path, const nlohmann::json& ablation) {
  const nlohmann::json& summary = ablation["strategies"];
  std::vector<Series> curves;
  int colour = 0;
  for (const nlohmann::json& s : summary) {
    Series line{s["arm"].get<std::string>(), kColours[colour++ % 8], {}, {}};
    for (const nlohmann::json& p : s["curve"]) {
      line.points.emplace_back(p["version"].get<double>(), p["mean"].get<double>());
      line.band.push_back(
          {p["version"].get<double>(), p["min"].get<double>(), p["max"].get<double>()});
    }
    curves.push_back(std::move(line));
  }
  const nlohmann::json& cfg = ablation["config"];
  std::ofstream out(path);
  out << PageHead("rhythm ablate") << "<h1>Does attention-guided credit help?</h1>"
      << absl::StrFormat(
             "<p>Task <b>%s</b>; %d seeds per strategy; %d RL steps per run from one shared "
             "warm start (held-out greedy pass@1 %.1f%%, sampled pass@1 %.1f%%); final scores on "
             "%d held-out problems that no stage trained on, %d samples each at temperature %s. "
             "Brackets: 95%% Student-t intervals over seeds. Paired differences are against "
             "<b>none</b> (plain GRPO), seed by seed.</p>",
             Escape(cfg.value("task", "")), cfg.value("seeds", 0), cfg.value("steps", 0),
             100 * ablation["warm"].value("pass1", 0.0),
             100 * ablation["warm"].value("sampled", 0.0), cfg.value("problems", 0),
             cfg.value("samples", 0), Escape(cfg.value("temperature", "")))
      << Chart(absl::StrFormat("held-out sampled pass@1 (first %d problems; line: mean over "
                               "seeds, band: min to max)",
                               cfg.value("curve_problems", 0)),
               curves, Scale::kPercent, /*markers=*/true)
      << "<h2>Final held-out accuracy</h2><table id='final'><tr><th>strategy</th><th>runs</th>"
         "<th>sampled pass@1</th><th>vs none (points)</th><th>greedy pass@1</th>"
         "<th>vs none (points)</th></tr>";
  for (const nlohmann::json& s : summary) {
    out << "<tr><td>" << Escape(s["arm"].get<std::string>()) << "</td><td>" << s["runs"].get<int>()
        << "</td><td>" << Pct(FromJson(s["sampled"])) << "</td><td>"
        << SignedPct(FromJson(s["sampled_vs_none"])) << "</td><td>" << Pct(FromJson(s["greedy"]))
        << "</td><td>" << SignedPct(FromJson(s["greedy_vs_none"])) << "</td></tr>";
  }
  out << "</table><h2>Where the credit landed (mean over steps and seeds)</h2>"
         "<table id='gamma'><tr><th>strategy</th><th>FAI defined</th><th>tokens amplified "
         "(&gamma; &gt; 1)</th><th>|shaped advantage| on preplan tokens</th><th>on anchor "
         "tokens</th><th>clip fraction</th><th>approx KL</th></tr>";
  for (const nlohmann::json& s : summary) {
    const nlohmann::json& g = s["gamma"];
    out << absl::StrFormat(
        "<tr><td>%s</td><td>%.1f%%</td><td>%.1f%%</td><td>%.1f%%</td><td>%.1f%%</td>"
        "<td>%.3f</td><td>%.5f</td></tr>",
        Escape(s["arm"].get<std::string>()), 100 * g.value("fai_defined", 0.0),
        100 * g.value("amplified_tokens", 0.0), 100 * g.value("preplan_credit", 0.0),
        100 * g.value("anchor_credit", 0.0), g.value("clip_fraction", 0.0),
        g.value("approx_kl", 0.0));
  }
  out << "</table><p>Per-run figures: ablation.csv; every run's own report: runs/&lt;strategy&gt;"
         "-seed&lt;i&gt;/report.html.</p></body></html>\n";
}

void WriteCsv(const std::string& path, const std::vector<nlohmann::json>& runs) {
  std::ofstream out(path);
  out << "strategy,seed,greedy_before,greedy_after,sampled_before,sampled_after,passk_after,"
         "problems,fai_defined,preplan_credit,anchor_credit,amplified_tokens,clip_fraction,"
         "approx_kl,version,rl_seconds\n";
  for (const nlohmann::json& r : runs) {
    out << absl::StrFormat(
        "%s,%d,%.4f,%.4f,%.4f,%.4f,%.4f,%d,%.4f,%.4f,%.4f,%.4f,%.4f,%.6f,%d,%.1f\n",
        r["arm"].get<std::string>(), r["seed"].get<int64_t>(), r["before"]["pass1"].get<double>(),
        r["after"]["pass1"].get<double>(), r["before"]["sampled"].get<double>(),
        r["after"]["sampled"].get<double>(), r["after"]["passk"].get<double>(),
        r["after"]["problems"].get<int64_t>(), r.value("fai_defined", 0.0),
        r.value("preplan_credit", 0.0), r.value("anchor_credit", 0.0),
        r.value("amplified_tokens", 0.0), r.value("clip_fraction", 0.0), r.value("approx_kl", 0.0),
        r.value("version", 0), r.value("rl_seconds", 0.0));
  }
}

// rhythm train's result.json for `arm`, with every field the summaries read.
bool ValidRunResult(const nlohmann::json& j, const AblationArm& arm, int64_t steps, int64_t n,
                    int64_t k) {
  if (!j.is_object()) return false;
  for (const char* key : {"before", "after"}) {
    if (!j.contains(key) || !EvalResultFromJson(j[key]).ok()) return false;
  }
  for (const char* key : {"fai_defined", "preplan_credit", "anchor_credit", "amplified_tokens",
                          "clip_fraction", "approx_kl", "rl_seconds"}) {
    if (!j.contains(key) || !j[key].is_number()) return false;
  }
  if (!j.contains("strategy") || !j["strategy"].is_string() ||
      j["strategy"] != common::EnumShortName(v1::CreditStrategy_descriptor(), arm.strategy) ||
      !j.contains("invert_selection") || j["invert_selection"] != arm.invert_selection) {
    return false;
  }
  if (!j.contains("version") || !j["version"].is_number_integer() ||
      j["version"].get<int64_t>() < steps || !j.contains("samples") || j["samples"] != k ||
      j["after"]["problems"] != n) {
    return false;
  }
  if (!j.contains("curve") || !j["curve"].is_array()) return false;
  for (const nlohmann::json& p : j["curve"]) {
    if (!p.is_object() || !p.contains("version") || !p["version"].is_number() ||
        !p.contains("sampled") || !p["sampled"].is_number()) {
      return false;
    }
  }
  return true;
}

struct Run {
  AblationArm arm;
  int64_t seed = 0;
  std::string dir;
};

}  // namespace

void RegisterAblateFlags(common::FlagParser& parser, AblateFlags& f) {
  parser.AddString("strategies", "LIST",
                   "ablate: comma-separated credit strategies (none, random, entropy, "
                   "local_chunk, global_anchor, coupled, coupled_inverted); default all seven",
                   &f.strategies);
  parser.AddString("seeds", "N", "ablate: seeds per strategy (runtime.seed 1..N)", &f.seeds);
  parser.AddString("parallel", "P", "ablate: runs at once (default: cores / 2)", &f.parallel);
}

absl::StatusOr<std::vector<AblationArm>> ParseArms(const std::string& list) {
  std::vector<AblationArm> arms;
  for (absl::string_view raw : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    const std::string name(absl::StripAsciiWhitespace(raw));
    AblationArm arm;
    arm.name = name;
    std::string base = name;
    if (absl::EndsWith(name, "_inverted")) {
      arm.invert_selection = true;
      base = name.substr(0, name.size() - std::string("_inverted").size());
    }
    bool found = false;
    for (int v = v1::CreditStrategy_MIN + 1; v <= v1::CreditStrategy_MAX; ++v) {
      if (common::EnumShortName(v1::CreditStrategy_descriptor(), v) == base) {
        arm.strategy = static_cast<v1::CreditStrategy>(v);
        found = true;
      }
    }
    if (!found || (arm.invert_selection && (arm.strategy == v1::CREDIT_STRATEGY_NONE ||
                                            arm.strategy == v1::CREDIT_STRATEGY_RANDOM))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--strategies: '", name,
          "' is not a strategy (none, random, entropy, local_chunk, global_anchor, coupled, or "
          "entropy/local_chunk/global_anchor/coupled with _inverted)"));
    }
    for (const AblationArm& a : arms) {
      if (a.name == name) {
        return absl::InvalidArgumentError(absl::StrCat("--strategies: '", name, "' twice"));
      }
    }
    arms.push_back(arm);
  }
  if (arms.empty()) return absl::InvalidArgumentError("--strategies: empty list");
  return arms;
}

MeanCi MeanWithCi(const std::vector<double>& values) {
  MeanCi c;
  c.n = static_cast<int>(values.size());
  if (c.n == 0) return c;
  for (double v : values) c.mean += v;
  c.mean /= c.n;
  double ss = 0;
  for (double v : values) ss += (v - c.mean) * (v - c.mean);
  const double half = c.n > 1 ? T975(c.n - 1) * std::sqrt(ss / (c.n - 1) / c.n) : 0;
  c.lo = c.mean - half;
  c.hi = c.mean + half;
  return c;
}

nlohmann::json SummarizeAblation(const std::vector<nlohmann::json>& runs,
                                 const std::vector<AblationArm>& arms) {
  // metric -> arm -> seed -> value
  auto by_seed = [&](const std::string& arm, const std::string& metric) {
    std::map<int64_t, double> out;
    for (const nlohmann::json& r : runs) {
      if (r["arm"] == arm) out[r["seed"].get<int64_t>()] = r["after"][metric].get<double>();
    }
    return out;
  };
  nlohmann::json summary = nlohmann::json::array();
  for (const AblationArm& arm : arms) {
    nlohmann::json s;
    s["arm"] = arm.name;
    int count = 0;
    for (const nlohmann::json& r : runs) count += r["arm"] == arm.name;
    s["runs"] = count;
    for (const std::string metric : {"pass1", "sampled"}) {
      const std::string key = metric == "pass1" ? "greedy" : "sampled";
      std::vector<double> values, diffs;
      const std::map<int64_t, double> mine = by_seed(arm.name, metric);
      const std::map<int64_t, double> none = by_seed("none", metric);
      for (const auto& [seed, v] : mine) {
        values.push_back(v);
        if (auto it = none.find(seed); it != none.end()) diffs.push_back(v - it->second);
      }
      s[key] = CiJson(MeanWithCi(values));
      s[key + "_vs_none"] = CiJson(MeanWithCi(diffs));
    }
    nlohmann::json gamma;
    for (const char* g : {"fai_defined", "amplified_tokens", "preplan_credit", "anchor_credit",
                          "clip_fraction", "approx_kl"}) {
      double sum = 0;
      for (const nlohmann::json& r : runs) {
        if (r["arm"] == arm.name) sum += r.value(g, 0.0);
      }
      gamma[g] = count > 0 ? sum / count : 0.0;
    }
    s["gamma"] = gamma;
    // Held-out curve: the i-th evaluation of every seed's run (same checkpoint schedule; the
    // final one lands a version or two apart between runs), at their mean version, with the
    // mean, min and max over seeds. Points not every seed has are left out.
    std::vector<std::vector<std::pair<double, double>>> at_point;
    for (const nlohmann::json& r : runs) {
      if (r["arm"] != arm.name) continue;
      const nlohmann::json& c = r["curve"];
      for (size_t i = 0; i < c.size(); ++i) {
        if (at_point.size() <= i) at_point.resize(i + 1);
        at_point[i].emplace_back(c[i]["version"].get<double>(), c[i]["sampled"].get<double>());
      }
    }
    nlohmann::json curve = nlohmann::json::array();
    for (const auto& values : at_point) {
      if (static_cast<int>(values.size()) != count) continue;
      double version = 0, mean = 0, lo = 1e300, hi = -1e300;
      for (const auto& [x, v] : values) {
        version += x;
        mean += v;
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      curve.push_back({{"version", version / values.size()},
                       {"mean", mean / values.size()},
                       {"min", lo},
                       {"max", hi}});
    }
    s["curve"] = curve;
    summary.push_back(s);
  }
  return summary;
}

int RunAblate(const AblateFlags& f, const TrainFlags& train_flags, const SftEvalFlags& sft_flags,
              const std::string& model_dir, const std::string& out_flag, v1::RhythmConfig config) {
  absl::StatusOr<std::vector<AblationArm>> arms = ParseArms(f.strategies);
  if (!arms.ok()) return Fail(std::string(arms.status().message()), 2);
  int64_t seeds = 0, parallel = 0, n = 0, k = 0, curve_n = 0;
  if (!absl::SimpleAtoi(f.seeds, &seeds) || seeds < 1 || seeds > 100) {
    return Fail("--seeds '" + f.seeds + "' must be in [1, 100]", 2);
  }
  const int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  if (f.parallel.empty()) {
    parallel = std::max<int64_t>(1, cores / 2);
  } else if (!absl::SimpleAtoi(f.parallel, &parallel) || parallel < 1 || parallel > 64) {
    return Fail("--parallel '" + f.parallel + "' must be in [1, 64]", 2);
  }
  if (!absl::SimpleAtoi(sft_flags.n, &n) || n < 1) {
    return Fail("--n '" + sft_flags.n + "' must be >= 1", 2);
  }
  const std::string k_flag = sft_flags.k.empty() ? "4" : sft_flags.k;
  if (!absl::SimpleAtoi(k_flag, &k) || k < 1 || k > 64) {
    return Fail("--pass-k '" + k_flag + "' must be in [1, 64]", 2);
  }
  if (!absl::SimpleAtoi(train_flags.curve_n, &curve_n) || curve_n < 1) {
    return Fail("--curve-n '" + train_flags.curve_n + "' must be >= 1", 2);
  }
  if (absl::Status s = ApplyTaskFlag(sft_flags.task, config); !s.ok()) {
    return Fail(std::string(s.message()), 2);
  }
  if (!sft_flags.steps.empty()) {
    if (absl::Status s = common::ApplyOverride("trainer.steps=" + sft_flags.steps, config);
        !s.ok()) {
      return Fail(std::string(s.message()), 2);
    }
  }
  ApplyTrainDefaults(config);
  absl::StatusOr<SftOptions> sft = TrainSftOptions(train_flags, config);
  if (!sft.ok()) return Fail(std::string(sft.status().message()), 2);
  // One task for every run: the seeds below vary the RL randomness only.
  if (config.task().seed() == 0) config.mutable_task()->set_seed(config.runtime().seed());
  const std::string out = out_flag.empty() ? absl::FormatTime("runs/ablate-%Y%m%d-%H%M%S",
                                                              absl::Now(), absl::LocalTimeZone())
                                           : out_flag;
  std::error_code ec;
  fs::create_directories(out + "/runs", ec);
  if (ec) return Fail(out + ": " + ec.message());
  common::InitRuntime(config.runtime());
  std::signal(SIGINT, OnStop);
  std::signal(SIGTERM, OnStop);
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };

  // 1. The shared warm start and its held-out evaluation, once (kept on resume).
  const std::string warm = model_dir.empty() ? out + "/warm" : model_dir;
  const std::string warm_eval = out + "/warm-eval.json";
  if (model_dir.empty() && !fs::exists(warm + "/DONE")) {
    fs::remove_all(warm, ec);
    std::cout << "rhythm ablate: shared warm start -> " << warm << std::endl;
    absl::StatusOr<SftResult> r =
        Sft("", warm, *sft, config, std::cout);
    if (!r.ok()) return Fail(std::string(r.status().message()));
    std::ofstream(warm + "/DONE") << r->steps << " steps\n";
  }
  auto task = common::tasks::CreateTask(config.task(), config.runtime().seed());
  if (!task.ok()) return Fail(std::string(task.status().message()));
  n = std::min<int64_t>(n, static_cast<int64_t>((*task)->heldout_size()));
  // The evaluation is reused only for the same model and the same k.
  const std::string source = absl::StrCat(fs::absolute(warm).string(), " k=", k);
  std::string recorded;
  std::getline(std::ifstream(warm_eval + ".source"), recorded);
  absl::StatusOr<EvalResult> before = ReadEvalResult(warm_eval);
  if (!before.ok() || before->problems < n || recorded != source) {
    auto model = common::model::LoadHfModel(warm);
    if (!model.ok()) return Fail(std::string(model.status().message()));
    auto tokenizer = common::LoadTokenizer(warm);
    if (!tokenizer.ok()) return Fail(std::string(tokenizer.status().message()));
    before = EvaluateHeldOut(**model, **tokenizer, **task, n, k, config);
    if (!before.ok()) return Fail(std::string(before.status().message()));
    if (absl::Status s = WriteEvalResult(*before, warm_eval); !s.ok()) {
      return Fail(std::string(s.message()));
    }
    std::ofstream(warm_eval + ".source") << source << "\n";
  }
  std::cout << absl::StrFormat(
                   "rhythm ablate: warm start held-out pass@1 %.1f%% greedy, %.1f%% sampled "
                   "(n=%d) at %.0f s\n",
                   100 * before->pass1, 100 * before->sampled, before->problems, elapsed())
            << std::flush;
  const std::string config_path = out + "/config.yaml";
  std::ofstream(config_path) << common::ConfigToYaml(config);

  // 2. The runs, `parallel` at a time; finished ones (result.json) are kept.
  std::vector<Run> pending;
  for (int64_t seed = 1; seed <= seeds; ++seed) {
    for (const AblationArm& arm : *arms) {
      pending.push_back({arm, seed, absl::StrCat(out, "/runs/", arm.name, "-seed", seed)});
    }
  }
  const size_t total = pending.size();
  std::vector<nlohmann::json> results;
  std::vector<std::string> failed;
  // A run counts as finished only if its result.json is whole and is this arm's, at this
  // length and evaluation; anything else is rerun.
  auto collect = [&](const Run& run) -> bool {
    std::ifstream in(run.dir + "/result.json");
    nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    if (!ValidRunResult(j, run.arm, config.trainer().steps(), n, k)) return false;
    j["arm"] = run.arm.name;
    j["seed"] = run.seed;
    results.push_back(j);
    return true;
  };
  std::vector<Run> todo;
  for (const Run& run : pending) {
    if (collect(run)) {
      std::cout << "rhythm ablate: kept " << run.dir << " (finished earlier)\n";
    } else {
      todo.push_back(run);
    }
  }
  struct Running {
    Run run;
    std::unique_ptr<common::ChildProcess> child;
    double started = 0;
  };
  std::vector<Running> running;
  size_t next = 0;
  const std::string self = common::SelfExecutable();
  if (self.empty()) return Fail("cannot read /proc/self/exe to start rhythm train");
  while (!g_stop && (next < todo.size() || !running.empty())) {
    while (next < todo.size() && static_cast<int64_t>(running.size()) < parallel) {
      const Run& run = todo[next++];
      fs::remove_all(run.dir, ec);
      fs::create_directories(run.dir, ec);
      std::vector<std::string> argv = {
          self,
          "train",
          "--config",
          config_path,
          "--model",
          fs::absolute(warm).string(),
          "--before-eval",
          warm_eval,
          "--out",
          run.dir,
          "--actors",
          "1",
          "--n",
          absl::StrCat(n),
          "--pass-k",
          absl::StrCat(k),
          "--curve-n",
          absl::StrCat(curve_n),
          "--seed",
          absl::StrCat(run.seed),
          "--set",
          "credit.strategy=" +
              common::EnumShortName(v1::CreditStrategy_descriptor(), run.arm.strategy),
          "--set",
          absl::StrCat("credit.invert_selection=", run.arm.invert_selection ? "true" : "false")};
      Running r{run, std::make_unique<common::ChildProcess>(), elapsed()};
      if (!r.child->Start(argv, run.dir + "/train.err", run.dir + "/train.log")) {
        return Fail("cannot start " + self);
      }
      std::cout << absl::StrFormat("rhythm ablate: started %s seed %d (%d/%d)\n", run.arm.name,
                                   run.seed, total - todo.size() + next, total)
                << std::flush;
      running.push_back(std::move(r));
    }
    absl::SleepFor(absl::Milliseconds(500));
    for (auto it = running.begin(); it != running.end();) {
      int status = 0;
      if (waitpid(it->child->pid(), &status, WNOHANG) != it->child->pid()) {
        ++it;
        continue;
      }
      it->child->Detach();
      if (collect(it->run)) {
        const nlohmann::json& j = results.back();
        std::cout << absl::StrFormat(
                         "rhythm ablate: %s seed %d done in %.0f s: held-out sampled pass@1 "
                         "%.1f%% -> %.1f%%, greedy %.1f%% -> %.1f%% [%d/%d finished]\n",
                         it->run.arm.name, it->run.seed, elapsed() - it->started,
                         100 * j["before"]["sampled"].get<double>(),
                         100 * j["after"]["sampled"].get<double>(),
                         100 * j["before"]["pass1"].get<double>(),
                         100 * j["after"]["pass1"].get<double>(), results.size(), total)
                  << std::flush;
      } else {
        failed.push_back(it->run.dir);
        std::cout << "rhythm ablate: " << it->run.dir << " failed; see its train.err\n"
                  << std::flush;
      }
      it = running.erase(it);
    }
  }
  if (g_stop) {
    for (Running& r : running) kill(r.child->pid(), SIGTERM);  // all at once, then wait
    for (Running& r : running) r.child->Stop(SIGTERM, 60);
    std::cout << "rhythm ablate: interrupted; run the same command again to resume\n";
    return 1;
  }

  // 3. The outputs.
  nlohmann::json ablation;
  ablation["config"] = {
      {"task",
       common::EnumShortName(v1::TaskKind_descriptor(), config.task().kind()) +
           (config.task().kind() == v1::TASK_KIND_COUNTDOWN
                ? " (" +
                      common::EnumShortName(v1::CountdownConfig::CountdownFormat_descriptor(),
                                            config.task().countdown().format()) +
                      ")"
                : "")},
      {"seeds", seeds},
      {"steps", config.trainer().steps()},
      {"problems", n},
      {"samples", k},
      {"curve_problems", std::min(n, curve_n)},
      {"temperature", absl::StrCat(config.generation().temperature())},
      {"parallel", parallel},
      {"seconds", elapsed()}};
  ablation["warm"] = {{"pass1", before->pass1},
                      {"sampled", before->sampled},
                      {"passk", before->passk},
                      {"problems", before->problems}};
  ablation["runs"] = results;
  ablation["failed"] = failed;
  ablation["strategies"] = SummarizeAblation(results, *arms);
  std::ofstream(out + "/ablation.json") << ablation.dump(1) << "\n";
  WriteCsv(out + "/ablation.csv", results);
  WriteHtml(out + "/ablation.html", ablation);
  std::cout << absl::StrFormat("rhythm ablate: %d runs in %.0f s (%d at once)\n", results.size(),
                               elapsed(), parallel);
  for (const nlohmann::json& s : ablation["strategies"]) {
    const MeanCi sampled = FromJson(s["sampled"]), diff = FromJson(s["sampled_vs_none"]);
    std::cout << absl::StrFormat(
        "  %-18s sampled pass@1 %5.1f%% [%5.1f, %5.1f]  vs none %+5.1f [%+5.1f, %+5.1f]  "
        "amplified %.1f%%  anchor credit %.1f%%\n",
        s["arm"].get<std::string>(), 100 * sampled.mean, 100 * sampled.lo, 100 * sampled.hi,
        100 * diff.mean, 100 * diff.lo, 100 * diff.hi,
        100 * s["gamma"]["amplified_tokens"].get<double>(),
        100 * s["gamma"]["anchor_credit"].get<double>());
  }
  std::cout << "rhythm ablate: " << out << "/ablation.html, ablation.csv, ablation.json\n";
  return failed.empty() ? 0 : 1;
}

}  // namespace rhythm::cli

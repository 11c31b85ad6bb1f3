#include "cli/train_report.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "ATen/ATen.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/report_html.h"
#include "common/config.h"
#include "common/credit/token_credit.h"
#include "common/metrics_server.h"
#include "common/rollout/rollout_jsonl.h"

namespace rhythm::cli {
namespace fs = std::filesystem;
namespace {

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

// A series' value in one scrape; 0 when the scrape does not hold it.
double Get(const std::map<std::string, double>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? 0.0 : it->second;
}

// Sum and count of one measure over every staleness bucket.
std::pair<double, double> PooledAgreement(const std::map<std::string, double>& m,
                                          const std::string& measure) {
  double sum = 0, count = 0;
  for (const char* b : kStalenessBuckets) {
    sum += Get(m, AgreementSeries("sum", measure, b));
    count += Get(m, AgreementSeries("count", measure, b));
  }
  return {sum, count};
}

// One row field over the version, leaving out rows where it is NaN (undefined: the agreement
// of a step that compared no rollout).
Series RowSeries(const std::vector<TrainRow>& rows, double TrainRow::*field, const char* label,
                 const char* colour) {
  Series s{label, colour, {}, {}};
  for (const TrainRow& r : rows) {
    if (!std::isnan(r.*field)) s.points.emplace_back(static_cast<double>(r.version), r.*field);
  }
  return s;
}

// The learner's evaluations (learner.eval_every) over the version they scored, each once.
std::vector<Series> LearnerEvalSeries(const std::vector<TrainRow>& rows, int64_t k) {
  Series pass1{"learner greedy pass@1", "#16a34a", {}, {}},
      avg{absl::StrFormat("learner avg@%d", k), "#9333ea", {}, {}};
  int64_t last = -1;
  for (const TrainRow& r : rows) {
    if (r.eval_version < 0 || r.eval_version == last) continue;
    last = r.eval_version;
    pass1.points.emplace_back(static_cast<double>(r.eval_version), r.eval_pass1);
    avg.points.emplace_back(static_cast<double>(r.eval_version), r.eval_avg_at_k);
  }
  if (pass1.points.empty()) return {};
  return k > 1 ? std::vector<Series>{pass1, avg} : std::vector<Series>{pass1};
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

}  // namespace

std::map<std::string, double> ScrapeLearner(int port) {
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

TrainRow RowFromScrape(const std::map<std::string, double>& m, int64_t version, double seconds) {
  TrainRow r;
  r.version = version;
  r.seconds = seconds;
  r.reward = Get(m, "rhythm_learner_reward_mean");
  r.accuracy = Get(m, "rhythm_learner_accuracy_ratio");
  r.loss = Get(m, "rhythm_learner_loss");
  r.clip = Get(m, "rhythm_learner_clip_fraction_ratio");
  r.kl = Get(m, "rhythm_learner_approx_kl");
  r.entropy = Get(m, "rhythm_learner_entropy_nats");
  r.tokens_per_second = Get(m, "rhythm_learner_tokens_per_second");
  const double samples = Get(m, "rhythm_learner_staleness_versions_count");
  r.staleness = samples > 0 ? Get(m, "rhythm_learner_staleness_versions_sum") / samples : 0;
  r.preplan = Get(m, "rhythm_learner_preplan_credit_fraction_ratio");
  r.anchor = Get(m, "rhythm_learner_anchor_credit_fraction_ratio");
  r.fai_defined = Get(m, "rhythm_learner_fai_defined_ratio");
  r.amplified = Get(m, "rhythm_learner_amplified_token_fraction_ratio");
  if (auto it = m.find("rhythm_learner_eval_version"); it != m.end() && it->second >= 0) {
    r.eval_version = static_cast<int64_t>(it->second);
    r.eval_pass1 = Get(m, "rhythm_learner_eval_pass1_ratio");
    r.eval_avg_at_k = Get(m, "rhythm_learner_eval_avg_at_k_ratio");
  }
  return r;
}

std::string CsvHeader() {
  return "version,seconds,reward,accuracy,loss,clip_fraction,approx_kl,entropy,tokens_per_second,"
         "staleness,preplan_credit,anchor_credit,heldout_pass1,heldout_sampled_pass1,"
         "fai_defined,amplified_tokens\n";
}

std::string CsvLine(const TrainRow& r) {
  return absl::StrFormat("%d,%.1f,%.4f,%.4f,%.5f,%.4f,%.6f,%.4f,%.1f,%.2f,%.4f,%.4f,,,%.4f,%.4f\n",
                         r.version, r.seconds, r.reward, r.accuracy, r.loss, r.clip, r.kl,
                         r.entropy, r.tokens_per_second, r.staleness, r.preplan, r.anchor,
                         r.fai_defined, r.amplified);
}

std::string CsvLine(const HeldOutPoint& p) {
  return absl::StrFormat("%d,%.1f,,,,,,,,,,,%.4f,%.4f,,\n", p.version, p.seconds, p.greedy,
                         p.sampled);
}

void AgreementRecord::Observe(const std::map<std::string, double>& m, TrainRow& row) {
  double TrainRow::*const fields[] = {&TrainRow::agree_waad, &TrainRow::agree_fai,
                                      &TrainRow::agree_jaccard};
  for (int i = 0; i < 3; ++i) {
    const char* measure = kAgreementMeasures[i];
    const std::pair<double, double> now = PooledAgreement(m, measure);
    const std::pair<double, double> was = before_[measure];
    row.*fields[i] = now.second > was.second ? (now.first - was.first) / (now.second - was.second)
                                             : std::nan("");
    before_[measure] = now;
  }
  for (const char* signal : {"waad", "fai"}) {
    for (const char* b : kStalenessBuckets) {
      const std::string key = ErrorRatioSeries(signal, b);
      if (auto it = m.find(key); it != m.end() && !std::isnan(it->second)) {
        worst_ratio_[key] = std::max(worst_ratio_[key], it->second);
      }
    }
  }
  last_ = m;
}

nlohmann::json AgreementRecord::Json() const {
  nlohmann::json out = nlohmann::json::object();
  for (const char* b : kStalenessBuckets) {
    nlohmann::json e;
    e["rollouts"] = Get(last_, AgreementSeries("count", "selection_jaccard", b));
    e["head_split_differs"] =
        Get(last_,
            absl::StrCat("rhythm_learner_summary_head_split_differs_total{staleness=\"", b, "\"}"));
    for (const char* measure : kAgreementMeasures) {
      const double c = Get(last_, AgreementSeries("count", measure, b));
      e[measure] = c > 0 ? nlohmann::json(Get(last_, AgreementSeries("sum", measure, b)) / c)
                         : nlohmann::json(nullptr);
    }
    for (const char* signal : {"waad", "fai"}) {
      auto it = worst_ratio_.find(ErrorRatioSeries(signal, b));
      e[absl::StrCat(signal, "_fp16_error_ratio_max")] =
          it == worst_ratio_.end() ? nlohmann::json(nullptr) : nlohmann::json(it->second);
    }
    out[b] = e;
  }
  return out;
}

std::string AgreementRecord::Text() const {
  const nlohmann::json j = Json();
  std::string text;
  for (const char* b : kStalenessBuckets) {
    const nlohmann::json& e = j[b];
    if (e["rollouts"].get<double>() <= 0) continue;
    absl::StrAppend(
        &text,
        absl::StrFormat("rhythm train: summary agreement, staleness %s: %.0f "
                        "rollouts, WAAD Spearman %s, FAI Spearman %s, selection "
                        "Jaccard %s, fp16 error ratio WAAD %s FAI %s, head split "
                        "differs in %s\n",
                        b, e["rollouts"].get<double>(), e["waad_spearman"].dump(),
                        e["fai_spearman"].dump(), e["selection_jaccard"].dump(),
                        e["waad_fp16_error_ratio_max"].dump(), e["fai_fp16_error_ratio_max"].dump(),
                        e["head_split_differs"].dump()));
  }
  return text;
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
    absl::StrAppend(&html, absl::StrFormat(" <small>reward %.2f</small></div>", r->reward));
  }
  return html;
}

RunCreditStats MeanCreditStats(const std::vector<TrainRow>& rows) {
  RunCreditStats s;
  for (const TrainRow& r : rows) {
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

void WriteTrainReport(const std::string& path, const std::vector<TrainRow>& rows,
                      const std::vector<HeldOutPoint>& heldout, const TrainSummary& sum,
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
  out << PageHead("rhythm train report",
                  ".rollout{font-family:monospace;margin:.4em 0;font-size:15px}.tok{padding:1px "
                  "1px}.preplan{text-decoration:underline 2px #2563eb}.anchor{outline:1px solid "
                  "#f97316}.prompt{color:#666}")
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
               {RowSeries(rows, &TrainRow::reward, "reward", kLightBlue),
                MovingAverage(RowSeries(rows, &TrainRow::reward, "", ""), 10, "mean of 10", kBlue)})
      << Chart(
             "accuracy (training batch)",
             {RowSeries(rows, &TrainRow::accuracy, "accuracy", kLightBlue),
              MovingAverage(RowSeries(rows, &TrainRow::accuracy, "", ""), 10, "mean of 10", kBlue)},
             Scale::kPercent)
      << Chart("loss", {RowSeries(rows, &TrainRow::loss, "loss", kBlue)})
      << Chart(config.trainer().mini_batches() == 1
                   ? "approx KL <small>(0: one update per batch, so old = new policy)</small>"
                   : "approx KL",
               {RowSeries(rows, &TrainRow::kl, "kl", kBlue)})
      << Chart("clip fraction (tokens whose ratio was clipped)",
               {RowSeries(rows, &TrainRow::clip, "clip fraction", kBlue)}, Scale::kFromZero)
      << Chart("credit: FAI defined, |shaped advantage| on preplan and anchor tokens",
               {RowSeries(rows, &TrainRow::fai_defined, "FAI defined", "#16a34a"),
                RowSeries(rows, &TrainRow::preplan, "preplan credit", kBlue),
                RowSeries(rows, &TrainRow::anchor, "anchor credit", "#f97316")},
               Scale::kPercent)
      << (config.credit().summary_agreement()
              ? Chart("summary agreement, actor vs learner (mean over each step's rollouts; "
                      "1 = identical)",
                      {RowSeries(rows, &TrainRow::agree_waad, "WAAD Spearman", kBlue),
                       RowSeries(rows, &TrainRow::agree_fai, "FAI Spearman", "#f97316"),
                       RowSeries(rows, &TrainRow::agree_jaccard, "selection Jaccard", "#16a34a")})
              : "")
      << (config.learner().eval_every() > 0
              ? Chart(absl::StrFormat("the learner's own evaluation (learner.eval_every = %d, "
                                      "first %d problems of %s)",
                                      config.learner().eval_every(), config.learner().eval_n(),
                                      config.learner().eval_dataset().empty()
                                          ? "the held-out split"
                                          : Escape(config.learner().eval_dataset())),
                      LearnerEvalSeries(rows, config.learner().eval_k()), Scale::kPercent,
                      /*markers=*/true)
              : "")
      << Chart("entropy (nats per token)", {RowSeries(rows, &TrainRow::entropy, "entropy", kBlue)})
      << Chart("tokens / s (learner)",
               {RowSeries(rows, &TrainRow::tokens_per_second, "tokens/s", kBlue)}, Scale::kFromZero)
      << "<h2>Rollouts of the last trained batch</h2><p>Blue: WAAD, orange: FAI; underlined: "
         "preplan tokens; boxed: anchors. Hover a token for its values.</p>"
      << rollouts_html << "</body></html>\n";
}

}  // namespace rhythm::cli

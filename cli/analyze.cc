#include "cli/analyze.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <set>

#include "ATen/ATen.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/report_html.h"
#include "cli/train.h"
#include "common/analysis/rhythm_stats.h"
#include "common/config.h"
#include "common/model/load_model.h"
#include "common/rollout/attention_summary.h"
#include "common/rollout/engine.h"
#include "common/runtime.h"
#include "common/status.h"
#include "common/tasks/prompt_format.h"
#include "common/torch_status.h"
#include "nlohmann/json.hpp"

namespace rhythm::cli {
namespace {

namespace analysis = common::analysis;
namespace rollout = common::rollout;
using nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

int Fail(const std::string& message, int code = 2) {
  std::cerr << "rhythm: analyze: " << message << "\n";
  return code;
}

// NaN as JSON null.
json Num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// One analysed response.
struct Response {
  std::vector<int32_t> prompt, response;         // response without a trailing EOS
  analysis::ResponseSeries series;               // the engine's summary and entropy
  std::vector<analysis::ResponseSeries> thirds;  // per layer third with tapped layers
  bool correct = false;
};

// Entropy at WAAD peaks and FAI-after-WAAD for one set of series under one peak rule, with
// bootstrap intervals of the two differences.
json PatternStats(const std::vector<analysis::ResponseSeries>& rs, const analysis::PeakOptions& p,
                  int resamples) {
  const analysis::EntropyAtPeaks e = analysis::EntropyAtWaadPeaks(rs, p);
  const analysis::FaiFollowsWaad f = analysis::FaiPeaksFollowWaadPeaks(rs, p);
  const analysis::Interval ei = analysis::BootstrapInterval(
      rs,
      [&](const std::vector<analysis::ResponseSeries>& d) {
        const analysis::EntropyAtPeaks x = analysis::EntropyAtWaadPeaks(d, p);
        return x.at_peaks - x.all;
      },
      resamples, 17);
  const analysis::Interval fi = analysis::BootstrapInterval(
      rs,
      [&](const std::vector<analysis::ResponseSeries>& d) {
        const analysis::FaiFollowsWaad x = analysis::FaiPeaksFollowWaadPeaks(d, p);
        return x.observed - x.baseline;
      },
      resamples, 19);
  return {
      {"entropy_at_waad_peaks", Num(e.at_peaks)},
      {"entropy_all_tokens", Num(e.all)},
      {"entropy_difference_ci", {Num(ei.lo), Num(ei.hi)}},
      {"waad_peak_tokens", e.peak_tokens},
      {"tokens", e.tokens},
      {"fai_peaks_after_waad_peak", Num(f.observed)},
      {"fai_peaks_after_waad_peak_baseline", Num(f.baseline)},
      {"fai_after_waad_difference_ci", {Num(fi.lo), Num(fi.hi)}},
      {"fai_peaks", f.fai_peaks},
  };
}

// Both peak rules.
json BothRules(const std::vector<analysis::ResponseSeries>& rs, int resamples) {
  return {{"local_max", PatternStats(rs, {analysis::PeakRule::kLocalMax, 0}, resamples)},
          {"top_20", PatternStats(rs, {analysis::PeakRule::kTopFraction, 0.2}, resamples)}};
}

std::string ThirdName(int third) { return third == 0 ? "bottom" : third == 1 ? "middle" : "top"; }

// The first defined position with the largest (or smallest) value; -1 if none is defined.
int64_t Extreme(const std::vector<float>& x, bool largest) {
  int64_t best = -1;
  for (int64_t t = 0; t < static_cast<int64_t>(x.size()); ++t) {
    if (std::isnan(x[t])) continue;
    if (best < 0 || (largest ? x[t] > x[best] : x[t] < x[best])) best = t;
  }
  return best;
}

// The k most likely tokens after `logits` other than `exclude`, most likely first.
std::vector<int32_t> Alternatives(const at::Tensor& logits, int32_t exclude, int64_t k) {
  const at::Tensor order = logits.argsort(-1, /*descending=*/true);
  std::vector<int32_t> out;
  for (int64_t i = 0; i < order.size(0) && static_cast<int64_t>(out.size()) < k; ++i) {
    const int32_t id = static_cast<int32_t>(order[i].item<int64_t>());
    if (id != exclude) out.push_back(id);
  }
  return out;
}

// The `k` most frequent keys of `counts` as [[key, count], ...], most frequent first.
json MostCommon(const std::map<std::string, int64_t>& counts, size_t k) {
  std::vector<std::pair<std::string, int64_t>> v(counts.begin(), counts.end());
  std::stable_sort(v.begin(), v.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  if (v.size() > k) v.resize(k);
  json out = json::array();
  for (const auto& [key, n] : v) out.push_back({key, n});
  return out;
}

// A greedy continuation request: prompt + response[0, s) + forced token, at most `budget` new
// tokens.
struct Continuation {
  std::vector<int32_t> ids;
  int64_t budget = 0;
};

}  // namespace

void RegisterAnalyzeFlags(common::FlagParser& parser, AnalyzeFlags& f) {
  parser.AddString("alternatives", "K",
                   "analyze: alternatives forced at each perturbed position (default 3)",
                   &f.alternatives);
  parser.AddString("examples", "N", "analyze: responses drawn in analysis.html (default 4)",
                   &f.examples);
}

absl::StatusOr<json> Analyze(const common::model::Transformer& model,
                             const common::Tokenizer& tokenizer, const common::tasks::Task& task,
                             const AnalysisOptions& options, const v1::RhythmConfig& config) {
  const auto start = std::chrono::steady_clock::now();
  const int64_t n = std::min<int64_t>(options.n, static_cast<int64_t>(task.heldout_size()));
  if (n < 1) return absl::InvalidArgumentError(absl::StrCat("--n ", options.n, " must be >= 1"));
  const int64_t layers = model.config().num_layers;
  rollout::GenerationOptions o = rollout::GenerationOptionsFromConfig(config.generation());
  o.taps = true;
  o.stop_token_ids = {tokenizer.eos_id()};
  o.pad_id = tokenizer.pad_id();
  o.stop_strings.clear();
  o.samples_per_prompt = 1;
  o.seed = config.runtime().seed();
  RHYTHM_ASSIGN_OR_RETURN(const rollout::TapOptions tap, rollout::ResolveTapOptions(o.tap, layers));
  o.tap = tap;
  // The per-third taps: the user's layers when given, else every layer, grouped by third.
  std::vector<int64_t> third_layers;
  if (config.generation().tap_layers_size() > 0) {
    third_layers = tap.layers;
  } else {
    for (int64_t l = 0; l < layers; ++l) third_layers.push_back(l);
  }
  std::vector<rollout::TapOptions> third_taps(3, tap);
  for (auto& t : third_taps) t.layers.clear();
  for (int64_t l : third_layers)
    third_taps[std::min<int64_t>(2, 3 * l / layers)].layers.push_back(l);

  std::vector<std::vector<int32_t>> prompts;
  std::vector<common::tasks::Problem> problems;
  // Prompts as the model sees them in training (task.prompt_format).
  RHYTHM_ASSIGN_OR_RETURN(const common::tasks::PromptFormatter format,
                          common::tasks::PromptFormatter::Create(config.task(), tokenizer));
  for (int64_t i = 0; i < n; ++i) {
    problems.push_back(task.HeldOutProblem(static_cast<uint64_t>(i)));
    RHYTHM_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                            format.Encode(tokenizer, problems.back().prompt));
    prompts.push_back(std::move(ids));
  }
  RHYTHM_ASSIGN_OR_RETURN(std::vector<rollout::GeneratedSample> samples,
                          rollout::GenerationEngine(model).Generate(prompts, o));

  // Per response: the engine's series, then one forward capturing every layer for the thirds
  // and the alternatives at the perturbed positions.
  std::vector<Response> responses;
  std::vector<Continuation> continuations;  // per response: top (control, k alts), bottom (...)
  std::vector<int64_t> perturbed;           // index into responses of each perturbed response
  std::vector<std::pair<int64_t, int64_t>> positions;  // (top, bottom) per perturbed response
  std::vector<int64_t> all_layers(layers);
  for (int64_t l = 0; l < layers; ++l) all_layers[l] = l;
  int64_t fai_defined = 0, tokens = 0;
  absl::Status inner;
  RHYTHM_RETURN_IF_ERROR(common::TorchCall("analyze forward", [&]() {
    at::NoGradGuard no_grad;
    for (const rollout::GeneratedSample& s : samples) {
      Response r;
      r.prompt = s.prompt_ids;
      r.response = s.response_ids;
      int64_t len = static_cast<int64_t>(r.response.size());
      if (len > 0 && r.response.back() == tokenizer.eos_id()) --len;
      r.response.resize(len);
      if (len < 2 || !s.summary.has_value()) continue;  // nothing to peak over
      r.series.waad.assign(s.summary->waad.begin(), s.summary->waad.begin() + len);
      r.series.fai.assign(s.summary->fai.begin(), s.summary->fai.begin() + len);
      r.series.entropy.assign(s.entropy.begin(), s.entropy.begin() + len);
      r.correct =
          task.Verify(problems[s.prompt_index].answer, tokenizer.Decode(r.response).value_or(""))
              .correct();
      for (float f : r.series.fai) fai_defined += std::isnan(f) ? 0 : 1;
      tokens += len;
      // The forward covers the response as generated, its EOS too, as the engine's summary
      // does (the EOS row is in earlier tokens' FAI bands and in the head distances); the
      // series are then cut to the response proper.
      std::vector<int64_t> ids(r.prompt.begin(), r.prompt.end());
      ids.insert(ids.end(), s.response_ids.begin(), s.response_ids.end());
      const int64_t total = static_cast<int64_t>(ids.size()), p = r.prompt.size();
      const int64_t generated = static_cast<int64_t>(s.response_ids.size());
      absl::StatusOr<common::model::ForwardOutput> fwd =
          model.Forward(at::tensor(ids, at::kLong).unsqueeze(0), at::ones({1, total}), all_layers);
      if (!fwd.ok()) {
        inner = fwd.status();
        return;
      }
      for (const rollout::TapOptions& t : third_taps) {
        if (t.layers.empty()) continue;
        std::vector<at::Tensor> maps;
        for (int64_t l : t.layers) maps.push_back(fwd->attention[l][0]);
        absl::StatusOr<rollout::AttentionSummary> sum =
            rollout::SummaryFromMaps(t, maps, p, generated);
        if (!sum.ok()) {
          inner = sum.status();
          return;
        }
        r.thirds.push_back({std::vector<float>(sum->waad.begin(), sum->waad.begin() + len),
                            std::vector<float>(sum->fai.begin(), sum->fai.begin() + len),
                            r.series.entropy});
      }
      const int64_t top = Extreme(r.series.fai, true), bottom = Extreme(r.series.fai, false);
      if (top >= 0 && bottom >= 0 && top != bottom) {
        for (int64_t pos : {top, bottom}) {
          std::vector<int32_t> prefix(r.prompt);
          prefix.insert(prefix.end(), r.response.begin(), r.response.begin() + pos);
          const int64_t budget = std::max<int64_t>(1, o.max_new_tokens - pos - 1);
          std::vector<int32_t> control = prefix;
          control.push_back(r.response[pos]);
          continuations.push_back({control, budget});
          const std::vector<int32_t> alts =
              Alternatives(fwd->logits[0][p + pos - 1], r.response[pos], options.alternatives);
          for (int64_t j = 0; j < options.alternatives; ++j) {
            std::vector<int32_t> forced = prefix;
            // A vocabulary smaller than k + 1 repeats its last alternative (never in practice).
            forced.push_back(alts.empty() ? r.response[pos]
                                          : alts[std::min<size_t>(j, alts.size() - 1)]);
            continuations.push_back({forced, budget});
          }
        }
        perturbed.push_back(static_cast<int64_t>(responses.size()));
        positions.emplace_back(top, bottom);
      }
      responses.push_back(std::move(r));
    }
  }));
  RHYTHM_RETURN_IF_ERROR(inner);
  if (responses.empty()) {
    return absl::FailedPreconditionError(
        "no response had two or more tokens and a summary: nothing to analyse");
  }

  // Greedy continuations, all in one call (continuous batching).
  rollout::GenerationOptions g = o;
  g.taps = false;
  g.sampling.temperature = 0;
  std::vector<std::vector<int32_t>> requests;
  int64_t longest = 0, budget = 1;
  for (const Continuation& c : continuations) {
    requests.push_back(c.ids);
    longest = std::max<int64_t>(longest, c.ids.size());
    budget = std::max(budget, c.budget);
  }
  // One call's length limit fits every request in the model's positions; each continuation is
  // cut to its own budget below, the control and its alternatives alike.
  g.max_new_tokens =
      std::max<int64_t>(1, std::min(budget, model.config().max_position_embeddings - longest));
  std::vector<rollout::GeneratedSample> outs;
  if (!requests.empty()) {
    RHYTHM_ASSIGN_OR_RETURN(outs, rollout::GenerationEngine(model).Generate(requests, g));
  }
  auto continuation = [&](size_t i) {
    std::vector<int32_t> ids = outs[i].response_ids;
    if (!ids.empty() && ids.back() == tokenizer.eos_id()) ids.pop_back();
    const int64_t keep = std::min(continuations[i].budget, g.max_new_tokens);
    if (static_cast<int64_t>(ids.size()) > keep) ids.resize(keep);
    return ids;
  };
  std::vector<analysis::PerturbationTrial> word_trials, token_trials;
  std::vector<double> per_response_gap;          // mean (bottom - top) word Jaccard per response
  double top_position = 0, bottom_position = 0;  // mean position as a fraction of the response
  std::map<std::string, int64_t> top_tokens, bottom_tokens;  // what the perturbed tokens are
  const int64_t per_position = 1 + options.alternatives;
  for (size_t r = 0; r < perturbed.size(); ++r) {
    const size_t base = r * 2 * per_position;
    const std::vector<int32_t> top_ref = continuation(base);
    const std::vector<int32_t> bottom_ref = continuation(base + per_position);
    const auto words = [&](const std::vector<int32_t>& ids) {
      return analysis::Words(tokenizer.Decode(ids).value_or(""));
    };
    const auto as64 = [](const std::vector<int32_t>& ids) {
      return std::vector<int64_t>(ids.begin(), ids.end());
    };
    double gap = 0;
    for (int64_t j = 1; j <= options.alternatives; ++j) {
      const std::vector<int32_t> top_alt = continuation(base + j);
      const std::vector<int32_t> bottom_alt = continuation(base + per_position + j);
      word_trials.push_back({analysis::Jaccard(words(top_ref), words(top_alt)),
                             analysis::Jaccard(words(bottom_ref), words(bottom_alt))});
      token_trials.push_back({analysis::Jaccard(as64(top_ref), as64(top_alt)),
                              analysis::Jaccard(as64(bottom_ref), as64(bottom_alt))});
      gap += word_trials.back().bottom_jaccard - word_trials.back().top_jaccard;
    }
    per_response_gap.push_back(gap / options.alternatives);
    const double len = static_cast<double>(responses[perturbed[r]].response.size());
    const std::vector<int32_t>& resp = responses[perturbed[r]].response;
    ++top_tokens[tokenizer.Decode({resp[positions[r].first]}).value_or("?")];
    ++bottom_tokens[tokenizer.Decode({resp[positions[r].second]}).value_or("?")];
    top_position += positions[r].first / len / perturbed.size();
    bottom_position += positions[r].second / len / perturbed.size();
  }
  auto perturbation_json = [](const analysis::PerturbationSummary& s) {
    return json{{"top_fai_mean_jaccard", Num(s.top_mean)},
                {"bottom_fai_mean_jaccard", Num(s.bottom_mean)},
                {"top_changes_more", Num(s.top_changes_more)},
                {"ties", Num(s.ties)},
                {"trials", s.trials}};
  };
  json perturbation = {{"words", perturbation_json(analysis::SummarizePerturbation(word_trials))},
                       {"tokens", perturbation_json(analysis::SummarizePerturbation(token_trials))},
                       {"responses", perturbed.size()},
                       {"top_fai_position", Num(perturbed.empty() ? kNaN : top_position)},
                       {"bottom_fai_position", Num(perturbed.empty() ? kNaN : bottom_position)},
                       {"top_fai_tokens", MostCommon(top_tokens, 5)},
                       {"bottom_fai_tokens", MostCommon(bottom_tokens, 5)},
                       {"alternatives", options.alternatives}};
  if (per_response_gap.size() > 1) {
    double mean = 0, var = 0;
    for (double v : per_response_gap) mean += v;
    mean /= per_response_gap.size();
    for (double v : per_response_gap) var += (v - mean) * (v - mean);
    var /= per_response_gap.size() - 1;
    const double half = 1.96 * std::sqrt(var / per_response_gap.size());
    perturbation["words"]["bottom_minus_top_ci"] = {Num(mean - half), Num(mean + half)};
  }

  // Statistics.
  std::vector<analysis::ResponseSeries> main;
  int64_t correct = 0;
  for (const Response& r : responses) {
    main.push_back(r.series);
    correct += r.correct ? 1 : 0;
  }
  json thirds = json::array();
  for (int third = 0, index = 0; third < 3; ++third) {
    if (third_taps[third].layers.empty()) continue;
    std::vector<analysis::ResponseSeries> rs;
    for (const Response& r : responses) rs.push_back(r.thirds[index]);
    thirds.push_back({{"third", ThirdName(third)},
                      {"layers", third_taps[third].layers},
                      {"statistics", BothRules(rs, options.bootstrap)}});
    ++index;
  }
  json examples = json::array();
  for (size_t i = 0;
       i < perturbed.size() && static_cast<int64_t>(examples.size()) < options.examples; ++i) {
    const Response& r = responses[perturbed[i]];
    json tokens_text = json::array();
    for (int32_t id : r.response) tokens_text.push_back(tokenizer.Decode({id}).value_or("?"));
    json fai = json::array();
    for (float f : r.series.fai) fai.push_back(Num(f));
    examples.push_back({{"prompt", tokenizer.Decode(r.prompt).value_or("")},
                        {"tokens", tokens_text},
                        {"waad", r.series.waad},
                        {"fai", fai},
                        {"entropy", r.series.entropy},
                        {"waad_peaks", analysis::Peaks(r.series.waad, {})},
                        {"fai_peaks", analysis::Peaks(r.series.fai, {})},
                        {"top_fai", positions[i].first},
                        {"bottom_fai", positions[i].second},
                        {"correct", r.correct}});
  }
  json result = {
      {"task", task.name()},
      {"responses", responses.size()},
      {"problems", n},
      {"correct", static_cast<double>(correct) / responses.size()},
      {"response_tokens_mean", static_cast<double>(tokens) / responses.size()},
      {"fai_defined", tokens > 0 ? static_cast<double>(fai_defined) / tokens : 0.0},
      {"temperature", config.generation().temperature()},
      {"seed", config.runtime().seed()},
      {"taps",
       {{"layers", tap.layers},
        {"num_layers", layers},
        {"waad_window", tap.window},
        {"fai_band", {tap.band_lo, tap.band_hi}},
        {"head_quantile", tap.head_quantile}}},
      {"peak_rules",
       {{"local_max",
         "a maximal run of equal defined values whose neighbours are lower, undefined or past "
         "the end; the run's first token"},
        {"top_20", "the top 20% of defined values, the earlier token first on a tie"}}},
      {"statistics", BothRules(main, options.bootstrap)},
      {"per_third", thirds},
      {"perturbation", perturbation},
      {"paper",
       {{"setting", "Qwen3-4B-Base, GSM8K, T = 0.7, 70 problems (arXiv 2510.13554 §4.2, Table 1)"},
        {"entropy_at_waad_peaks", 0.3608},
        {"entropy_all_tokens", 0.2386},
        {"fai_peaks_after_waad_peak", 0.5253},
        {"fai_peaks_after_waad_peak_baseline", 0.3687},
        {"top_fai_mean_jaccard", 0.534},
        {"bottom_fai_mean_jaccard", 0.631},
        {"top_changes_more", 0.8714}}},
      {"examples", examples},
      {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()},
  };
  return result;
}

namespace {

std::string Pct(const json& v) {
  return v.is_number() ? absl::StrFormat("%.1f%%", 100 * v.get<double>()) : "n/a";
}
std::string Fix(const json& v, int digits = 3) {
  return v.is_number() ? absl::StrFormat("%.*f", digits, v.get<double>()) : "n/a";
}
std::string Ci(const json& v, bool percent) {
  if (!v.is_array() || v.size() != 2 || !v[0].is_number()) return "";
  return percent ? absl::StrFormat(" <small>[%+.1f, %+.1f] pts</small>", 100 * v[0].get<double>(),
                                   100 * v[1].get<double>())
                 : absl::StrFormat(" <small>[%+.3f, %+.3f]</small>", v[0].get<double>(),
                                   v[1].get<double>());
}

// The rows of the two pattern statistics for one rule.
std::string PatternRows(const json& s, const json& paper, bool with_paper) {
  return absl::StrCat(
      "<tr><td>entropy at WAAD peaks vs all tokens</td><td>", Fix(s["entropy_at_waad_peaks"]),
      " vs ", Fix(s["entropy_all_tokens"]), Ci(s["entropy_difference_ci"], false), "</td><td>",
      with_paper ? absl::StrCat(Fix(paper["entropy_at_waad_peaks"], 4), " vs ",
                                Fix(paper["entropy_all_tokens"], 4))
                 : "",
      "</td></tr><tr><td>FAI peaks at or one after a WAAD peak vs shuffled</td><td>",
      Pct(s["fai_peaks_after_waad_peak"]), " vs ", Pct(s["fai_peaks_after_waad_peak_baseline"]),
      Ci(s["fai_after_waad_difference_ci"], true), "</td><td>",
      with_paper ? absl::StrCat(Pct(paper["fai_peaks_after_waad_peak"]), " vs ",
                                Pct(paper["fai_peaks_after_waad_peak_baseline"]))
                 : "",
      "</td></tr>");
}

}  // namespace

std::string AnalysisHtml(const json& a) {
  const json& paper = a["paper"];
  std::string html =
      PageHead("rhythm analyze",
               ".tokens{font-family:monospace;font-size:15px;margin:.3em 0 1.2em}.tok{padding:1px}"
               ".wp{text-decoration:underline 2px #2563eb}.fp{outline:1px solid #f97316}"
               ".top{background:#fde68a}.bottom{background:#e5e7eb}");
  absl::StrAppend(
      &html, "<h1>Is the rhythm in this model?</h1>",
      absl::StrFormat(
          "<p>Task <b>%s</b>: %d responses to held-out problems at temperature %g (%s correct, "
          "%.1f tokens on average, FAI defined on %s of tokens). Taps: layers %s of %d, W = %d, "
          "FAI band [%d, %d], head quantile %g. Intervals are 95%% bootstrap intervals over "
          "responses of the difference (this model minus its baseline).</p>",
          Escape(a["task"].get<std::string>()), a["responses"].get<int64_t>(),
          a["temperature"].get<double>(), Pct(a["correct"]),
          a["response_tokens_mean"].get<double>(), Pct(a["fai_defined"]),
          a["taps"]["layers"].dump(), a["taps"]["num_layers"].get<int64_t>(),
          a["taps"]["waad_window"].get<int64_t>(), a["taps"]["fai_band"][0].get<int64_t>(),
          a["taps"]["fai_band"][1].get<int64_t>(), a["taps"]["head_quantile"].get<double>()));
  absl::StrAppend(&html,
                  "<h2>The statistics beside the paper's</h2><table><tr><th>statistic"
                  "</th><th>this model</th><th>paper (",
                  Escape(paper["setting"].get<std::string>()), ")</th></tr>",
                  PatternRows(a["statistics"]["local_max"], paper, true));
  const json& pw = a["perturbation"]["words"];
  absl::StrAppend(&html, "<tr><td>perturbation: word Jaccard at top- vs bottom-FAI tokens</td><td>",
                  Fix(pw["top_fai_mean_jaccard"]), " vs ", Fix(pw["bottom_fai_mean_jaccard"]),
                  Ci(pw.value("bottom_minus_top_ci", json()), false), "</td><td>",
                  Fix(paper["top_fai_mean_jaccard"]), " vs ", Fix(paper["bottom_fai_mean_jaccard"]),
                  "</td></tr><tr><td>trials where the top-FAI perturbation changes more</td><td>",
                  Pct(pw["top_changes_more"]),
                  absl::StrFormat(" <small>(ties %s, %d trials)</small>", Pct(pw["ties"]),
                                  pw["trials"].get<int64_t>()),
                  "</td><td>", Pct(paper["top_changes_more"]), "</td></tr></table>");
  const json& pt = a["perturbation"]["tokens"];
  absl::StrAppend(
      &html, "<p>Peaks: ", Escape(a["peak_rules"]["local_max"].get<std::string>()),
      ". Perturbation: at the response's highest- and lowest-FAI token, each of the ",
      a["perturbation"]["alternatives"].dump(),
      " most likely other tokens is forced and the rest continued greedily; the continuation "
      "is compared with the greedy continuation of the unperturbed prefix. Token-set Jaccard: ",
      Fix(pt["top_fai_mean_jaccard"]), " vs ", Fix(pt["bottom_fai_mean_jaccard"]), " (",
      Pct(pt["top_changes_more"]), " of trials change more at top-FAI). The perturbed tokens sit ",
      Pct(a["perturbation"]["top_fai_position"]), " (top-FAI) and ",
      Pct(a["perturbation"]["bottom_fai_position"]),
      " (bottom-FAI) of the way into their responses on average. The most frequent top-FAI "
      "tokens: ",
      Escape(a["perturbation"]["top_fai_tokens"].dump()),
      "; bottom-FAI: ", Escape(a["perturbation"]["bottom_fai_tokens"].dump()), ".</p>");
  absl::StrAppend(&html, "<h2>Under the alternative peak rule</h2><p>",
                  Escape(a["peak_rules"]["top_20"].get<std::string>()),
                  ".</p><table><tr><th>statistic</th><th>this model</th><th></th></tr>",
                  PatternRows(a["statistics"]["top_20"], paper, false), "</table>");
  absl::StrAppend(&html,
                  "<h2>Per layer third</h2><table><tr><th>third (layers)</th><th>entropy "
                  "at WAAD peaks vs all</th><th>FAI after WAAD vs shuffled</th></tr>");
  for (const json& t : a["per_third"]) {
    const json& s = t["statistics"]["local_max"];
    absl::StrAppend(&html, "<tr><td>", t["third"].get<std::string>(), " (", t["layers"].dump(),
                    ")</td><td>", Fix(s["entropy_at_waad_peaks"]), " vs ",
                    Fix(s["entropy_all_tokens"]), Ci(s["entropy_difference_ci"], false),
                    "</td><td>", Pct(s["fai_peaks_after_waad_peak"]), " vs ",
                    Pct(s["fai_peaks_after_waad_peak_baseline"]),
                    Ci(s["fai_after_waad_difference_ci"], true), "</td></tr>");
  }
  absl::StrAppend(&html,
                  "</table><h2>Responses</h2><p>WAAD (blue) and FAI (orange) over each "
                  "response's tokens, peaks dotted. In the text, WAAD peaks are "
                  "underlined, FAI peaks boxed; the perturbed top-FAI token is yellow, "
                  "the bottom-FAI token grey.</p>");
  for (const json& e : a["examples"]) {
    Series waad{"WAAD", "#2563eb", {}, {}, {}}, fai{"FAI", "#f97316", {}, {}, {}};
    const std::set<int64_t> wp = e["waad_peaks"].get<std::set<int64_t>>();
    const std::set<int64_t> fp = e["fai_peaks"].get<std::set<int64_t>>();
    for (size_t t = 0; t < e["waad"].size(); ++t) {
      const double w = e["waad"][t].get<double>();
      waad.points.emplace_back(t, w);
      if (wp.count(t)) waad.marks.emplace_back(t, w);
      if (e["fai"][t].is_number()) {
        const double f = e["fai"][t].get<double>();
        fai.points.emplace_back(t, f);
        if (fp.count(t)) fai.marks.emplace_back(t, f);
      }
    }
    absl::StrAppend(&html, "<div>", Chart("WAAD", {waad}, Scale::kFromZero, false, "token"),
                    Chart("FAI", {fai}, Scale::kFromZero, false, "token"),
                    "<div class='tokens'><span class='prompt'>",
                    Escape(e["prompt"].get<std::string>()), "</span>");
    for (size_t t = 0; t < e["tokens"].size(); ++t) {
      std::string cls = "tok";
      if (wp.count(t)) cls += " wp";
      if (fp.count(t)) cls += " fp";
      if (static_cast<int64_t>(t) == e["top_fai"].get<int64_t>()) cls += " top";
      if (static_cast<int64_t>(t) == e["bottom_fai"].get<int64_t>()) cls += " bottom";
      absl::StrAppend(&html, "<span class='", cls, "'>", Escape(e["tokens"][t].get<std::string>()),
                      "</span>");
    }
    absl::StrAppend(&html, e["correct"].get<bool>() ? " &#10003;" : " &#10007;", "</div></div>");
  }
  absl::StrAppend(&html, "</body></html>\n");
  return html;
}

int RunAnalyze(const AnalyzeFlags& flags, const GenerateFlags& generate,
               const SftEvalFlags& sft_eval, v1::RhythmConfig config) {
  if (generate.model.empty()) return Fail("--model DIR is required");
  AnalysisOptions options;
  if (!absl::SimpleAtoi(sft_eval.n, &options.n) || options.n < 1) {
    return Fail("--n '" + sft_eval.n + "' must be >= 1");
  }
  if (!absl::SimpleAtoi(flags.alternatives, &options.alternatives) || options.alternatives < 1) {
    return Fail("--alternatives '" + flags.alternatives + "' must be >= 1");
  }
  if (!absl::SimpleAtoi(flags.examples, &options.examples) || options.examples < 0) {
    return Fail("--examples '" + flags.examples + "' must be >= 0");
  }
  if (absl::Status s = ApplyTaskFlag(sft_eval.task, config); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  // The paper's analysis samples at 0.7; --temperature or generation.temperature overrides.
  if (!config.generation().has_temperature()) config.mutable_generation()->set_temperature(0.7);
  if (absl::Status s = ApplyGenerateShortcuts(generate, config); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  ApplyTrainDefaults(config);  // the task's generation settings, as `rhythm train` uses them
  common::InitRuntime(config.runtime());
  auto loaded = common::model::LoadModelAndTokenizer(generate.model, config.model().tiny(),
                                                     config.runtime().seed());
  if (!loaded.ok()) return Fail(std::string(loaded.status().message()), 1);
  auto task = common::tasks::CreateTask(config.task(), config.runtime().seed());
  if (!task.ok()) return Fail(std::string(task.status().message()), 1);
  absl::StatusOr<json> a = Analyze(*loaded->model, *loaded->tokenizer, **task, options, config);
  if (!a.ok()) return Fail(std::string(a.status().message()), 1);
  (*a)["model"] = generate.model;
  const std::string out = generate.out.empty() ? "runs/analyze" : generate.out;
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) return Fail(absl::StrCat(out, ": cannot create: ", ec.message()), 1);
  for (const auto& [name, text] :
       {std::pair<std::string, std::string>{"analysis.json", a->dump(2) + "\n"},
        {"analysis.html", AnalysisHtml(*a)}}) {
    std::ofstream f(out + "/" + name);
    f << text;
    if (!f) return Fail(absl::StrCat(out, "/", name, ": cannot write"), 1);
  }
  const json& s = (*a)["statistics"]["local_max"];
  const json& pw = (*a)["perturbation"]["words"];
  std::cout << absl::StrFormat(
      "rhythm analyze: %d responses (%s correct, FAI defined on %s of tokens)\n"
      "  entropy at WAAD peaks %s vs %s over all tokens   (paper 0.361 vs 0.239)\n"
      "  FAI peaks at or after a WAAD peak %s vs %s shuffled   (paper 52.5%% vs 36.9%%)\n"
      "  perturbation word Jaccard top-FAI %s vs bottom-FAI %s, top changes more in %s  "
      "(paper 0.534 vs 0.631, 87.1%%)\n"
      "  wrote %s/analysis.json and %s/analysis.html (%.0f s)\n",
      (*a)["responses"].get<int64_t>(), Pct((*a)["correct"]), Pct((*a)["fai_defined"]),
      Fix(s["entropy_at_waad_peaks"]), Fix(s["entropy_all_tokens"]),
      Pct(s["fai_peaks_after_waad_peak"]), Pct(s["fai_peaks_after_waad_peak_baseline"]),
      Fix(pw["top_fai_mean_jaccard"]), Fix(pw["bottom_fai_mean_jaccard"]),
      Pct(pw["top_changes_more"]), out, out, (*a)["seconds"].get<double>());
  return 0;
}

}  // namespace rhythm::cli

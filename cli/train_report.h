// The record of one `rhythm train` run and its report. The orchestrator (cli/train.cc) fills
// it from the learner's /metrics and its own held-out scoring; this file turns it into
// metrics.csv lines, result.json's agreement figures and report.html.
//
//   learner /metrics ─ ScrapeLearner ─ RowFromScrape ─ TrainRow per observed version ─┐
//                                    └ AgreementRecord (credit.summary_agreement) ─────┤
//   held-out scoring of checkpoints ─ HeldOutPoint ────────────────────────────────────┤
//   the last dumped batch ─ RenderRollouts ────────────────────────────────────────────┴─
//   WriteTrainReport
//
// Everything is a pure function of its arguments except ScrapeLearner (one HTTP GET to
// localhost), RenderRollouts (reads the dump directory) and WriteTrainReport (writes one file).
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cli/sft_eval.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "rhythm/v1/config.pb.h"

namespace rhythm::cli {

// One observed learner version.
struct TrainRow {
  int64_t version = 0;
  double seconds = 0, reward = 0, accuracy = 0, loss = 0, clip = 0, kl = 0, entropy = 0,
         tokens_per_second = 0, staleness = 0, preplan = 0, anchor = 0, fai_defined = 0,
         amplified = 0;
  // credit.summary_agreement: the mean agreement of the rollouts trained since the previous
  // row, all staleness buckets pooled (NaN: none observed). Not in metrics.csv.
  double agree_waad = std::nan(""), agree_fai = std::nan(""), agree_jaccard = std::nan("");
  // learner.eval_every: the learner's latest evaluation of its own weights (eval_version -1:
  // none yet). Not in metrics.csv.
  int64_t eval_version = -1;
  double eval_pass1 = std::nan(""), eval_avg_at_k = std::nan("");
};

// One held-out measurement of a checkpoint (version 0: the warm-started model) on the first
// TrainSummary::subset held-out problems.
struct HeldOutPoint {
  int64_t version = 0;
  double seconds = 0;
  double greedy = 0;   // greedy pass@1
  double sampled = 0;  // pass@1 of samples at the actors' temperature
};

struct TrainSummary {
  EvalResult before, after;  // the full held-out evaluation (n problems)
  int64_t samples = 1;       // k
  int64_t subset = 0;        // problems in each checkpoint's evaluation
  double seconds = 0;
};

// Means over the run's rows of the credit statistics the learner exports.
struct RunCreditStats {
  double fai_defined = 0, preplan = 0, anchor = 0, amplified = 0, clip = 0, kl = 0;
};
RunCreditStats MeanCreditStats(const std::vector<TrainRow>& rows);

// The learner's /metrics on localhost:`port` as series (name with its labels) -> value; empty
// when it cannot be reached.
std::map<std::string, double> ScrapeLearner(int port);

// The row of `version` from one scrape (everything but the agreement).
TrainRow RowFromScrape(const std::map<std::string, double>& metrics, int64_t version,
                       double seconds);

// metrics.csv: one line per row and one per held-out point (the other kind's columns empty).
std::string CsvHeader();
std::string CsvLine(const TrainRow& row);
std::string CsvLine(const HeldOutPoint& point);

// The run's summary agreement (credit.summary_agreement), from successive scrapes of the
// learner's rhythm_learner_summary_agreement histogram and fp16 error-ratio gauges.
class AgreementRecord {
 public:
  // Sets `row`'s agree_* to the mean over the rollouts trained since the previous Observe, and
  // keeps the largest error ratio seen per series.
  void Observe(const std::map<std::string, double>& metrics, TrainRow& row);
  // Per staleness bucket over the run: rollouts compared, the mean of each measure, the largest
  // error ratio of any observed step (scrapes every 0.5 s can miss a step's maximum; the means
  // are exact), and rollouts whose head split differed.
  nlohmann::json Json() const;
  // One line per bucket with rollouts, for the end of the run.
  std::string Text() const;

 private:
  std::map<std::string, std::pair<double, double>> before_;  // pooled (sum, count) per measure
  std::map<std::string, double> last_, worst_ratio_;
};

// A few responses of the last dumped batch, each token shaded by WAAD (blue) and FAI (orange);
// preplan tokens underlined, anchors boxed.
std::string RenderRollouts(const std::string& dump_dir, const common::Tokenizer& tokenizer,
                           const v1::RhythmConfig& config);

// report.html: the held-out table and curve, the training curves, the credit and agreement
// charts, the learner's own evaluations (learner.eval_every), and `rollouts_html`.
void WriteTrainReport(const std::string& path, const std::vector<TrainRow>& rows,
                      const std::vector<HeldOutPoint>& heldout, const TrainSummary& summary,
                      const std::string& rollouts_html, const v1::RhythmConfig& config);

}  // namespace rhythm::cli

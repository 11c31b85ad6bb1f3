// `rhythm shape`: token-level credit for a JSONL file of responses (format:
// common/credit/shape_jsonl.h), with the learner's exact functions. Lets users inspect what the
// paper's strategies do to their own data, and is what the learner's --dump-rollouts feeds.
#pragma once

#include <string>

#include "common/flags.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::cli {

struct ShapeFlags {
  std::string input;
  std::string output = "-";
  std::string strategy, q, gamma, alpha, k;
};

// Registers --input, --output and the shortcuts --strategy --q --gamma --alpha --k (each is the
// config key credit.strategy, credit.quantile, credit.gamma_amp, credit.alpha, credit.lookback,
// with the same validation). The random strategy's seed is runtime.seed (--seed in main).
void RegisterShapeFlags(common::FlagParser& parser, ShapeFlags& flags);

// Runs the job; prints a one-line summary and every malformed line to stderr. Returns the exit
// code: 0 when every line was shaped, 1 when some were malformed (the rest is still written),
// 2 for bad flags or an unreadable input.
int RunShape(const ShapeFlags& flags, v1::RhythmConfig config);

}  // namespace rhythm::cli

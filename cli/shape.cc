#include "cli/shape.h"

#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>

#include "absl/strings/str_format.h"
#include "common/config.h"
#include "common/credit/shape_jsonl.h"

namespace rhythm::cli {

void RegisterShapeFlags(common::FlagParser& parser, ShapeFlags& flags) {
  parser.AddString("input", "FILE", "shape: JSONL responses to shape ('-' = stdin)", &flags.input);
  parser.AddString("output", "FILE", "shape: where to write the shaped JSONL ('-' = stdout)",
                   &flags.output);
  parser.AddString("strategy", "S",
                   "shape: none|random|entropy|local_chunk|global_anchor|coupled "
                   "(= --set credit.strategy=S)",
                   &flags.strategy);
  parser.AddString("q", "Q", "shape: top fraction of tokens (= credit.quantile)", &flags.q);
  parser.AddString("gamma", "G", "shape: multiplier of selected tokens (= credit.gamma_amp)",
                   &flags.gamma);
  parser.AddString("alpha", "A", "shape: share passed to introductory tokens (= credit.alpha)",
                   &flags.alpha);
  parser.AddString("k", "K", "shape: look-back for introductory tokens (= credit.lookback)",
                   &flags.k);
}

int RunShape(const ShapeFlags& flags, v1::RhythmConfig config) {
  const std::pair<const char*, const std::string*> shortcuts[] = {
      {"credit.strategy", &flags.strategy},
      {"credit.quantile", &flags.q},
      {"credit.gamma_amp", &flags.gamma},
      {"credit.alpha", &flags.alpha},
      {"credit.lookback", &flags.k}};
  for (const auto& [key, value] : shortcuts) {
    if (value->empty()) continue;
    if (absl::Status s = common::ApplyOverride(std::string(key) + "=" + *value, config); !s.ok()) {
      std::cerr << "rhythm shape: " << s.message() << "\n";
      return 2;
    }
  }
  if (flags.input.empty()) {
    std::cerr << "rhythm shape: --input FILE is required\n";
    return 2;
  }
  std::ifstream in_file;
  if (flags.input != "-") {
    in_file.open(flags.input);
    if (!in_file) {
      std::cerr << "rhythm shape: cannot read '" << flags.input << "'\n";
      return 2;
    }
  }
  std::ofstream out_file;
  if (flags.output != "-") {
    out_file.open(flags.output);
    if (!out_file) {
      std::cerr << "rhythm shape: cannot write '" << flags.output << "'\n";
      return 2;
    }
  }
  std::istream& in = flags.input == "-" ? std::cin : in_file;
  std::ostream& out = flags.output == "-" ? std::cout : out_file;

  common::credit::ShapeOptions options;
  const v1::CreditConfig& c = config.credit();
  options.credit = common::credit::TokenCreditOptionsFromConfig(c);
  options.credit.seed = config.runtime().seed();
  options.advantage.estimator = c.advantage();
  options.advantage.eps = c.advantage_eps();
  options.shape_negative = c.shape_negative();

  const auto start = std::chrono::steady_clock::now();
  const common::credit::ShapeStats stats = common::credit::ShapeStream(in, out, std::cerr, options);
  out.flush();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cerr << absl::StrFormat(
      "rhythm shape: %d responses shaped (%s), %d malformed, %d groups (%d zero-variance) in "
      "%.2f s\n",
      stats.responses, common::EnumShortName(v1::CreditStrategy_descriptor(), c.strategy()),
      stats.malformed, stats.groups, stats.zero_variance_groups, seconds);
  if (!out) {
    std::cerr << "rhythm shape: writing the output failed\n";
    return 2;
  }
  return stats.malformed == 0 ? 0 : 1;
}

}  // namespace rhythm::cli

// `rhythm shape`'s file format, and the streaming job that shapes a whole file.
//
// Input: one JSON object per line and per response:
//   {"group": 17, "reward": 1.0, "waad": [..T..], "fai": [..T.., null where undefined],
//    "entropy": [..T..], "logprobs": [..T..]}            ("logprobs" optional; extra keys ignored)
// "group" (a number or a string) ties the G responses of one prompt together; a group's
// responses need not be adjacent. This is the rollout JSON-lines format
// (common/rollout/rollout_jsonl.h), which the learner's --dump-rollouts writes.
//
// Output: one JSON object per valid input line, in input order:
//   {"line": 3, "group": 17, "reward": 1.0, "advantage": 0.93, "zero_variance_group": false,
//    "gamma": [..T..], "shaped": [..T..], "preplan": [idx..], "anchor": [idx..],
//    "dominated": [idx..], "introductory": [idx..]}
// A malformed line is reported as "line N: <field>: <problem>" on the error stream, counted,
// and skipped; the rest of the file is still processed.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/credit/advantages.h"
#include "common/credit/token_credit.h"
#include "common/rollout/rollout_jsonl.h"

namespace rhythm::common::credit {

// One input line: the rollout JSON-lines format (common/rollout/rollout_jsonl.h), whose reader
// this is.
using ShapeRecord = rollout::RolloutLine;

// Parses one input line. INVALID_ARGUMENT "line N: <field>: <problem>" when malformed.
inline absl::StatusOr<ShapeRecord> ParseShapeRecord(absl::string_view text, int64_t line) {
  return rollout::ParseRolloutLine(text, line);
}

struct ShapeOptions {
  TokenCreditOptions credit;         // credit.seed is the run seed, mixed with the line number
  GroupAdvantageOptions advantage;
  bool shape_negative = true;
};

struct ShapeStats {
  int64_t lines = 0;        // non-empty input lines
  int64_t responses = 0;    // lines shaped and written
  int64_t malformed = 0;    // lines reported and skipped
  int64_t groups = 0;
  int64_t zero_variance_groups = 0;
};

// Reads `in` to the end, writes shaped records to `out` and one line per malformed input line
// to `errors`. Never fails on bad lines; returns the counts.
ShapeStats ShapeStream(std::istream& in, std::ostream& out, std::ostream& errors,
                       const ShapeOptions& options);

}  // namespace rhythm::common::credit

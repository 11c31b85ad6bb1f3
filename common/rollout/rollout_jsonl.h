// The rollout JSON-lines format: one writer and one reader, side by side. The learner's
// --dump-rollouts files (learner/rollout_dump.h) are written with ToRolloutLine; `rhythm shape`
// (common/credit/shape_jsonl.h), `rhythm train`'s report and the fault audit read them with
// ParseRolloutLine. One JSON object per line and per response:
//
//   {"group": 17, "rollout_id": 4, "actor_id": "a", "run_id": "r", "reward": 1.0,
//    "prompt_ids": [..], "response_ids": [..T..], "logprobs": [..T..], "entropy": [..T..],
//    "waad": [..T..], "fai": [..T.., null where undefined]}
//
// Required: "group" (an integer or a string: it ties a prompt's G responses together),
// "reward" (finite), "waad", "fai", "entropy" (same length T >= 1). Optional: the ids,
// "logprobs" (length T when present), the token ids. Extra keys are ignored.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::common::rollout {

struct RolloutLine {
  int64_t line = 0;      // 1-based line number in the input
  std::string group;     // the "group" value as JSON text (17 or "p17")
  uint64_t rollout_id = 0;  // 0 when absent
  std::string actor_id, run_id;
  double reward = 0;
  std::vector<double> waad;
  std::vector<double> fai;  // NaN where the input had null
  std::vector<double> entropy;
  std::vector<double> logprobs;  // empty when absent
  std::vector<int32_t> prompt_ids, response_ids;
};

// One rollout as a line (no newline). A rollout without a summary has empty "waad" and "fai"
// (it cannot be read back: the reader requires them).
std::string ToRolloutLine(const v1::Rollout& rollout);

// Parses one line. INVALID_ARGUMENT "line N: <field>: <problem>" when malformed.
absl::StatusOr<RolloutLine> ParseRolloutLine(absl::string_view text, int64_t line);

}  // namespace rhythm::common::rollout

// The learner's --dump-rollouts files: every batch it trains, one JSON line per rollout, in
// <dir>/step-<step, 8 digits>.jsonl (the step is the version the batch trains to). A line:
//   {"group", "rollout_id", "actor_id", "run_id", "reward", "prompt_ids", "response_ids",
//    "logprobs" (behaviour), "entropy", "waad", "fai" (null where undefined)}
// Written for analysis and audits (tests/fault_audit.h reads them); nothing reads them back
// into the learner.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "learner/batch_assembler.h"

namespace rhythm::learner {

// Writes (replaces) the step's file, creating `dir` if needed. INTERNAL naming the path when
// it cannot be written.
absl::Status DumpBatch(const std::string& dir, const std::vector<Group>& batch, int64_t step);

}  // namespace rhythm::learner

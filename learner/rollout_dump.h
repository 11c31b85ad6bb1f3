// The learner's --dump-rollouts files: every batch it trains, one line per rollout in the
// rollout JSON-lines format (common/rollout/rollout_jsonl.h, whose ParseRolloutLine reads them
// back), in <dir>/step-<step, 8 digits>.jsonl (the step is the version the batch trains to).
// Written for analysis and audits (`rhythm shape`, `rhythm train`'s report, tests/fault_audit.h);
// nothing reads them back into the learner.
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

// Arithmetic: multi-digit addition, and multiplication when enabled, with an exact-answer
// verifier. The simplest task for a character-level model trained from scratch.
//
// Formats (default difficulty: 2-digit operands, addition only):
//   prompt     "<a>+<b>=" or "<a>*<b>="   e.g. "47+38="   (at most 2 * digits + 2 characters)
//   answer     the result in decimal      e.g. "85"
//   reference  the same text              e.g. "85"       (no newline)
// Operands have exactly `digits` digits (for digits == 1: 0..9), drawn uniformly; with
// multiplication on, each problem is + or * with probability 1/2. "47+38=" and "38+47=" are the
// same problem for the held-out/training split. The held-out split is capped at half of the
// distinct problems (e.g. 1-digit addition has 55, so at most 27 are held out), with a warning.
//
// Verifier: the completion's first line (up to '\n'), with surrounding whitespace stripped, must
// equal the answer exactly ("085" and "85.0" are wrong). Rewards: 1.0 correct, 0.0 otherwise.
// parsed == that text is a decimal integer (optional '-', digits); extracted_answer == that text.
// A malformed `answer` (not such an integer, or longer than 64 characters) scores 0, unparsed.
//
// Thread-safety: the free function is stateless; the task is immutable (see task.h).
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tasks/task.h"
#include "rhythm/v1/config.pb.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::common::tasks {

// The verifier (Task::Verify of the arithmetic task), usable without a task.
v1::VerifierResult VerifyArithmetic(absl::string_view answer, absl::string_view completion);

// The arithmetic task. INVALID_ARGUMENT if config.digits() is outside [1, 18].
absl::StatusOr<std::unique_ptr<Task>> CreateArithmeticTask(const v1::ArithmeticConfig& config,
                                                           uint64_t heldout_size, uint64_t seed);

}  // namespace rhythm::common::tasks

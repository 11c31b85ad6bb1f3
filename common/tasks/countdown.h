// Countdown: reach a target from a few numbers with + - * / and parentheses (the paper's task,
// TinyZero's protocol, except that a number need not be used: see "Rules").
//
// This file is the expression format (CountdownConfig.format = expression, the default): one
// line per completion. The steps format (format = steps), with the same prompts and answers but
// multi-line traces "20+7=27\n27*3=81\nback\n..." over targets that need every number, is in
// countdown_steps.h; CountdownTask dispatches on the format.
//
// Formats (default difficulty: 3 numbers in [1, 20], targets in [1, 100]):
//   prompt     "<n1> <n2> ... -> <target>\n"     e.g. "3 7 20 -> 27\n"     (13 characters)
//   answer     "<n1>,<n2>,...|<target>"          e.g. "3,7,20|27"
//   reference  the shortest expression found     e.g. "7+20"               (no newline)
// The numbers are listed in the order drawn (unsorted) and may repeat.
//
// Rules for a completion:
//   - The expression is the completion's first line (up to the first '\n' or the end; the actor
//     has stripped EOS). Anything after a newline is ignored.
//   - Tokens: decimal integers, + - * / ( ), and whitespace (space, tab, carriage return) between
//     them. Any other character is a syntax error. Numbers are written canonically: no sign, no
//     leading zero ("07" is rejected), at most 18 digits. There is no unary minus ("-3", "2*-3"
//     are syntax errors), so every intermediate must be built from offered numbers.
//   - Precedence: * / bind tighter than + -; operators of equal precedence group to the left.
//   - Each number used must be offered, and used at most as many times as it is offered (the
//     offered numbers are a multiset). Using all of them is not required.
//   - Evaluation is exact rational arithmetic: 7/2*2 == 7. Division by zero anywhere (e.g.
//     "5/(3-3)") makes the expression wrong.
//
// Rewards (TinyZero's scheme):
//   1.0  correct: valid numbers and the value equals the target
//   0.1  format: well-formed, only offered numbers within their multiplicity, a defined value,
//        but not the target
//   0.0  anything else: empty, syntax error, a number not offered or reused, division by zero,
//        or a malformed `answer`
// parsed == the first line is a well-formed expression; extracted_answer == that line, trimmed.
//
// Generator. A problem draws num_numbers integers uniformly from [1, max_number] (with
// replacement), then a target uniformly among the integers in [1, max_target] that some
// expression over the numbers reaches, excluding the offered numbers themselves (so at least two
// numbers are needed); a draw that reaches none is redrawn. Every problem is therefore solvable,
// and the reference solution is a shortest expression for it (fewest characters, minimal
// parentheses). Two problems with the same numbers in another order and the same target are
// the same problem for the held-out/training split.
//
// Cost of one draw (the solver enumerates every expression over every subset, keeping per value
// only expressions that could still be the shortest), measured on this project's 2-core Xeon
// dev VM: 3 numbers ~10 us, 4 numbers ~0.1 ms, 5 numbers ~2 ms, 6 numbers 45-65 ms. CreateTask
// draws the held-out split up front: with 200 held-out problems ~3 ms for 3 numbers, ~20 ms
// for 4, ~0.3 s for 5 and ~10 s for 6.
//
// Thread-safety: the free functions are stateless; the task is immutable (see task.h).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tasks/rational.h"
#include "common/tasks/task.h"
#include "rhythm/v1/config.pb.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::common::tasks {

inline constexpr double kCountdownFormatReward = 0.1;

// A countdown problem as its `answer` text encodes it.
struct CountdownSpec {
  std::vector<int64_t> numbers;  // the offered multiset, in prompt order
  int64_t target = 0;
};

// Bounds on `answer` text accepted by ParseCountdownAnswer (looser than the config's).
inline constexpr int kMaxCountdownNumbers = 16;
inline constexpr int64_t kMaxCountdownNumber = 1000000000;  // 10^9

// "3,7,20|27" -> {{3, 7, 20}, 27}. INVALID_ARGUMENT unless the text is 1..16 comma-separated
// canonical decimal integers in [0, 10^9], '|', and an integer in [-10^18, 10^18] (no spaces).
absl::StatusOr<CountdownSpec> ParseCountdownAnswer(absl::string_view answer);
std::string FormatCountdownAnswer(const CountdownSpec& spec);

// One expression, parsed and evaluated.
struct CountdownExpression {
  std::vector<int64_t> numbers;  // the numbers used, in order of appearance
  // The exact value; nullopt if evaluation divided by zero or overflowed (see `error`).
  std::optional<Rational> value;
  std::string error;  // "division by zero" or "overflow" when value is nullopt
};

// Parses and evaluates `expression` (all of it: no newline handling; a '\n' is a syntax error)
// with the rules above. INVALID_ARGUMENT "<what> at position <byte offset>" on a syntax error.
// Iterative (shunting-yard), so any nesting depth is fine; time and memory are linear.
absl::StatusOr<CountdownExpression> ParseCountdownExpression(absl::string_view expression);

// The verifier (Task::Verify of the countdown task), usable without a task.
v1::VerifierResult VerifyCountdown(absl::string_view answer, absl::string_view completion);

struct CountdownSolution {
  int64_t target = 0;
  std::string expression;  // shortest found for this target
};

// Every integer in [lo, hi] that an expression over `numbers` (each used at most once, any
// subset, including single numbers) evaluates to, ascending, each with a shortest expression:
// fewest characters when written with minimal parentheses; among equally short ones, the first
// found in a fixed enumeration order, so the result is deterministic. Intermediate values may be
// fractions or negative. numbers.size() must be in [1, 6] and the numbers in [0, 10^6] (else the
// result is empty).
std::vector<CountdownSolution> SolveCountdown(const std::vector<int64_t>& numbers, int64_t lo,
                                              int64_t hi);

// The countdown task. INVALID_ARGUMENT if `config` is outside the proto's bounds.
absl::StatusOr<std::unique_ptr<Task>> CreateCountdownTask(const v1::CountdownConfig& config,
                                                          uint64_t heldout_size, uint64_t seed);

}  // namespace rhythm::common::tasks

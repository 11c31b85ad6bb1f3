// Countdown, steps format (CountdownConfig.format = COUNTDOWN_FORMAT_STEPS): the same problems
// as countdown.h, answered by a multi-step trace instead of one expression, so that a response
// is ~30-150 characters (tokens, with the character tokenizer) and token-level credit has
// something to act on.
//
// Formats (4 numbers in [1, 20], targets in [1, 100]):
//   prompt     "<n1> <n2> ... -> <target>\n"   e.g. "14 2 16 11 -> 42\n"   (as countdown.h)
//   answer     "<n1>,<n2>,...|<target>"        e.g. "14,2,16,11|42"        (as countdown.h)
//   reference  dead ends, then a solution      e.g. "16/2=8\n14*11=154\n154*8=1232\nback\n"
//                                                    "11+2=13\n16-13=3\n14*3=42"
//              (one string, no trailing newline; see "Reference trace")
//
// Grammar of a completion (EOS already stripped):
//   completion := line ( "\n" line )* [ "\n" ]        at most 64 lines
//   line       := step | "back"
//   step       := number op number "=" number         no spaces, nothing else on the line
//   op         := "+" | "-" | "*" | "/"
//   number     := "0" | [1-9][0-9]*                   canonical, at most 18 digits
// Only the one '\n' at the very end is tolerated; an empty line elsewhere, '\r', spaces or any
// other byte is a syntax error.
//
// Semantics. The verifier keeps a pool, a multiset of numbers that starts as the offered ones.
// A step a op b = c is valid iff a and b are in the pool (as a multiset: "5*5=25" needs two 5s)
// and c is exactly a op b as a non-negative integer: a-b needs a >= b, a/b needs b != 0 and b
// dividing a, and a result over 10^18 is an overflow. A valid step removes a and b from the
// pool and adds c, so later steps refer back to earlier results. "back" abandons the attempt:
// the pool is reset to the offered numbers.
//
// Rewards (TinyZero's scheme):
//   1.0  correct: every line valid and the last line is a step whose result is the target
//   0.1  format (kCountdownFormatReward): every line valid and at least one step, but the last
//        line is not a step reaching the target (it is "back", or its result is another value)
//   0.0  anything else: empty, a syntax error, a number not in the pool (or used more often than
//        it is there), wrong arithmetic, a negative or fractional result, division by zero,
//        overflow, no step at all, more than 64 lines, or a malformed `answer`
// parsed == every line is syntactically well-formed (false for more than 64 lines, which are
// not parsed); extracted_answer == the last line, trimmed. `detail` names the first problem
// and its 1-based line: "line 2: 27*3=80 but 27*3 is 81", "line 3: uses 9, which is not in the
// pool {3, 5, 81}". Linear in the completion's length (at most 64 lines are examined).
//
// Generator. A problem draws num_numbers integers uniformly from [1, max_number] (with
// replacement), then walks a random full path: num_numbers-1 steps, each drawn uniformly from
// the valid steps over the current pool that are not trivial (a result equal to one of its own
// operands: x*1, x/1, x+0, x-0, 0*x, ...) and not 0 (a 0 can only be consumed by a trivial
// step, so it would dead-end the path). Its final result is the target, accepted only if it is
// in [1, max_target], is not an offered number, and is not reachable by any valid step sequence
// (trivial ones included) over fewer than all the numbers; otherwise the problem is redrawn.
// Every number is therefore needed, and the path is the reference's solution. Two problems with
// the same numbers in another order and the same target are the same problem for the held-out/
// training split (as countdown.h); the task fingerprint includes the format and max_dead_ends,
// so ids differ from the expression format's.
//
// Reference trace. d dead ends, d uniform in [0, max_dead_ends] (from the problem's own
// generator, so deterministic), each a random full path (as above) none of whose results is the
// target, followed by "back"; then the solution path. Measured over 1000 training problems
// (4 numbers in [1, 20], targets in [1, 100], seed 42), length in characters:
//   max_dead_ends = 2 (default): min 18, mean 52.6, max 103.
//   max_dead_ends = 3:           min 17, mean 69.4, max 137.
// (An attempt is num_numbers-1 lines of 5-15 characters; "back" adds 5.)
//
// Cost, measured on this project's 2-core Xeon dev VM, numbers in [1, 20] (a draw is rejected
// unless its target is in range and needs every number; most rejections are targets that fewer
// numbers reach, found early because the reachable sets are built smallest subsets first):
//   4 numbers, targets <= 100:  ~4 draws a problem (76% rejected), ~10 us a problem
//   5 numbers, targets <= 100:  ~38 draws (97% rejected), ~0.2 ms; targets <= 1000: ~7 draws,
//                               ~60 us
//   6 numbers, targets <= 100:  ~5000 draws (most targets that small are reachable from 5 of the
//                               numbers), 5-45 ms; targets <= 1000: ~70 draws, ~2.5 ms
// CreateTask with 200 held-out problems: ~2 ms for 4 numbers, ~40 ms for 5, ~1 s for 6.
//
// Thread-safety: the free functions are stateless (an Rng argument is the caller's).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/tasks/countdown.h"
#include "common/tasks/task_util.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::common::tasks {

inline constexpr int kMaxCountdownStepsLines = 64;
// Results above this are an overflow.
inline constexpr int64_t kMaxCountdownStepsValue = 1000000000000000000LL;  // 10^18

// One step a op b = c.
struct CountdownStep {
  int64_t a = 0;
  char op = '+';
  int64_t b = 0;
  int64_t c = 0;
};

// "a<op>b=c".
std::string FormatCountdownStep(const CountdownStep& step);

// a op b under the steps rules: a non-negative integer at most 10^18, or nullopt (negative,
// fractional, division by zero, overflow). a and b must be non-negative.
std::optional<int64_t> ApplyCountdownStepOp(int64_t a, char op, int64_t b);

// The verifier (Task::Verify of the countdown task in the steps format), usable without a task.
v1::VerifierResult VerifyCountdownSteps(absl::string_view answer, absl::string_view completion);

// reachable[mask]: every value some valid step sequence combining exactly the numbers in `mask`
// (bit k: numbers[k]) reaches, ascending; reachable[1 << k] == {numbers[k]}; reachable[0] is
// empty. Trivial steps count. Intermediate values are non-negative integers at most 10^18.
// numbers.size() must be in [1, 6] and the numbers in [0, 10^6] (else the result is empty).
// Exponential in numbers.size() (the full mask dominates); for the generator use
// CountdownStepsNeedsAll, which never builds the largest sets.
std::vector<std::vector<int64_t>> CountdownStepsReachable(const std::vector<int64_t>& numbers);

// Whether `target` is reachable (as above) using fewer than all of `numbers`: from a proper
// non-empty subset. Same preconditions as CountdownStepsReachable (true if they fail, so that a
// caller rejects the draw). Builds the sets of subsets of size <= n-2 and checks those of size
// n-1 by solving for the missing operand.
bool CountdownStepsReachableWithFewer(const std::vector<int64_t>& numbers, int64_t target);

// A random full path over `numbers`: numbers.size()-1 steps, each uniform among the valid,
// non-trivial steps with a non-zero result over the current pool (commutative operands in random
// order), none of whose results equals `avoid` (pass -1 to allow any). nullopt if at some point
// no step qualifies.
std::optional<std::vector<CountdownStep>> RandomCountdownStepsPath(
    const std::vector<int64_t>& numbers, int64_t avoid, internal::Rng& rng);

// A steps-format problem: the numbers, the target and the solution path.
struct CountdownStepsProblem {
  CountdownSpec spec;
  std::vector<CountdownStep> solution;
};

// One draw of the generator above; nullopt when the draw is rejected (draw again from the same
// rng). num_numbers in [2, 6], max_number in [1, 1000], max_target >= 1.
std::optional<CountdownStepsProblem> DrawCountdownStepsProblem(int num_numbers, int max_number,
                                                               int max_target, internal::Rng& rng);

// The reference trace: `dead_ends` random full paths avoiding the target, each followed by
// "back", then `problem.solution`, joined with '\n', no trailing newline. A dead end that cannot
// be drawn in 100 tries is left out (only for degenerate pools).
std::string WriteCountdownStepsTrace(const CountdownStepsProblem& problem, int dead_ends,
                                     internal::Rng& rng);

}  // namespace rhythm::common::tasks

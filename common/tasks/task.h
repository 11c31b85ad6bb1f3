// Tasks: where prompts come from and how completions are scored.
//
// README. A task hands out problems (a prompt, the text its verifier needs, and one correct
// completion) and scores completions with a verifier. Three kinds (TaskConfig.kind):
//
//   countdown   prompt "3 7 20 -> 27\n"        answer "3,7,20|27"   reference "7+20"
//               The completion is an arithmetic expression over the offered numbers (each at
//               most as often as offered), + - * / and parentheses, equal to the target in exact
//               rational arithmetic. Details and rewards (1.0 / 0.1 format / 0.0): countdown.h.
//               With countdown.format = steps the completion is instead a multi-line trace of
//               steps over a pool ("20+7=27\n27*3=81", "back" to restart) whose last step reaches
//               the target, and the target needs every number: countdown_steps.h.
//   arithmetic  prompt "47+38=" (or "47*38=")  answer "85"          reference "85"
//               Exact answer; reward 1.0 / 0.0. Details: arithmetic.h.
//   jsonl       a user's file, one {"prompt": "...", "answer": "..."} per line
//               prompt and answer verbatim; reference "Answer: <answer>" (the configured marker).
//               Maths verifier: last \boxed{...}, else text after the last answer marker,
//               compared by value (integers, decimals, fractions, simple LaTeX); 1.0 / 0.0.
//               Details: jsonl_task.h and math_answer.h.
//
// Completions end where the model emitted EOS; the actor strips EOS before calling Verify. The
// countdown (expression format) and arithmetic verifiers read only the first line of a
// completion, the countdown steps verifier every line; no reference solution carries a trailing
// newline. The built-in prompts and answers are short printable ASCII (covered by
// CharTokenizer::DefaultAlphabet()) so that a tiny character-level model can learn them from
// scratch.
//
// Splits. Every task has a fixed held-out split [0, heldout_size()) for evaluation and an
// unbounded training stream TrainProblem(0), TrainProblem(1), ... that never yields a held-out
// problem (for countdown and arithmetic not even a reordering of one: see countdown.h,
// arithmetic.h). Problem ids carry the split in their top bit (held-out ids have it set), so a
// training id never equals a held-out id.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rhythm/v1/config.pb.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::common::tasks {

// Held-out ids have this bit set, training ids do not.
inline constexpr uint64_t kHeldOutIdBit = uint64_t{1} << 63;

struct Problem {
  // Stable: the same (task config, seed, split, index) gives the same id in every process.
  // Training and held-out ids never collide (kHeldOutIdBit); within a split, ids are 63-bit
  // hashes (for jsonl, of the file's contents and the line number, so training indices that
  // map to the same line share an id).
  uint64_t id = 0;
  // What the model sees. Format per task: see the top of this file.
  std::string prompt;
  // What the verifier needs (task-defined text), passed back to Task::Verify.
  std::string answer;
  // A correct completion (without EOS) that Verify scores as correct: for a supervised warm
  // start and for tests.
  std::string reference_solution;
};

// A source of problems and their verifier.
//
// Thread-safety: immutable after creation; every method is const and safe to call from any
// number of threads at once.
class Task {
 public:
  virtual ~Task() = default;

  // "countdown", "arithmetic" or "jsonl".
  virtual absl::string_view name() const = 0;

  // The index-th training problem: deterministic in (config, seed, index); never one of the
  // held-out problems. Any index is valid.
  virtual Problem TrainProblem(uint64_t index) const = 0;

  // Held-out problem `index`, for index in [0, heldout_size()): fixed for (config, seed),
  // disjoint from training. An index past the end wraps around (index % heldout_size()); with
  // heldout_size() == 0 it returns an empty Problem.
  virtual Problem HeldOutProblem(uint64_t index) const = 0;

  // Number of held-out problems. Can be smaller than TaskConfig.heldout_size when the problem
  // space or the dataset is small; warnings() then says so.
  virtual uint64_t heldout_size() const = 0;

  // Scores `completion` (EOS already stripped) against a problem's `answer`. Never crashes or
  // throws, on any bytes; the reward is always finite, and every string in the result is valid
  // UTF-8 (invalid bytes from the completion become U+FFFD) and at most a few hundred bytes, so
  // the result can be serialized and sent as is. A malformed `answer` scores 0 with parsed ==
  // false and a detail saying so.
  virtual v1::VerifierResult Verify(absl::string_view answer,
                                    absl::string_view completion) const = 0;

  // What CreateTask noticed but did not treat as fatal (malformed dataset lines, a reduced
  // held-out split), one message per entry, for the caller to log. Empty by default.
  virtual const std::vector<std::string>& warnings() const;
};

// Builds the task `config.kind` describes. `seed` (runtime.seed) fixes the generated problems
// of both splits unless `config.seed` is set (non-zero), which then wins; the jsonl task ignores
// both (its order is the file's).
// Errors: INVALID_ARGUMENT for TASK_KIND_UNSPECIFIED or an unknown kind, for a countdown or
// arithmetic config out of the proto's bounds or whose problem space is too small to leave any
// training problem, and for a jsonl file with no valid line; NOT_FOUND / FAILED_PRECONDITION if
// the jsonl file is missing or unreadable. Cost: the held-out split is generated eagerly
// (countdown with the default difficulty: ~3 ms for 200 problems; see countdown.h for harder
// settings); the jsonl file is read whole.
absl::StatusOr<std::unique_ptr<Task>> CreateTask(const v1::TaskConfig& config, uint64_t seed);

}  // namespace rhythm::common::tasks

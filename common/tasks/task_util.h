// Internals shared by the tasks: portable hashing and random numbers (the same in every process
// and standard library, unlike absl::Hash, which is seeded per process, or std::
// uniform_int_distribution, whose algorithm is unspecified), problem ids, text helpers for
// verifiers, and GeneratedTask, the held-out/training split logic of the generated tasks.
//
// Thread-safety: the free functions are stateless; Rng is a value type for one thread;
// GeneratedTask is immutable after Init and then safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/tasks/task.h"

namespace rhythm::common::tasks::internal {

// SplitMix64's finaliser: a bijection on 64-bit values with good avalanche.
uint64_t Mix64(uint64_t x);
// Order-dependent combination of a running hash with one more value.
uint64_t HashCombine(uint64_t h, uint64_t value);
// FNV-1a over the bytes, then Mix64. Stable across processes and platforms.
uint64_t HashBytes(absl::string_view bytes);

// A small deterministic generator (SplitMix64 stream).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  // Uniform in [0, n), unbiased (rejection); n > 0.
  uint64_t Below(uint64_t n);
  // Uniform in [lo, hi]; lo <= hi.
  int64_t Between(int64_t lo, int64_t hi);

 private:
  uint64_t state_;
};

enum class Split { kTrain, kHeldOut };

// `fingerprint` hashes the task's config and seed; the split goes into the top bit.
uint64_t ProblemId(uint64_t fingerprint, Split split, uint64_t index);

// `text` with every invalid UTF-8 sequence replaced by U+FFFD and cut to at most `max_bytes`
// (on a character boundary; "..." appended when cut). NUL bytes are kept (valid UTF-8).
std::string SanitizeUtf8(absl::string_view text, size_t max_bytes = 200);

// Strips ASCII spaces, tabs, carriage returns, newlines, vertical tabs and form feeds.
absl::string_view TrimAsciiWhitespace(absl::string_view text);

// The text before the first '\n' (all of it if there is none).
absl::string_view FirstLine(absl::string_view text);

// A verifier result with every string field sanitised (SanitizeUtf8).
v1::VerifierResult MakeResult(double reward, bool correct, bool parsed, absl::string_view extracted,
                              absl::string_view detail);

// What a generated task's generator draws.
struct Generated {
  std::string prompt;
  std::string answer;
  std::string reference_solution;
  // Identifies the problem up to presentation (countdown: sorted numbers and target;
  // arithmetic: operator and sorted operands). Two draws with the same key are the same problem
  // for the purpose of keeping held-out problems out of training.
  std::string key;
};

// Held-out and training splits for tasks whose problems come from a random generator.
//
// Held-out: draws from the stream (seed, "held-out", j) for j = 0, 1, ..., keeping the first
// heldout_size distinct keys. Training index i: draws from the stream (seed, "train", i) until
// a draw's key is not held out. Ids: ProblemId(fingerprint, split, index).
class GeneratedTask : public Task {
 public:
  Problem TrainProblem(uint64_t index) const final;
  Problem HeldOutProblem(uint64_t index) const final;
  uint64_t heldout_size() const final { return heldout_.size(); }
  const std::vector<std::string>& warnings() const final { return warnings_; }

 protected:
  GeneratedTask(uint64_t seed, uint64_t fingerprint) : seed_(seed), fingerprint_(fingerprint) {}

  // One draw: a problem, or nullopt when this draw of the generator's parameters admits none
  // (the caller draws again from the same rng). Must be deterministic in the rng's state.
  virtual std::optional<Generated> Generate(Rng& rng) const = 0;

  // Builds the held-out split; call once from the factory. `space_size` is the exact number of
  // distinct keys when known (0 if unknown). The split is capped at half the problem space
  // (known, or estimated when draws stop finding new keys), with a warning, so that training
  // keeps at least as many problems. INVALID_ARGUMENT if no training problem can be drawn.
  absl::Status Init(uint64_t requested_heldout, uint64_t space_size);

 private:
  // Total draws per problem before giving up (training then returns fallback_).
  static constexpr int kMaxDraws = 100000;

  uint64_t seed_;
  uint64_t fingerprint_;
  std::vector<Generated> heldout_;
  absl::flat_hash_set<std::string> heldout_keys_;
  // A training problem found at creation, returned if a training index ever exhausts kMaxDraws
  // (only a generator that almost never yields a problem outside the held-out split could; this
  // keeps TrainProblem total without an error path).
  Generated fallback_;
  std::vector<std::string> warnings_;
};

}  // namespace rhythm::common::tasks::internal

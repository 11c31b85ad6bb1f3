#include "common/tasks/arithmetic.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/tasks/rational.h"
#include "common/tasks/task_util.h"

namespace rhythm::common::tasks {
namespace {

bool IsInteger(absl::string_view text) {
  if (!text.empty() && text[0] == '-') text.remove_prefix(1);
  if (text.empty()) return false;
  return std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

class ArithmeticTask final : public internal::GeneratedTask {
 public:
  ArithmeticTask(const v1::ArithmeticConfig& config, uint64_t seed, uint64_t fingerprint)
      : GeneratedTask(seed, fingerprint), multiplication_(config.multiplication()) {
    int64_t p = 1;
    for (int k = 1; k < config.digits(); ++k) p *= 10;
    lo_ = config.digits() == 1 ? 0 : p;
    hi_ = p * 10 - 1;
  }

  absl::string_view name() const override { return "arithmetic"; }

  v1::VerifierResult Verify(absl::string_view answer, absl::string_view completion) const override {
    return VerifyArithmetic(answer, completion);
  }

  absl::Status Initialize(uint64_t heldout_size) {
    // Distinct problems: unordered operand pairs, per operator.
    const unsigned __int128 n = static_cast<unsigned __int128>(hi_ - lo_ + 1);
    const unsigned __int128 space = n * (n + 1) / 2 * (multiplication_ ? 2 : 1);
    const uint64_t capped = space > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(space);
    return Init(heldout_size, capped);
  }

 protected:
  std::optional<internal::Generated> Generate(internal::Rng& rng) const override {
    const char op = multiplication_ && rng.Below(2) == 1 ? '*' : '+';
    const int64_t a = rng.Between(lo_, hi_);
    const int64_t b = rng.Between(lo_, hi_);
    const unsigned __int128 ua = static_cast<unsigned __int128>(a);
    const unsigned __int128 ub = static_cast<unsigned __int128>(b);
    const unsigned __int128 result = op == '+' ? ua + ub : ua * ub;  // < 10^36: no overflow
    internal::Generated g;
    g.prompt = absl::StrCat(a, std::string(1, op), b, "=");
    g.answer = Int128ToString(static_cast<__int128>(result));
    g.reference_solution = g.answer;
    g.key = absl::StrCat(std::string(1, op), std::min(a, b), ",", std::max(a, b));
    return g;
  }

 private:
  bool multiplication_;
  int64_t lo_ = 0, hi_ = 0;
};

}  // namespace

v1::VerifierResult VerifyArithmetic(absl::string_view answer, absl::string_view completion) {
  if (answer.size() > 64 || !IsInteger(answer)) {
    return internal::MakeResult(
        0.0, false, false, "",
        absl::StrCat("malformed arithmetic answer \"", internal::SanitizeUtf8(answer, 60), "\""));
  }
  const absl::string_view got = internal::TrimAsciiWhitespace(internal::FirstLine(completion));
  const bool parsed = IsInteger(got);
  if (got == answer) return internal::MakeResult(1.0, true, true, got, "");
  return internal::MakeResult(0.0, false, parsed, got,
                              parsed ? absl::StrCat("expected ", answer)
                                     : absl::StrCat("not an integer; expected ", answer));
}

absl::StatusOr<std::unique_ptr<Task>> CreateArithmeticTask(const v1::ArithmeticConfig& config,
                                                           uint64_t heldout_size, uint64_t seed) {
  if (config.digits() < 1 || config.digits() > 18) {
    return absl::InvalidArgumentError(
        absl::StrCat("arithmetic.digits must be in [1, 18], got ", config.digits()));
  }
  uint64_t fingerprint = internal::HashBytes("arithmetic");
  fingerprint = internal::HashCombine(fingerprint, config.digits());
  fingerprint = internal::HashCombine(fingerprint, config.multiplication());
  fingerprint = internal::HashCombine(fingerprint, seed);
  auto task = std::make_unique<ArithmeticTask>(config, seed, fingerprint);
  RHYTHM_RETURN_IF_ERROR(task->Initialize(heldout_size));
  return task;
}

}  // namespace rhythm::common::tasks

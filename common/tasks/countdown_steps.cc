#include "common/tasks/countdown_steps.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace rhythm::common::tasks {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsOp(char c) { return c == '+' || c == '-' || c == '*' || c == '/'; }

// One line of a completion, syntactically parsed.
struct Line {
  bool back = false;
  CountdownStep step;
};

// Reads a canonical number at line[*pos]; advances *pos. An error message otherwise.
std::optional<std::string> ReadNumber(absl::string_view line, size_t* pos, int64_t* value) {
  size_t end = *pos;
  while (end < line.size() && IsDigit(line[end])) ++end;
  const size_t digits = end - *pos;
  if (digits == 0) {
    return *pos < line.size() ? absl::StrCat("expected a number at column ", *pos + 1)
                              : std::string("expected a number, the line ends");
  }
  if (digits > 18) return absl::StrCat("number longer than 18 digits at column ", *pos + 1);
  if (digits > 1 && line[*pos] == '0') {
    return absl::StrCat("number with a leading zero at column ", *pos + 1);
  }
  int64_t v = 0;
  for (size_t i = *pos; i < end; ++i) v = v * 10 + (line[i] - '0');
  *value = v;
  *pos = end;
  return std::nullopt;
}

// Parses "back" or "<a><op><b>=<c>"; an error message otherwise.
std::optional<std::string> ParseLine(absl::string_view line, Line* out) {
  if (line.empty()) return std::string("empty line");
  if (line == "back") {
    out->back = true;
    return std::nullopt;
  }
  size_t pos = 0;
  CountdownStep& s = out->step;
  if (auto e = ReadNumber(line, &pos, &s.a)) return e;
  if (pos == line.size()) return std::string("expected + - * / after the first number");
  if (!IsOp(line[pos])) return absl::StrCat("expected + - * / at column ", pos + 1);
  s.op = line[pos++];
  if (auto e = ReadNumber(line, &pos, &s.b)) return e;
  if (pos == line.size() || line[pos] != '=') {
    return absl::StrCat("expected '=' at column ", pos + 1);
  }
  ++pos;
  if (auto e = ReadNumber(line, &pos, &s.c)) return e;
  if (pos != line.size()) return absl::StrCat("unexpected text at column ", pos + 1);
  return std::nullopt;
}

std::string PoolString(std::vector<int64_t> pool) {
  std::sort(pool.begin(), pool.end());
  return absl::StrCat("{", absl::StrJoin(pool, ", "), "}");
}

// Removes one copy of x; false if there is none.
bool Take(std::vector<int64_t>& pool, int64_t x) {
  auto it = std::find(pool.begin(), pool.end(), x);
  if (it == pool.end()) return false;
  pool.erase(it);
  return true;
}

// Why a op b has no value (ApplyCountdownStepOp returned nullopt).
std::string WhyUndefined(const CountdownStep& s) {
  const std::string expr = absl::StrCat(s.a, std::string(1, s.op), s.b);
  switch (s.op) {
    case '-':
      return absl::StrCat(expr, " is negative");
    case '/':
      return s.b == 0 ? std::string("division by zero") : absl::StrCat(expr, " is not an integer");
    default:
      return absl::StrCat(expr, " overflows (over 10^18)");
  }
}

// Every result of one step combining x and y (either order), for the reachable sets.
template <typename F>
void ForEachResult(int64_t x, int64_t y, F&& f) {
  for (char op : {'+', '*', '-', '/'}) {
    if (auto r = ApplyCountdownStepOp(x, op, y)) f(*r);
    if (op == '-' || op == '/') {
      if (auto r = ApplyCountdownStepOp(y, op, x)) f(*r);
    }
  }
}

bool ValidInputs(const std::vector<int64_t>& numbers) {
  if (numbers.empty() || numbers.size() > 6) return false;
  for (int64_t x : numbers) {
    if (x < 0 || x > 1000000) return false;
  }
  return true;
}

// Fills sets[mask] from the sets of its proper submasks, which must be complete.
void BuildSet(const std::vector<int64_t>& numbers, uint32_t mask,
              std::vector<absl::flat_hash_set<int64_t>>& sets) {
  absl::flat_hash_set<int64_t>& out = sets[mask];
  if ((mask & (mask - 1)) == 0) {
    out.insert(numbers[__builtin_ctz(mask)]);
    return;
  }
  for (uint32_t a = (mask - 1) & mask; a > 0; a = (a - 1) & mask) {
    const uint32_t b = mask ^ a;
    if (a > b) continue;  // each unordered split once; ForEachResult does both orders
    for (int64_t x : sets[a]) {
      for (int64_t y : sets[b]) ForEachResult(x, y, [&](int64_t r) { out.insert(r); });
    }
  }
}

}  // namespace

std::string FormatCountdownStep(const CountdownStep& step) {
  return absl::StrCat(step.a, std::string(1, step.op), step.b, "=", step.c);
}

std::optional<int64_t> ApplyCountdownStepOp(int64_t a, char op, int64_t b) {
  if (a < 0 || b < 0) return std::nullopt;
  __int128 r;
  switch (op) {
    case '+':
      r = static_cast<__int128>(a) + b;
      break;
    case '-':
      if (a < b) return std::nullopt;
      r = a - b;
      break;
    case '*':
      r = static_cast<__int128>(a) * b;
      break;
    case '/':
      if (b == 0 || a % b != 0) return std::nullopt;
      r = a / b;
      break;
    default:
      return std::nullopt;
  }
  if (r > kMaxCountdownStepsValue) return std::nullopt;
  return static_cast<int64_t>(r);
}

v1::VerifierResult VerifyCountdownSteps(absl::string_view answer, absl::string_view completion) {
  absl::StatusOr<CountdownSpec> spec = ParseCountdownAnswer(answer);
  if (!spec.ok()) return internal::MakeResult(0.0, false, false, "", spec.status().message());
  absl::string_view text = completion;
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  const size_t last_newline = text.rfind('\n');
  const absl::string_view last_line = internal::TrimAsciiWhitespace(
      last_newline == absl::string_view::npos ? text : text.substr(last_newline + 1));
  if (text.empty()) return internal::MakeResult(0.0, false, false, "", "empty completion");
  const size_t num_lines = std::count(text.begin(), text.end(), '\n') + 1;
  if (num_lines > static_cast<size_t>(kMaxCountdownStepsLines)) {
    return internal::MakeResult(
        0.0, false, false, last_line,
        absl::StrCat(num_lines, " lines, more than the ", kMaxCountdownStepsLines, " allowed"));
  }

  // Syntax first, so that `parsed` covers every line.
  std::vector<Line> lines(num_lines);
  size_t start = 0;
  for (size_t k = 0; k < num_lines; ++k) {
    size_t end = text.find('\n', start);
    if (end == absl::string_view::npos) end = text.size();
    const absl::string_view line = text.substr(start, end - start);
    if (std::optional<std::string> error = ParseLine(line, &lines[k])) {
      return internal::MakeResult(
          0.0, false, false, last_line,
          absl::StrCat("line ", k + 1, ": \"", internal::SanitizeUtf8(line, 40),
                       "\" is not <a><op><b>=<c> or back: ", *error));
    }
    start = end + 1;
  }

  // Replay against the pool.
  std::vector<int64_t> pool = spec->numbers;
  int steps = 0;
  for (size_t k = 0; k < num_lines; ++k) {
    const std::string where = absl::StrCat("line ", k + 1, ": ");
    if (lines[k].back) {
      pool = spec->numbers;
      continue;
    }
    const CountdownStep& s = lines[k].step;
    const std::vector<int64_t> before = pool;
    if (!Take(pool, s.a)) {
      return internal::MakeResult(
          0.0, false, true, last_line,
          absl::StrCat(where, "uses ", s.a, ", which is not in the pool ", PoolString(before)));
    }
    if (!Take(pool, s.b)) {
      if (s.b == s.a) {
        return internal::MakeResult(0.0, false, true, last_line,
                                    absl::StrCat(where, "uses ", s.a, " twice, but the pool ",
                                                 PoolString(before), " has it once"));
      }
      return internal::MakeResult(
          0.0, false, true, last_line,
          absl::StrCat(where, "uses ", s.b, ", which is not in the pool ", PoolString(before)));
    }
    const std::optional<int64_t> r = ApplyCountdownStepOp(s.a, s.op, s.b);
    if (!r.has_value()) {
      return internal::MakeResult(0.0, false, true, last_line,
                                  absl::StrCat(where, WhyUndefined(s)));
    }
    if (*r != s.c) {
      return internal::MakeResult(0.0, false, true, last_line,
                                  absl::StrCat(where, FormatCountdownStep(s), " but ", s.a,
                                               std::string(1, s.op), s.b, " is ", *r));
    }
    pool.push_back(s.c);
    ++steps;
  }
  if (steps == 0) return internal::MakeResult(0.0, false, true, last_line, "no step");
  const Line& last = lines.back();
  if (last.back) {
    return internal::MakeResult(kCountdownFormatReward, false, true, last_line,
                                absl::StrCat("ends with back, target ", spec->target));
  }
  if (last.step.c != spec->target) {
    return internal::MakeResult(
        kCountdownFormatReward, false, true, last_line,
        absl::StrCat("the last step reaches ", last.step.c, ", target ", spec->target));
  }
  return internal::MakeResult(1.0, true, true, last_line, "");
}

std::vector<std::vector<int64_t>> CountdownStepsReachable(const std::vector<int64_t>& numbers) {
  if (!ValidInputs(numbers)) return {};
  std::vector<absl::flat_hash_set<int64_t>> sets(size_t{1} << numbers.size());
  // Increasing masks: every proper submask is smaller, hence complete.
  for (uint32_t mask = 1; mask < sets.size(); ++mask) BuildSet(numbers, mask, sets);
  std::vector<std::vector<int64_t>> out(sets.size());
  for (size_t mask = 0; mask < sets.size(); ++mask) {
    out[mask].assign(sets[mask].begin(), sets[mask].end());
    std::sort(out[mask].begin(), out[mask].end());
  }
  return out;
}

bool CountdownStepsReachableWithFewer(const std::vector<int64_t>& numbers, int64_t target) {
  if (!ValidInputs(numbers)) return true;
  if (target < 0) return false;  // every reachable value is non-negative
  const int n = static_cast<int>(numbers.size());
  const uint32_t full = (1u << n) - 1;
  // Smallest subsets first, so that a target that two or three numbers reach (the common
  // rejection) is found before the larger sets are built.
  std::vector<absl::flat_hash_set<int64_t>> sets(full + 1);
  const auto built = [&](uint32_t mask) {
    const int size = __builtin_popcount(mask);
    return mask != full && (size == 1 || size <= n - 2);
  };
  for (int size = 1; size < n; ++size) {
    for (uint32_t mask = 1; mask < full; ++mask) {
      if (__builtin_popcount(mask) != size || !built(mask)) continue;
      BuildSet(numbers, mask, sets);
      if (sets[mask].contains(target)) return true;
    }
  }
  // Subsets of n-1 numbers (at least 2): for each split and each x on one side, the operand the
  // other side would need for each operator and order, looked up in its set.
  for (uint32_t mask = 1; mask < full; ++mask) {
    if (built(mask) || __builtin_popcount(mask) != n - 1) continue;
    for (uint32_t a = (mask - 1) & mask; a > 0; a = (a - 1) & mask) {
      const absl::flat_hash_set<int64_t>& side_b = sets[mask ^ a];
      for (int64_t x : sets[a]) {
        // x+y, x-y, y-x, x*y, x/y, y/x == target, solved for y (candidates are re-checked).
        int64_t candidates[6];
        int count = 0;
        if (target >= x) candidates[count++] = target - x;
        if (x >= target) candidates[count++] = x - target;
        if (target <= kMaxCountdownStepsValue - x) candidates[count++] = x + target;
        if (x != 0 && target % x == 0) candidates[count++] = target / x;
        if (target != 0 && x % target == 0) candidates[count++] = x / target;
        if (x != 0 && target <= kMaxCountdownStepsValue / x) candidates[count++] = x * target;
        for (int c = 0; c < count; ++c) {
          const int64_t y = candidates[c];
          if (!side_b.contains(y)) continue;
          for (char op : {'+', '-', '*', '/'}) {
            if (ApplyCountdownStepOp(x, op, y) == target ||
                ApplyCountdownStepOp(y, op, x) == target) {
              return true;
            }
          }
        }
      }
    }
  }
  return false;
}

std::optional<std::vector<CountdownStep>> RandomCountdownStepsPath(
    const std::vector<int64_t>& numbers, int64_t avoid, internal::Rng& rng) {
  std::vector<int64_t> pool = numbers;
  std::vector<CountdownStep> path;
  struct Candidate {
    size_t i, j;  // pool positions consumed
    CountdownStep step;
  };
  std::vector<Candidate> candidates;
  while (pool.size() > 1) {
    candidates.clear();
    for (size_t i = 0; i < pool.size(); ++i) {
      for (size_t j = i + 1; j < pool.size(); ++j) {
        const int64_t x = pool[i], y = pool[j];
        const auto add = [&](int64_t a, char op, int64_t b) {
          const std::optional<int64_t> r = ApplyCountdownStepOp(a, op, b);
          if (!r.has_value() || *r == a || *r == b || *r == 0 || *r == avoid) return;
          candidates.push_back({i, j, CountdownStep{a, op, b, *r}});
        };
        add(x, '+', y);
        add(x, '*', y);
        add(x, '-', y);
        if (x != y) add(y, '-', x);
        add(x, '/', y);
        if (x != y) add(y, '/', x);
      }
    }
    if (candidates.empty()) return std::nullopt;
    Candidate pick = candidates[rng.Below(candidates.size())];
    if ((pick.step.op == '+' || pick.step.op == '*') && rng.Below(2) == 1) {
      std::swap(pick.step.a, pick.step.b);
    }
    pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(pick.j));  // j > i: erase j first
    pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(pick.i));
    pool.push_back(pick.step.c);
    path.push_back(pick.step);
  }
  return path;
}

std::optional<CountdownStepsProblem> DrawCountdownStepsProblem(int num_numbers, int max_number,
                                                               int max_target, internal::Rng& rng) {
  CountdownStepsProblem problem;
  for (int k = 0; k < num_numbers; ++k) {
    problem.spec.numbers.push_back(rng.Between(1, max_number));
  }
  std::optional<std::vector<CountdownStep>> path =
      RandomCountdownStepsPath(problem.spec.numbers, -1, rng);
  if (!path.has_value() || path->empty()) return std::nullopt;
  const int64_t target = path->back().c;
  if (target < 1 || target > max_target) return std::nullopt;
  const std::vector<int64_t>& numbers = problem.spec.numbers;
  if (std::find(numbers.begin(), numbers.end(), target) != numbers.end()) return std::nullopt;
  if (CountdownStepsReachableWithFewer(numbers, target)) return std::nullopt;
  problem.spec.target = target;
  problem.solution = *std::move(path);
  return problem;
}

std::string WriteCountdownStepsTrace(const CountdownStepsProblem& problem, int dead_ends,
                                     internal::Rng& rng) {
  std::vector<std::string> lines;
  for (int d = 0; d < dead_ends; ++d) {
    for (int attempt = 0; attempt < 100; ++attempt) {
      std::optional<std::vector<CountdownStep>> path =
          RandomCountdownStepsPath(problem.spec.numbers, problem.spec.target, rng);
      if (!path.has_value()) continue;
      for (const CountdownStep& s : *path) lines.push_back(FormatCountdownStep(s));
      lines.push_back("back");
      break;
    }
  }
  for (const CountdownStep& s : problem.solution) lines.push_back(FormatCountdownStep(s));
  return absl::StrJoin(lines, "\n");
}

}  // namespace rhythm::common::tasks

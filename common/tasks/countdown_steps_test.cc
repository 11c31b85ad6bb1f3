#include "common/tasks/countdown_steps.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rhythm::common::tasks {
namespace {

using ::testing::HasSubstr;

// ---------------------------------------------------------------------------------------------
// A slow, obvious reference verifier: split the text by hand, check each line character by
// character, replay it against a std::vector pool with explicit linear search. Returns the
// reward and whether every line was well-formed.

struct SlowResult {
  double reward = 0;
  bool parsed = false;
};

bool SlowIsNumber(const std::string& s) {
  if (s.empty() || s.size() > 18) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return s == "0" || s[0] != '0';
}

SlowResult SlowVerify(const std::vector<int64_t>& offered, int64_t target, std::string text) {
  if (!text.empty() && text[text.size() - 1] == '\n') text.pop_back();
  if (text.empty()) return {};
  std::vector<std::string> lines(1);
  for (char c : text) {
    if (c == '\n') {
      lines.emplace_back();
    } else {
      lines.back().push_back(c);
    }
  }
  if (lines.size() > 64) return {};
  struct Parsed {
    bool back;
    int64_t a, b, c;
    char op;
  };
  std::vector<Parsed> parsed;
  for (const std::string& line : lines) {
    if (line == "back") {
      parsed.push_back({true, 0, 0, 0, 0});
      continue;
    }
    // Find the operator: the first character that is not a digit.
    size_t op_at = 0;
    while (op_at < line.size() && line[op_at] >= '0' && line[op_at] <= '9') ++op_at;
    const size_t eq_at = line.find('=');
    if (op_at >= line.size() || eq_at == std::string::npos || eq_at < op_at) return {};
    const std::string a = line.substr(0, op_at);
    const std::string b = line.substr(op_at + 1, eq_at - op_at - 1);
    const std::string c = line.substr(eq_at + 1);
    const char op = line[op_at];
    if (op != '+' && op != '-' && op != '*' && op != '/') return {};
    if (!SlowIsNumber(a) || !SlowIsNumber(b) || !SlowIsNumber(c)) return {};
    parsed.push_back({false, std::stoll(a), std::stoll(b), std::stoll(c), op});
  }
  SlowResult result;
  result.parsed = true;
  std::vector<int64_t> pool = offered;
  int steps = 0;
  for (const Parsed& p : parsed) {
    if (p.back) {
      pool = offered;
      continue;
    }
    for (int64_t want : {p.a, p.b}) {
      bool found = false;
      for (size_t i = 0; i < pool.size(); ++i) {
        if (pool[i] == want) {
          pool.erase(pool.begin() + static_cast<long>(i));
          found = true;
          break;
        }
      }
      if (!found) return result;
    }
    __int128 r;
    if (p.op == '+') {
      r = static_cast<__int128>(p.a) + p.b;
    } else if (p.op == '-') {
      r = static_cast<__int128>(p.a) - p.b;
    } else if (p.op == '*') {
      r = static_cast<__int128>(p.a) * p.b;
    } else {
      if (p.b == 0 || p.a % p.b != 0) return result;
      r = p.a / p.b;
    }
    if (r < 0 || r > static_cast<__int128>(1000000000000000000LL) || r != p.c) return result;
    pool.push_back(p.c);
    ++steps;
  }
  if (steps == 0) return result;
  if (parsed.back().back || parsed.back().c != target) {
    result.reward = kCountdownFormatReward;
  } else {
    result.reward = 1.0;
  }
  return result;
}

// Random completions: mostly valid steps over a tracked pool, with every kind of error mixed in.
std::string RandomCompletion(const std::vector<int64_t>& offered, int64_t target,
                             std::mt19937_64& rng) {
  std::vector<int64_t> pool = offered;
  std::vector<std::string> lines;
  const int n = 1 + static_cast<int>(rng() % 8);
  for (int k = 0; k < n; ++k) {
    const int kind = static_cast<int>(rng() % 20);
    if (kind == 0 || pool.size() < 2) {
      lines.push_back("back");
      pool = offered;
      continue;
    }
    const size_t i = rng() % pool.size();
    size_t j = rng() % (pool.size() - 1);
    if (j >= i) ++j;
    int64_t a = pool[i], b = pool[j];
    const char op = "+-*/"[rng() % 4];
    std::optional<int64_t> r = ApplyCountdownStepOp(a, op, b);
    int64_t c = r.value_or(static_cast<int64_t>(rng() % 50));
    if (kind == 1) c += 1;                                    // wrong arithmetic
    if (kind == 2) a = 1 + static_cast<int64_t>(rng() % 30);  // maybe not in the pool
    if (kind == 3) b = a;                                     // maybe used twice
    if (kind == 4 && rng() % 2 == 0) c = target;              // claims the target
    std::string line = std::to_string(a) + op + std::to_string(b) + "=" + std::to_string(c);
    if (kind == 5) line.insert(rng() % (line.size() + 1), 1, " \r0x="[rng() % 5]);  // syntax
    if (kind == 6) line.clear();                                                    // empty
    if (kind == 7) line = line.substr(0, rng() % line.size());                      // cut
    lines.push_back(line);
    // Track the pool as a valid step would change it (whether or not this one is valid).
    if (r.has_value() && kind > 7) {
      pool.erase(pool.begin() + static_cast<long>(std::max(i, j)));
      pool.erase(pool.begin() + static_cast<long>(std::min(i, j)));
      pool.push_back(*r);
    }
  }
  std::string text;
  for (size_t k = 0; k < lines.size(); ++k) text += (k ? "\n" : "") + lines[k];
  if (rng() % 4 == 0) text += "\n";
  // Sometimes end with the step that reaches the target from a valid prefix.
  return text;
}

TEST(VerifyCountdownSteps, MatchesSlowReferenceOnRandomCompletions) {
  std::mt19937_64 rng(11);
  std::map<double, int> rewards;
  int parsed = 0;
  for (int t = 0; t < 60000; ++t) {
    std::vector<int64_t> offered;
    const int n = 2 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n; ++k) offered.push_back(static_cast<int64_t>(rng() % 12));
    int64_t target = static_cast<int64_t>(rng() % 40);
    const std::string completion = RandomCompletion(offered, target, rng);
    // Often make the target what the last line claims, so that correct answers are common.
    const size_t eq = completion.rfind('=');
    if (rng() % 2 == 0 && eq != std::string::npos) {
      std::string c = completion.substr(eq + 1);
      if (!c.empty() && c.back() == '\n') c.pop_back();
      if (SlowIsNumber(c)) target = std::stoll(c);
    }
    std::string answer;
    for (int64_t x : offered) answer += (answer.empty() ? "" : ",") + std::to_string(x);
    answer += "|" + std::to_string(target);
    const v1::VerifierResult r = VerifyCountdownSteps(answer, completion);
    const SlowResult slow = SlowVerify(offered, target, completion);
    ASSERT_EQ(r.reward(), slow.reward) << answer << " / " << completion << ": " << r.detail();
    ASSERT_EQ(r.parsed(), slow.parsed) << answer << " / " << completion << ": " << r.detail();
    ASSERT_EQ(r.correct(), slow.reward == 1.0);
    ++rewards[r.reward()];
    parsed += r.parsed();
  }
  // Every outcome is exercised (seen with this seed: 0.0 50757, 0.1 5818, 1.0 3425; 35786
  // parsed).
  EXPECT_EQ(rewards.size(), 3u);
  EXPECT_GT(rewards[0.0], 20000);
  EXPECT_GT(rewards[kCountdownFormatReward], 3000);
  EXPECT_GT(rewards[1.0], 1500);
  EXPECT_GT(parsed, 20000);
}

// ---------------------------------------------------------------------------------------------
// Each outcome, with its detail.

struct Expect {
  std::string completion;
  double reward;
  bool parsed;
  std::string detail;  // substring
};

void CheckAll(const std::string& answer, const std::vector<Expect>& cases) {
  for (const Expect& e : cases) {
    const v1::VerifierResult r = VerifyCountdownSteps(answer, e.completion);
    EXPECT_EQ(r.reward(), e.reward) << e.completion << ": " << r.detail();
    EXPECT_EQ(r.correct(), e.reward == 1.0) << e.completion;
    EXPECT_EQ(r.parsed(), e.parsed) << e.completion << ": " << r.detail();
    EXPECT_THAT(r.detail(), HasSubstr(e.detail)) << e.completion;
    if (e.reward == 1.0) {
      EXPECT_EQ(r.detail(), "");
    }
  }
}

TEST(VerifyCountdownSteps, EveryOutcomeHasANamedDetail) {
  CheckAll(
      "3,7,20,5|27",
      {
          // Correct.
          {"20+7=27", 1.0, true, ""},
          {"20+7=27\n", 1.0, true, ""},  // trailing newline tolerated
          {"3*5=15\n15+20=35\n35-7=28\nback\n20+7=27", 1.0, true, ""},
          {"20-3=17\n17+5=22\n22*7=154\nback\n5-3=2\n20+7=27", 1.0, true, ""},
          // Partial credit.
          {"3+7=10", kCountdownFormatReward, true, "the last step reaches 10, target 27"},
          {"20+7=27\n27-3=24", kCountdownFormatReward, true, "reaches 24"},
          {"3+7=10\nback", kCountdownFormatReward, true, "ends with back, target 27"},
          // Syntax.
          {"", 0.0, false, "empty completion"},
          {"\n", 0.0, false, "empty completion"},
          {"20+7=27\n\n", 0.0, false, "line 2: \"\" is not <a><op><b>=<c> or back: empty line"},
          {"3+7=10\n\n20+7=27", 0.0, false, "line 2"},
          {"20 + 7 = 27", 0.0, false, "line 1: \"20 + 7 = 27\" is not"},
          {"20+7=27\r", 0.0, false, "unexpected text at column 8"},
          {"20+7=27\r\n", 0.0, false, "unexpected text at column 8"},
          {"07+20=27", 0.0, false, "number with a leading zero at column 1"},
          {"1234567890123456789+1=1", 0.0, false, "number longer than 18 digits"},
          {"20x7=27", 0.0, false, "expected + - * / at column 3"},
          {"20", 0.0, false, "expected + - * / after the first number"},
          {"20+7", 0.0, false, "expected '=' at column 5"},
          {"20+7=", 0.0, false, "expected a number, the line ends"},
          {"20+=27", 0.0, false, "expected a number at column 4"},
          {"-3+7=4", 0.0, false, "expected a number at column 1"},
          {"Back", 0.0, false, "line 1"},
          {"back ", 0.0, false, "line 1"},
          {"3+7=10\n20+7=27 x", 0.0, false, "line 2"},
          // The pool.
          {"9+3=12", 0.0, true, "line 1: uses 9, which is not in the pool {3, 5, 7, 20}"},
          {"3+9=12", 0.0, true, "line 1: uses 9, which is not in the pool {3, 5, 7, 20}"},
          {"5*5=25", 0.0, true, "line 1: uses 5 twice, but the pool {3, 5, 7, 20} has it once"},
          {"3+7=10\n3+5=8", 0.0, true, "line 2: uses 3, which is not in the pool {5, 10, 20}"},
          {"3+7=10\nback\n10+20=30", 0.0, true,
           "line 3: uses 10, which is not in the pool {3, 5, 7, 20}"},
          {"20+7=27\nback\n20+7=27", 1.0, true, ""},  // back restores 20 and 7
                                                      // Arithmetic.
          {"20+7=26", 0.0, true, "line 1: 20+7=26 but 20+7 is 27"},
          {"20+7=27\n27*3=80", 0.0, true, "line 2: 27*3=80 but 27*3 is 81"},
          {"3-7=0", 0.0, true, "line 1: 3-7 is negative"},
          {"7/3=2", 0.0, true, "line 1: 7/3 is not an integer"},
          {"back", 0.0, true, "no step"},
          {"back\nback", 0.0, true, "no step"},
      });
  // Division by zero (a 0 made by a step) and overflow.
  CheckAll("3,3,7|7", {{"3-3=0\n7/0=0", 0.0, true, "line 2: division by zero"},
                       {"3-3=0\n7-0=7", 1.0, true, ""}});
  CheckAll("1000000000,1000000000,1000000000|5",
           {{"1000000000+1000000000=2000000000\n2000000000*1000000000=1", 0.0, true,
             "line 2: 2000000000*1000000000 overflows (over 10^18)"},
            {"1000000000*1000000000=1", 0.0, true, "is 1000000000000000000"}});
  // Too many lines: 64 are fine, 65 are not.
  std::string lines64;
  for (int k = 0; k < 63; ++k) lines64 += "back\n";
  CheckAll("3,7|10",
           {{lines64 + "3+7=10", 1.0, true, ""},
            {lines64 + "back\n3+7=10", 0.0, false, "65 lines, more than the 64 allowed"}});
  // A malformed answer.
  CheckAll("3,7", {{"3+7=10", 0.0, false, "malformed countdown answer"}});
  CheckAll("", {{"3+7=10", 0.0, false, "malformed countdown answer"}});
}

TEST(VerifyCountdownSteps, ExtractedAnswerIsTheLastLine) {
  EXPECT_EQ(VerifyCountdownSteps("3,7|10", "3*7=21\nback\n3+7=10\n").extracted_answer(), "3+7=10");
  EXPECT_EQ(VerifyCountdownSteps("3,7|10", "3+7=10 \r").extracted_answer(), "3+7=10");
  EXPECT_EQ(VerifyCountdownSteps("3,7|10", "").extracted_answer(), "");
  // Invalid UTF-8 is sanitised.
  const v1::VerifierResult r = VerifyCountdownSteps("3,7|10", "3+7=10\n\xff\xfe");
  EXPECT_EQ(r.reward(), 0.0);
  EXPECT_EQ(r.extracted_answer(), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

// ---------------------------------------------------------------------------------------------
// Reachability against a brute force over pool states: every element carries the number of
// offered numbers it was built from.

void SlowReach(std::vector<std::pair<int64_t, int>> pool, int n, std::set<int64_t>& fewer,
               std::set<int64_t>& all) {
  for (const auto& [v, leaves] : pool) (leaves < n ? fewer : all).insert(v);
  for (size_t i = 0; i < pool.size(); ++i) {
    for (size_t j = 0; j < pool.size(); ++j) {
      if (i == j) continue;
      for (char op : {'+', '-', '*', '/'}) {
        const int64_t a = pool[i].first, b = pool[j].first;
        int64_t r;
        if (op == '+') {
          r = a + b;
        } else if (op == '-') {
          if (a < b) continue;
          r = a - b;
        } else if (op == '*') {
          r = a * b;  // inputs are small: no overflow
        } else {
          if (b == 0 || a % b != 0) continue;
          r = a / b;
        }
        std::vector<std::pair<int64_t, int>> next;
        for (size_t k = 0; k < pool.size(); ++k) {
          if (k != i && k != j) next.push_back(pool[k]);
        }
        next.push_back({r, pool[i].second + pool[j].second});
        SlowReach(next, n, fewer, all);
      }
    }
  }
}

struct SlowSets {
  std::set<int64_t> fewer, all;
};

SlowSets SlowReachable(const std::vector<int64_t>& numbers) {
  std::vector<std::pair<int64_t, int>> pool;
  for (int64_t x : numbers) pool.push_back({x, 1});
  SlowSets s;
  SlowReach(pool, static_cast<int>(numbers.size()), s.fewer, s.all);
  return s;
}

TEST(CountdownStepsReachable, MatchesBruteForce) {
  std::mt19937_64 rng(5);
  for (int t = 0; t < 300; ++t) {
    const int n = 1 + static_cast<int>(rng() % 4);
    std::vector<int64_t> numbers;
    for (int k = 0; k < n; ++k) numbers.push_back(static_cast<int64_t>(rng() % 13));
    const SlowSets slow = SlowReachable(numbers);
    const std::vector<std::vector<int64_t>> sets = CountdownStepsReachable(numbers);
    ASSERT_EQ(sets.size(), size_t{1} << n);
    const std::vector<int64_t>& full = sets.back();
    EXPECT_EQ(std::set<int64_t>(full.begin(), full.end()), slow.all);
    EXPECT_TRUE(std::is_sorted(full.begin(), full.end()));
    for (int64_t target = 0; target <= 200; ++target) {
      ASSERT_EQ(CountdownStepsReachableWithFewer(numbers, target), slow.fewer.count(target) > 0)
          << ::testing::PrintToString(numbers) << " -> " << target;
    }
  }
  // Preconditions.
  EXPECT_TRUE(CountdownStepsReachable({}).empty());
  EXPECT_TRUE(CountdownStepsReachable({1, 2, 3, 4, 5, 6, 7}).empty());
  EXPECT_TRUE(CountdownStepsReachableWithFewer({1, 2, 3, 4, 5, 6, 7}, 1000));
  EXPECT_FALSE(CountdownStepsReachableWithFewer({3, 7}, -1));
}

// ---------------------------------------------------------------------------------------------
// The task.

v1::TaskConfig StepsConfig(int max_dead_ends) {
  v1::TaskConfig config;
  config.set_kind(v1::TASK_KIND_COUNTDOWN);
  v1::CountdownConfig& c = *config.mutable_countdown();
  c.set_format(v1::CountdownConfig::COUNTDOWN_FORMAT_STEPS);
  c.set_num_numbers(4);
  c.set_max_number(20);
  c.set_max_target(100);
  c.set_max_dead_ends(max_dead_ends);
  return config;
}

std::string Key(const std::string& answer) {
  absl::StatusOr<CountdownSpec> spec = ParseCountdownAnswer(answer);
  std::vector<int64_t> sorted = spec->numbers;
  std::sort(sorted.begin(), sorted.end());
  std::string key;
  for (int64_t n : sorted) key += std::to_string(n) + ",";
  return key + std::to_string(spec->target);
}

TEST(CountdownStepsTask, ReferenceTracesOf1000TrainingProblems) {
  for (int max_dead_ends : {2, 3}) {
    absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(StepsConfig(max_dead_ends), 42);
    ASSERT_TRUE(task.ok()) << task.status();
    EXPECT_EQ((*task)->name(), "countdown");
    EXPECT_TRUE((*task)->warnings().empty());
    EXPECT_EQ((*task)->heldout_size(), 200u);
    size_t min_len = 1000, max_len = 0, total = 0;
    std::map<int, int> backs;
    for (uint64_t i = 0; i < 1000; ++i) {
      const Problem p = (*task)->TrainProblem(i);
      const v1::VerifierResult r = (*task)->Verify(p.answer, p.reference_solution);
      ASSERT_TRUE(r.correct()) << p.prompt << p.reference_solution << ": " << r.detail();
      ASSERT_EQ(r.reward(), 1.0);
      EXPECT_NE(p.reference_solution.back(), '\n');
      absl::StatusOr<CountdownSpec> spec = ParseCountdownAnswer(p.answer);
      ASSERT_TRUE(spec.ok());
      ASSERT_EQ(spec->numbers.size(), 4u);
      for (int64_t n : spec->numbers) {
        EXPECT_GE(n, 1);
        EXPECT_LE(n, 20);
        EXPECT_NE(n, spec->target);
      }
      EXPECT_GE(spec->target, 1);
      EXPECT_LE(spec->target, 100);
      std::string prompt;
      for (int64_t n : spec->numbers) prompt += (prompt.empty() ? "" : " ") + std::to_string(n);
      EXPECT_EQ(p.prompt, prompt + " -> " + std::to_string(spec->target) + "\n");
      // Every number is needed (checked once: the same problems for both settings).
      if (max_dead_ends == 2) {
        EXPECT_EQ(SlowReachable(spec->numbers).fewer.count(spec->target), 0u) << p.prompt;
      }
      // Structure: dead ends of 3 steps and "back", then 3 steps; no dead end hits the target.
      std::vector<std::string> lines;
      size_t start = 0;
      while (true) {
        const size_t end = p.reference_solution.find('\n', start);
        lines.push_back(p.reference_solution.substr(start, end - start));
        if (end == std::string::npos) break;
        start = end + 1;
      }
      const int d = static_cast<int>(std::count(lines.begin(), lines.end(), "back"));
      ++backs[d];
      EXPECT_EQ(lines.size(), static_cast<size_t>(4 * d + 3)) << p.reference_solution;
      for (int k = 0; k + 3 < static_cast<int>(lines.size()); ++k) {
        if (lines[k] == "back") continue;
        EXPECT_NE(lines[k].substr(lines[k].find('=') + 1), std::to_string(spec->target))
            << p.reference_solution;
      }
      const size_t len = p.reference_solution.size();
      min_len = std::min(min_len, len);
      max_len = std::max(max_len, len);
      total += len;
    }
    const double mean = static_cast<double>(total) / 1000.0;
    std::printf("max_dead_ends=%d: reference length min %zu mean %.1f max %zu; dead ends:",
                max_dead_ends, min_len, mean, max_len);
    for (const auto& [d, count] : backs) std::printf(" %d:%d", d, count);
    std::printf("\n");
    EXPECT_EQ(static_cast<int>(backs.size()), max_dead_ends + 1);  // d takes every value
    EXPECT_GE(min_len, 15u);
    EXPECT_GE(mean, 30.0);
    EXPECT_LE(mean, 150.0);
    if (max_dead_ends == 2) {
      EXPECT_LE(max_len, 150u);
    }
  }
}

TEST(CountdownStepsTask, DeterministicDisjointAndIdentifiedByFormat) {
  absl::StatusOr<std::unique_ptr<Task>> a = CreateTask(StepsConfig(2), 9);
  absl::StatusOr<std::unique_ptr<Task>> b = CreateTask(StepsConfig(2), 9);
  v1::TaskConfig expression_config = StepsConfig(2);
  expression_config.mutable_countdown()->set_format(
      v1::CountdownConfig::COUNTDOWN_FORMAT_EXPRESSION);
  absl::StatusOr<std::unique_ptr<Task>> expression = CreateTask(expression_config, 9);
  absl::StatusOr<std::unique_ptr<Task>> other_dead_ends = CreateTask(StepsConfig(3), 9);
  ASSERT_TRUE(a.ok() && b.ok() && expression.ok() && other_dead_ends.ok());
  std::set<std::string> heldout_keys;
  std::set<uint64_t> ids;
  for (uint64_t i = 0; i < (*a)->heldout_size(); ++i) {
    const Problem p = (*a)->HeldOutProblem(i);
    const Problem q = (*b)->HeldOutProblem(i);
    EXPECT_EQ(p.id, q.id);
    EXPECT_EQ(p.prompt, q.prompt);
    EXPECT_EQ(p.reference_solution, q.reference_solution);
    EXPECT_EQ((*a)->Verify(p.answer, p.reference_solution).reward(), 1.0);
    EXPECT_NE(p.id & kHeldOutIdBit, 0u);
    heldout_keys.insert(Key(p.answer));
    ids.insert(p.id);
  }
  EXPECT_EQ(heldout_keys.size(), 200u);
  for (uint64_t i = 0; i < 1000; ++i) {
    const Problem p = (*a)->TrainProblem(i);
    const Problem q = (*b)->TrainProblem(i);
    EXPECT_EQ(p.id, q.id);
    EXPECT_EQ(p.prompt, q.prompt);
    EXPECT_EQ(p.answer, q.answer);
    EXPECT_EQ(p.reference_solution, q.reference_solution);
    EXPECT_EQ(heldout_keys.count(Key(p.answer)), 0u) << p.prompt;
    EXPECT_NE(p.id, (*expression)->TrainProblem(i).id);
    EXPECT_NE(p.id, (*other_dead_ends)->TrainProblem(i).id);
    ids.insert(p.id);
  }
  EXPECT_EQ(ids.size(), 1200u);
  // The expression format with the same difficulty keeps its one-line references.
  EXPECT_EQ((*expression)->TrainProblem(0).reference_solution.find('\n'), std::string::npos);
}

TEST(CountdownStepsTask, ConfigErrors) {
  for (int bad : {-1, 9}) {
    v1::TaskConfig config = StepsConfig(bad);
    absl::Status s = CreateTask(config, 1).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(),
                HasSubstr("countdown.max_dead_ends must be in [0, 8], got " + std::to_string(bad)));
  }
  v1::TaskConfig config = StepsConfig(2);
  config.mutable_countdown()->set_format(v1::CountdownConfig::COUNTDOWN_FORMAT_UNSPECIFIED);
  absl::Status s = CreateTask(config, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("countdown.format"));
  config = StepsConfig(2);
  config.mutable_countdown()->set_num_numbers(7);
  s = CreateTask(config, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("countdown.num_numbers must be in [2, 6], got 7"));
  // The defaults: the expression format, two dead ends.
  EXPECT_EQ(v1::CountdownConfig().format(), v1::CountdownConfig::COUNTDOWN_FORMAT_EXPRESSION);
  EXPECT_EQ(v1::CountdownConfig().max_dead_ends(), 2);
}

// Cost and rejection rate of the generator (figures in countdown_steps.h). Asserts only that
// every setting yields problems; prints the measurements.
TEST(CountdownStepsTask, GeneratorCost) {
  struct Setting {
    int n, max_number, max_target;
  };
  // 6 numbers with targets <= 100 is the slow case: most targets that small are reachable
  // from 5 of the numbers.
  const std::vector<Setting> settings = {{2, 20, 100},  {3, 20, 100},   {4, 20, 100},
                                         {5, 20, 100},  {5, 20, 1000},  {6, 20, 100},
                                         {6, 20, 1000}, {6, 100, 10000}};
  for (const Setting& setting : settings) {
    const int n = setting.n;
    internal::Rng rng(77);
    const int kProblems = setting.n == 6 ? 20 : 100;
    int draws = 0;
    const auto t0 = std::chrono::steady_clock::now();
    int found = 0;
    while (found < kProblems) {
      ++draws;
      ASSERT_LT(draws, 1000000) << setting.n << " " << setting.max_number;
      std::optional<CountdownStepsProblem> p =
          DrawCountdownStepsProblem(n, setting.max_number, setting.max_target, rng);
      if (!p.has_value()) continue;
      ++found;
      (void)WriteCountdownStepsTrace(*p, 2, rng);
    }
    EXPECT_EQ(found, kProblems);
    const double us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%d numbers in [1, %d], targets <= %d: %d draws, %d problems: ", n,
                setting.max_number, setting.max_target, draws, found);
    std::printf("%.1f draws per problem (%.0f%% rejected), %.1f us per problem\n",
                static_cast<double>(draws) / std::max(found, 1), 100.0 * (draws - found) / draws,
                us / std::max(found, 1));
  }
  for (int n : {4, 5, 6}) {
    v1::TaskConfig config = StepsConfig(2);
    config.mutable_countdown()->set_num_numbers(n);
    const auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(config, 3);
    ASSERT_TRUE(task.ok()) << task.status();
    std::printf(
        "CreateTask with %d numbers: %.1f ms\n", n,
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
}

}  // namespace
}  // namespace rhythm::common::tasks

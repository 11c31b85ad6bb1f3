#include "common/tasks/countdown.h"

#include <algorithm>
#include <cctype>
#include <functional>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rhythm::common::tasks {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// ---------------------------------------------------------------------------------------------
// An independent, slow evaluator: int64 fractions with std::gcd, and recursive splitting of the
// string at its last top-level operator of lowest precedence (the textbook definition of
// left-associative precedence parsing). It shares nothing with the implementation.

struct Frac {
  int64_t n = 0, d = 1;
};

Frac Reduce(int64_t n, int64_t d) {
  if (d < 0) n = -n, d = -d;
  const int64_t g = std::gcd(n < 0 ? -n : n, d);
  return {n / g, d / g};
}

int64_t CheckedMul(int64_t a, int64_t b) {
  int64_t r;
  EXPECT_FALSE(__builtin_mul_overflow(a, b, &r)) << "test reference overflowed: keep inputs small";
  return r;
}

// nullopt: division by zero.
std::optional<Frac> SlowApply(char op, Frac a, Frac b) {
  switch (op) {
    case '+':
      return Reduce(CheckedMul(a.n, b.d) + CheckedMul(b.n, a.d), CheckedMul(a.d, b.d));
    case '-':
      return Reduce(CheckedMul(a.n, b.d) - CheckedMul(b.n, a.d), CheckedMul(a.d, b.d));
    case '*':
      return Reduce(CheckedMul(a.n, b.n), CheckedMul(a.d, b.d));
    default:
      if (b.n == 0) return std::nullopt;
      return Reduce(CheckedMul(a.n, b.d), CheckedMul(a.d, b.n));
  }
}

// `s` has no whitespace and is well formed.
std::optional<Frac> SlowEvaluate(const std::string& s) {
  // Fully wrapped in one pair of parentheses?
  if (s.front() == '(' && s.back() == ')') {
    int depth = 0;
    bool wraps = true;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      depth += s[i] == '(' ? 1 : s[i] == ')' ? -1 : 0;
      if (depth == 0) wraps = false;
    }
    if (wraps) return SlowEvaluate(s.substr(1, s.size() - 2));
  }
  for (const std::string ops : {"+-", "*/"}) {
    int depth = 0;
    for (size_t i = s.size(); i-- > 0;) {
      depth += s[i] == ')' ? 1 : s[i] == '(' ? -1 : 0;
      if (depth == 0 && ops.find(s[i]) != std::string::npos) {
        const std::optional<Frac> a = SlowEvaluate(s.substr(0, i));
        const std::optional<Frac> b = SlowEvaluate(s.substr(i + 1));
        if (!a || !b) return std::nullopt;
        return SlowApply(s[i], *a, *b);
      }
    }
  }
  return Frac{std::stoll(s), 1};
}

// A random expression tree over `leaves` numbers in [0, max_number], written with the
// parentheses it needs plus random redundant ones and random whitespace. Also returns the
// tree's value computed directly on the tree.
struct RandomExpression {
  std::string text;
  std::string compact;  // without whitespace
  std::optional<Frac> value;
  std::vector<int64_t> numbers;
};

RandomExpression MakeRandomExpression(std::mt19937_64& rng, int leaves, int64_t max_number) {
  struct Built {
    std::string text;
    int prec;  // 3 atom/parenthesised, 2 * /, 1 + -
    std::optional<Frac> value;
  };
  std::vector<int64_t> numbers;
  std::function<Built(int)> build = [&](int n) -> Built {
    Built b;
    if (n == 1) {
      const int64_t x = std::uniform_int_distribution<int64_t>(0, max_number)(rng);
      numbers.push_back(x);
      b = {std::to_string(x), 3, Frac{x, 1}};
    } else {
      const int left_leaves = std::uniform_int_distribution<int>(1, n - 1)(rng);
      Built l = build(left_leaves);
      Built r = build(n - left_leaves);
      const char op = "+-*/"[std::uniform_int_distribution<int>(0, 3)(rng)];
      const int prec = (op == '+' || op == '-') ? 1 : 2;
      // Needed parentheses: lower precedence on either side, or equal precedence on the right
      // of - and /. Redundant ones with probability 1/4.
      const bool lp = l.prec < prec || rng() % 4 == 0;
      const bool rp =
          r.prec < prec || (r.prec == prec && (op == '-' || op == '/')) || rng() % 4 == 0;
      std::optional<Frac> v;
      if (l.value && r.value) v = SlowApply(op, *l.value, *r.value);
      b.text = (lp ? "(" + l.text + ")" : l.text) + std::string(1, op) +
               (rp ? "(" + r.text + ")" : r.text);
      b.prec = prec;
      b.value = v;
    }
    if (rng() % 8 == 0) b = {"(" + b.text + ")", 3, b.value};
    return b;
  };
  Built b = build(leaves);
  RandomExpression e;
  e.compact = b.text;
  e.value = b.value;
  e.numbers = numbers;
  for (size_t k = 0; k < b.text.size(); ++k) {
    // Whitespace between tokens, never inside a number.
    const bool inside_number = k > 0 && std::isdigit(b.text[k - 1]) && std::isdigit(b.text[k]);
    if (!inside_number && rng() % 6 == 0) e.text += " \t"[rng() % 2];
    e.text.push_back(b.text[k]);
  }
  return e;
}

TEST(CountdownEvaluator, MatchesSlowReferenceOnRandomExpressions) {
  std::mt19937_64 rng(12345);
  int defined = 0, undefined = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const int leaves = 1 + static_cast<int>(rng() % 6);
    const RandomExpression e = MakeRandomExpression(rng, leaves, 20);
    const absl::StatusOr<CountdownExpression> got = ParseCountdownExpression(e.text);
    ASSERT_TRUE(got.ok()) << e.text << ": " << got.status();
    EXPECT_EQ(got->numbers, e.numbers) << e.text;
    const std::optional<Frac> slow = SlowEvaluate(e.compact);
    // The tree's own value and the slow string evaluator agree (checks the generator).
    ASSERT_EQ(slow.has_value(), e.value.has_value()) << e.compact;
    if (slow) {
      ASSERT_EQ(slow->n, e.value->n);
      ASSERT_EQ(slow->d, e.value->d);
    }
    ASSERT_EQ(got->value.has_value(), slow.has_value()) << e.text;
    if (slow) {
      ++defined;
      EXPECT_EQ(got->value->num(), slow->n) << e.text;
      EXPECT_EQ(got->value->den(), slow->d) << e.text;
    } else {
      ++undefined;
      EXPECT_EQ(got->error, "division by zero") << e.text;
    }
  }
  // Both outcomes were exercised.
  EXPECT_GT(defined, 10000);
  EXPECT_GT(undefined, 500);
}

TEST(CountdownEvaluator, PrecedenceAndAssociativity) {
  const auto value = [](absl::string_view text) {
    absl::StatusOr<CountdownExpression> e = ParseCountdownExpression(text);
    EXPECT_TRUE(e.ok()) << text << ": " << e.status();
    return e.ok() && e->value ? e->value->ToString() : std::string("error");
  };
  EXPECT_EQ(value("20+7"), "27");
  EXPECT_EQ(value("2+3*4"), "14");
  EXPECT_EQ(value("(2+3)*4"), "20");
  EXPECT_EQ(value("10-4-3"), "3");
  EXPECT_EQ(value("10-(4-3)"), "9");
  EXPECT_EQ(value("16/4/2"), "2");
  EXPECT_EQ(value("16/(4/2)"), "8");
  EXPECT_EQ(value("7/2"), "7/2");
  EXPECT_EQ(value("7/2*2"), "7");
  EXPECT_EQ(value("3-7"), "-4");
  EXPECT_EQ(value(" ( 3 +\t4 ) \r"), "7");
  EXPECT_EQ(value("0"), "0");
}

TEST(CountdownEvaluator, SyntaxErrorsNamePosition) {
  const auto error = [](absl::string_view text) {
    absl::StatusOr<CountdownExpression> e = ParseCountdownExpression(text);
    EXPECT_FALSE(e.ok()) << text;
    return e.ok() ? std::string() : std::string(e.status().message());
  };
  EXPECT_EQ(error(""), "empty expression at position 0");
  EXPECT_EQ(error("   "), "empty expression at position 3");
  EXPECT_EQ(error("3+"), "expression ends early at position 2");
  EXPECT_EQ(error("-3+4"), "unary sign (not allowed) at position 0");
  EXPECT_EQ(error("2*-3"), "unary sign (not allowed) at position 2");
  EXPECT_EQ(error("07+1"), "leading zero at position 0");
  EXPECT_EQ(error("1234567890123456789"), "number too long at position 0");
  EXPECT_EQ(error("(3+4"), "unclosed '(' at position 4");
  EXPECT_EQ(error("3+4)"), "unmatched ')' at position 3");
  EXPECT_EQ(error("3 4"), "expected an operator or ')', got 4 at position 2");
  EXPECT_EQ(error("3x4"), "expected an operator or ')', got x at position 1");
  EXPECT_EQ(error("3^4"), "expected an operator or ')', got ^ at position 1");
  EXPECT_EQ(error("()"), "expected a number or '(', got ) at position 1");
  EXPECT_EQ(error("3.5"), "expected an operator or ')', got . at position 1");
  EXPECT_EQ(error("3+4\n"), "expected an operator or ')', got \n at position 3");
  EXPECT_THAT(error(std::string("3+\0", 3)), HasSubstr("at position 2"));
  EXPECT_THAT(error("3+\xff"), HasSubstr("\xEF\xBF\xBD at position 2"));  // U+FFFD, not 0xff
}

TEST(CountdownEvaluator, DeepNestingIsIterative) {
  const int depth = 100000;
  const std::string balanced = std::string(depth, '(') + "3" + std::string(depth, ')');
  absl::StatusOr<CountdownExpression> e = ParseCountdownExpression(balanced);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->value->ToString(), "3");
  EXPECT_FALSE(ParseCountdownExpression(std::string(depth, '(')).ok());
  EXPECT_FALSE(ParseCountdownExpression(std::string(depth, '(') + "3").ok());
  EXPECT_FALSE(ParseCountdownExpression("3" + std::string(depth, ')')).ok());
  // Right-nested chain: 1-(1-(1-(...))) with depth operators pending at once.
  std::string chain;
  for (int i = 0; i < depth; ++i) chain += "1-(";
  chain += "1" + std::string(depth, ')');
  e = ParseCountdownExpression(chain);
  ASSERT_TRUE(e.ok()) << e.status();
  // Innermost "1", then each of the `depth` (even) wrappings 1-(x) flips 1 <-> 0.
  EXPECT_EQ(e->value->ToString(), "1");
  EXPECT_EQ(e->numbers.size(), depth + 1u);
}

TEST(CountdownEvaluator, OverflowIsReportedNotWrapped) {
  // 18-digit numbers multiplied five times overflow 128 bits.
  const std::string big = "999999999999999999";
  absl::StatusOr<CountdownExpression> e =
      ParseCountdownExpression(big + "*" + big + "*" + big + "*" + big + "*" + big);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_FALSE(e->value.has_value());
  EXPECT_EQ(e->error, "overflow");
  // Two of them do not.
  e = ParseCountdownExpression(big + "*" + big);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->value->ToString(), "999999999999999998000000000000000001");
}

TEST(CountdownAnswer, ParsesAndRejects) {
  absl::StatusOr<CountdownSpec> spec = ParseCountdownAnswer("3,7,20|27");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(spec->numbers, ElementsAre(3, 7, 20));
  EXPECT_EQ(spec->target, 27);
  EXPECT_EQ(FormatCountdownAnswer(*spec), "3,7,20|27");
  spec = ParseCountdownAnswer("5|-4");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->target, -4);
  for (absl::string_view bad :
       {"", "|", "3,7,20", "3,7,20|", "|27", "3,,7|27", "3,7,|27", " 3,7|27", "3,7|27 ", "03,7|27",
        "3,7|027", "3,7|-0", "3,7|+27", "a,b|c", "3,7|27|1", "1000000001|5",
        "3,7|10000000000000000000", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17|1"}) {
    EXPECT_FALSE(ParseCountdownAnswer(bad).ok()) << bad;
  }
  EXPECT_TRUE(ParseCountdownAnswer("1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16|1").ok());
}

v1::VerifierResult V(absl::string_view answer, absl::string_view completion) {
  return VerifyCountdown(answer, completion);
}

TEST(CountdownVerifier, CorrectWrongAndFormat) {
  v1::VerifierResult r = V("3,7,20|27", "20+7");
  EXPECT_EQ(r.reward(), 1.0);
  EXPECT_TRUE(r.correct());
  EXPECT_TRUE(r.parsed());
  EXPECT_EQ(r.extracted_answer(), "20+7");

  r = V("3,7,20|27", "20+7+3");  // valid numbers, wrong value: format reward
  EXPECT_EQ(r.reward(), kCountdownFormatReward);
  EXPECT_FALSE(r.correct());
  EXPECT_TRUE(r.parsed());
  EXPECT_EQ(r.detail(), "evaluates to 30, target 27");

  r = V("3,7,20|27", "20/3");
  EXPECT_EQ(r.reward(), kCountdownFormatReward);
  EXPECT_EQ(r.detail(), "evaluates to 20/3, target 27");

  EXPECT_EQ(V("3,7,20|27", "(20 - 3) + 7 + 3 * 0").reward(), 0.0);  // 0 not offered
  EXPECT_EQ(V("3,7,20|27", "7+20").reward(), 1.0);
  EXPECT_EQ(V("3,7,20|27", "  ((20))+(7)  \nthe rest is ignored").reward(), 1.0);
  EXPECT_EQ(V("3,7,20|27", "20+7\r\n").reward(), 1.0);
  EXPECT_EQ(V("4,6,2|12", "4*6/2").reward(), 1.0);
  EXPECT_EQ(V("4,6,3|8", "4/3*6").reward(), 1.0);  // exact: 4/3*6 = 8
  EXPECT_EQ(V("3,7,20|27", "").reward(), 0.0);
  EXPECT_EQ(V("3,7,20|27", "\n20+7").reward(), 0.0);  // first line is empty
  EXPECT_FALSE(V("3,7,20|27", "").parsed());
}

TEST(CountdownVerifier, NumbersMustBeOfferedAndNotReused) {
  v1::VerifierResult r = V("3,7,20|27", "21+6");
  EXPECT_EQ(r.reward(), 0.0);
  EXPECT_TRUE(r.parsed());
  EXPECT_EQ(r.detail(), "uses 21, which is not offered");

  r = V("3,7,20|27", "20+7+7-7");
  EXPECT_EQ(r.reward(), 0.0);
  EXPECT_EQ(r.detail(), "uses 7 more than the 1 time(s) it is offered");

  // A number offered twice may be used twice, not three times.
  EXPECT_EQ(V("3,3,5|11", "3+3+5").reward(), 1.0);
  EXPECT_EQ(V("3,3,5|14", "3+3+5+3").reward(), 0.0);
  // Concatenating digits makes another number.
  EXPECT_EQ(V("2,7|27", "27").reward(), 0.0);
  EXPECT_EQ(V("3,7,20|27", "207-180").reward(), 0.0);
}

TEST(CountdownVerifier, DivisionByZero) {
  v1::VerifierResult r = V("3,3,5|5", "5/(3-3)");
  EXPECT_EQ(r.reward(), 0.0);
  EXPECT_TRUE(r.parsed());
  EXPECT_FALSE(r.correct());
  EXPECT_EQ(r.detail(), "division by zero");
  // Division by zero in a branch that does not affect... every branch affects the value.
  EXPECT_EQ(V("3,3,5|5", "5+3/(3-3)*0").reward(), 0.0);
  r = V("1,3|1", "1/0");
  EXPECT_EQ(r.reward(), 0.0);
  EXPECT_EQ(r.detail(), "uses 0, which is not offered");
  r = V("1,0|1", "1/0");
  EXPECT_EQ(r.detail(), "division by zero");
}

TEST(CountdownVerifier, AdversarialCompletions) {
  const std::string answer = "3,7,20|27";
  EXPECT_EQ(V(answer, std::string("20+7\0", 5)).reward(), 0.0);
  EXPECT_EQ(V(answer, std::string("\0"
                                  "20+7",
                                  5))
                .reward(),
            0.0);
  EXPECT_EQ(V(answer, "-20+47").reward(), 0.0);
  EXPECT_EQ(V(answer, "20+7=27").reward(), 0.0);
  EXPECT_EQ(V(answer, "99999999999999999999999999999").reward(), 0.0);
  EXPECT_EQ(V(answer, "20\xc0\xaf+7").reward(), 0.0);  // overlong '/'
  EXPECT_EQ(V(answer, "２０+7").reward(), 0.0);        // full-width digits
  EXPECT_EQ(V(answer, std::string(10000, '(')).reward(), 0.0);
  EXPECT_EQ(V(answer, std::string(10000, '(') + "20+7" + std::string(10000, ')')).reward(), 1.0);
  std::string long_sum = "20";
  for (int i = 0; i < 100000; ++i) long_sum += "+7-7";
  v1::VerifierResult r = V(answer, long_sum);
  EXPECT_EQ(r.reward(), 0.0);
  EXPECT_LE(r.extracted_answer().size(), 203u);  // truncated for the record
  // Invalid UTF-8 never reaches the result's strings.
  r = V(answer, "\xff\xfe 20+7");
  EXPECT_EQ(r.reward(), 0.0);
  v1::VerifierResult round_trip;
  ASSERT_TRUE(round_trip.ParseFromString(r.SerializeAsString()));
  EXPECT_EQ(round_trip.extracted_answer(), "\xEF\xBF\xBD\xEF\xBF\xBD 20+7");
}

TEST(CountdownVerifier, MalformedAnswerScoresZero) {
  for (absl::string_view answer : {"", "27", "3,7,20", "x|y", "\xff|\xfe"}) {
    const v1::VerifierResult r = V(answer, "20+7");
    EXPECT_EQ(r.reward(), 0.0) << answer;
    EXPECT_FALSE(r.parsed());
    EXPECT_THAT(r.detail(), HasSubstr("malformed countdown answer"));
  }
}

// ---------------------------------------------------------------------------------------------
// Solver against brute force: every expression tree over every subset (pick two items, combine
// them with one of the six operations, recurse), each written with exactly the parentheses its
// tree needs, which is the shortest way to write that tree.

struct Item {
  Frac value;
  std::string text;
  int prec;  // 3 atom, 2 * /, 1 + -
};

void BruteForce(const std::vector<Item>& items, int64_t lo, int64_t hi,
                std::map<int64_t, size_t>& shortest) {
  for (const Item& it : items) {
    if (it.value.d == 1 && it.value.n >= lo && it.value.n <= hi) {
      auto [pos, inserted] = shortest.try_emplace(it.value.n, it.text.size());
      if (!inserted) pos->second = std::min(pos->second, it.text.size());
    }
  }
  for (size_t i = 0; i < items.size(); ++i) {
    for (size_t j = 0; j < items.size(); ++j) {
      if (i == j) continue;
      std::vector<Item> rest;
      for (size_t k = 0; k < items.size(); ++k) {
        if (k != i && k != j) rest.push_back(items[k]);
      }
      const Item& a = items[i];
      const Item& b = items[j];
      for (char op : std::string("+-*/")) {
        if ((op == '+' || op == '*') && i > j) continue;  // same values and lengths as j, i
        const std::optional<Frac> v = SlowApply(op, a.value, b.value);
        if (!v) continue;
        const int prec = (op == '+' || op == '-') ? 1 : 2;
        const bool lp = a.prec < prec;
        const bool rp = b.prec < prec || (b.prec == prec && (op == '-' || op == '/'));
        Item c{*v,
               (lp ? "(" + a.text + ")" : a.text) + std::string(1, op) +
                   (rp ? "(" + b.text + ")" : b.text),
               prec};
        rest.push_back(c);
        BruteForce(rest, lo, hi, shortest);
        rest.pop_back();
      }
    }
  }
}

TEST(CountdownSolver, MatchesBruteForceReachabilityAndShortestLength) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 60; ++trial) {
    const int n = trial < 45 ? 3 : 4;
    std::vector<int64_t> numbers;
    for (int k = 0; k < n; ++k) numbers.push_back(1 + static_cast<int64_t>(rng() % 25));
    std::vector<Item> items;
    for (int64_t x : numbers) items.push_back({Frac{x, 1}, std::to_string(x), 3});
    std::map<int64_t, size_t> expected;
    BruteForce(items, -50, 200, expected);
    const std::vector<CountdownSolution> got = SolveCountdown(numbers, -50, 200);
    ASSERT_EQ(got.size(), expected.size()) << ::testing::PrintToString(numbers);
    std::string offered;
    for (int64_t x : numbers) offered += (offered.empty() ? "" : ",") + std::to_string(x);
    for (const CountdownSolution& s : got) {
      ASSERT_TRUE(expected.count(s.target)) << s.target;
      EXPECT_EQ(s.expression.size(), expected[s.target])
          << ::testing::PrintToString(numbers) << " target " << s.target << ": " << s.expression;
      // The expression really reaches the target with the offered numbers.
      const v1::VerifierResult r =
          VerifyCountdown(offered + "|" + std::to_string(s.target), s.expression);
      EXPECT_TRUE(r.correct()) << s.expression << " for " << s.target << ": " << r.detail();
    }
  }
}

TEST(CountdownSolver, KnownCases) {
  std::vector<CountdownSolution> s = SolveCountdown({3, 7, 20}, 27, 27);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].expression, "7+20");
  s = SolveCountdown({2, 3, 4}, 20, 20);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].expression, "(2+3)*4");
  s = SolveCountdown({5}, 1, 100);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].expression, "5");
  EXPECT_TRUE(SolveCountdown({1, 1}, 3, 100).empty());  // 1+1 = 2 is the most
  EXPECT_TRUE(SolveCountdown({}, 1, 100).empty());
  EXPECT_TRUE(SolveCountdown({1, 2, 3, 4, 5, 6, 7}, 1, 100).empty());  // too many numbers
  // Deterministic.
  EXPECT_EQ(SolveCountdown({13, 4, 9, 17}, 1, 300).size(),
            SolveCountdown({13, 4, 9, 17}, 1, 300).size());
  const auto a = SolveCountdown({13, 4, 9, 17}, 1, 300);
  const auto b = SolveCountdown({13, 4, 9, 17}, 1, 300);
  for (size_t k = 0; k < a.size(); ++k) EXPECT_EQ(a[k].expression, b[k].expression);
}

}  // namespace
}  // namespace rhythm::common::tasks

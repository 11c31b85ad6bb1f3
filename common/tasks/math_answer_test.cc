#include "common/tasks/math_answer.h"

#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rhythm::common::tasks {
namespace {

using ::testing::Optional;

TEST(ExtractFinalAnswer, BoxedThenMarker) {
  EXPECT_THAT(ExtractFinalAnswer("so \\boxed{42}.", "Answer:"), Optional(std::string("42")));
  EXPECT_THAT(ExtractFinalAnswer("\\boxed{1} then \\boxed{ 2 }", "Answer:"),
              Optional(std::string("2")));
  EXPECT_THAT(ExtractFinalAnswer("\\boxed{\\frac{1}{2}}", "Answer:"),
              Optional(std::string("\\frac{1}{2}")));
  EXPECT_THAT(ExtractFinalAnswer("\\boxed{\\{1,2\\}}", "Answer:"),
              Optional(std::string("\\{1,2\\}")));
  // The last \boxed is unclosed: the previous balanced one is used.
  EXPECT_THAT(ExtractFinalAnswer("\\boxed{7} and \\boxed{8", "Answer:"),
              Optional(std::string("7")));
  // \boxed wins over the marker, wherever they are.
  EXPECT_THAT(ExtractFinalAnswer("\\boxed{7}\nAnswer: 8", "Answer:"), Optional(std::string("7")));
  EXPECT_THAT(ExtractFinalAnswer("Answer: 3\nAnswer:  5 \nmore text", "Answer:"),
              Optional(std::string("5")));
  EXPECT_THAT(ExtractFinalAnswer("Answer:", "Answer:"), Optional(std::string("")));
  EXPECT_THAT(ExtractFinalAnswer("#### 72", "####"), Optional(std::string("72")));
  EXPECT_EQ(ExtractFinalAnswer("answer: 5", "Answer:"), std::nullopt);  // case-sensitive
  EXPECT_EQ(ExtractFinalAnswer("42", "Answer:"), std::nullopt);
  EXPECT_EQ(ExtractFinalAnswer("Answer: 42", ""), std::nullopt);
  EXPECT_EQ(ExtractFinalAnswer("\\boxed{42", "Answer:"), std::nullopt);
  EXPECT_EQ(ExtractFinalAnswer("", "Answer:"), std::nullopt);
}

TEST(ExtractFinalAnswer, AdversarialInputsStayLinear) {
  // Many unclosed \boxed{: each would cost a full scan if matched one by one.
  std::string many;
  for (int i = 0; i < 100000; ++i) many += "\\boxed{";
  EXPECT_EQ(ExtractFinalAnswer(many, "Answer:"), std::nullopt);
  // Closed: the last \boxed{ is the innermost one.
  EXPECT_THAT(ExtractFinalAnswer(many + "5" + std::string(100000, '}'), "Answer:"),
              Optional(std::string("5")));
  EXPECT_THAT(ExtractFinalAnswer(many + "5}", "Answer:"), Optional(std::string("5")));
  EXPECT_EQ(ExtractFinalAnswer(std::string(1 << 20, '{'), "Answer:"), std::nullopt);
  std::string markers;
  for (int i = 0; i < 100000; ++i) markers += "Answer:";
  EXPECT_THAT(ExtractFinalAnswer(markers, "Answer:"), Optional(std::string("")));
}

TEST(NormalizeMathAnswer, Rules) {
  EXPECT_EQ(NormalizeMathAnswer("  $\\dfrac{1}{2}$ "), "\\frac{1}{2}");
  EXPECT_EQ(NormalizeMathAnswer("$$x = 5$$."), "5");
  EXPECT_EQ(NormalizeMathAnswer("\\(\\left( 1, 2 \\right)\\)"), "(1,2)");
  EXPECT_EQ(NormalizeMathAnswer("\\[ 1{,}000 \\]"), "1,000");
  EXPECT_EQ(NormalizeMathAnswer("90^\\circ"), "90");
  EXPECT_EQ(NormalizeMathAnswer("90^{\\circ}"), "90");
  EXPECT_EQ(NormalizeMathAnswer("50\\%"), "50");
  EXPECT_EQ(NormalizeMathAnswer("\\$5"), "5");
  EXPECT_EQ(NormalizeMathAnswer("\\boxed{\\boxed{3}}"), "3");
  EXPECT_EQ(NormalizeMathAnswer("\xE2\x88\x92"
                                "3"),
            "-3");
  EXPECT_EQ(NormalizeMathAnswer("\\leftarrow"), "\\leftarrow");  // not \left + "arrow"
  EXPECT_EQ(NormalizeMathAnswer("\\boxed{1}+\\boxed{2}"), "\\boxed{1}+\\boxed{2}");
}

// The number parser against a brute-force reference: random fractions p/q written in every
// supported form compare equal exactly when p1*q2 == p2*q1.
std::vector<std::string> Spellings(int64_t p, int64_t q, std::mt19937_64& rng) {
  const std::string sign = p < 0 ? "-" : (rng() % 5 == 0 ? "+" : "");
  const int64_t a = p < 0 ? -p : p;
  std::vector<std::string> out = {
      sign + std::to_string(a) + "/" + std::to_string(q),
      sign + "\\frac{" + std::to_string(a) + "}{" + std::to_string(q) + "}",
      "\\dfrac{" + sign + std::to_string(a) + "}{" + std::to_string(q) + "}",
      "$" + sign + std::to_string(a) + "/" + std::to_string(q) + "$"};
  // A finite decimal when q divides a power of ten.
  int64_t scale = 1;
  int places = 0;
  while (scale % q != 0 && places < 12) scale *= 10, ++places;
  if (scale % q == 0) {
    const int64_t digits = a * (scale / q);
    std::string s = std::to_string(digits);
    if (places > 0) {
      if (static_cast<int>(s.size()) <= places) s = std::string(places - s.size() + 1, '0') + s;
      s.insert(s.size() - places, ".");
      if (s[0] == '0' && rng() % 2 == 0) s = s.substr(1);  // ".5"
    }
    out.push_back(sign + s);
    if (places == 0 && s.size() > 3) {  // thousands separators
      std::string grouped;
      for (size_t k = 0; k < s.size(); ++k) {
        if (k > 0 && (s.size() - k) % 3 == 0) grouped += ",";
        grouped += s[k];
      }
      out.push_back(sign + grouped);
      out.push_back(sign + grouped + "\\text{ apples}");
    }
  }
  return out;
}

TEST(MathAnswersEqual, MatchesExactFractionComparison) {
  std::mt19937_64 rng(2024);
  int equal_pairs = 0, unequal_pairs = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const auto draw = [&](int64_t& p, int64_t& q) {
      static const int64_t kDens[] = {1, 2, 3, 4, 5, 6, 8, 10, 16, 20, 25, 125, 7, 1000};
      q = kDens[rng() % 14];
      p = static_cast<int64_t>(rng() % 40001) - 20000;
    };
    int64_t p1, q1, p2, q2;
    draw(p1, q1);
    if (trial % 3 == 0) {
      // Same value, another representation.
      const int64_t k = 1 + static_cast<int64_t>(rng() % 4);
      p2 = p1 * k, q2 = q1 * k;
    } else {
      draw(p2, q2);
    }
    const bool want = p1 * q2 == p2 * q1;
    (want ? equal_pairs : unequal_pairs)++;
    for (const std::string& x : Spellings(p1, q1, rng)) {
      for (const std::string& y : Spellings(p2, q2, rng)) {
        ASSERT_EQ(MathAnswersEqual(x, y), want) << x << " vs " << y;
      }
    }
  }
  EXPECT_GT(equal_pairs, 900);
  EXPECT_GT(unequal_pairs, 1500);
}

TEST(MathAnswersEqual, Table) {
  struct Case {
    const char* expected;
    const char* got;
    bool equal;
  };
  const Case cases[] = {
      {"42", "42", true},
      {"42", "42.0", true},
      {"42", "042", true},
      {"42", " 42. ", true},
      {"42", "43", false},
      {"-3", "-3", true},
      {"-3", "3", false},
      {"0", "-0", true},
      {"0.5", "1/2", true},
      {"0.5", "\\frac{1}{2}", true},
      {"0.5", "\\frac12", true},
      {"-\\frac{1}{2}", "\\frac{-1}{2}", true},
      {"-\\frac{1}{2}", "-0.5", true},
      {"\\frac{-1}{-2}", "0.5", true},
      {"1/3", "0.33", false},
      {"1/3", "0.333333333333", false},
      {"1000", "1,000", true},
      {"1000000", "1,000,000", true},
      {"1000", "1,00,0", false},
      {"1000", "1 000", true},
      {"5", "5 \\text{ cm}", true},
      {"5\\text{cm}", "5", true},
      {"5", "\\textbf{5}", true},
      {"\\text{(A)}", "(A)", true},
      {"(A)", "(B)", false},
      {"50\\%", "50", true},
      {"$18$", "18", true},
      {"x=5", "5", true},
      {"\\pi", "\\pi", true},
      {"\\frac{\\pi}{2}", "\\frac{\\pi} {2}", true},
      {"\\frac{\\pi}{2}", "\\frac{\\pi}{3}", false},
      {"(1,2)", "(1, 2)", true},
      {"1/0", "1/0", true},  // not a number: equal as strings
      {"5", "1/0", false},
      {"5", "\\frac{5}{0}", false},
      {"123456789012345678901234567890", "123,456,789,012,345,678,901,234,567,890", true},
      {"123456789012345678901234567890", "123456789012345678901234567891", false},
      {"61728394506172839450617283945", "123456789012345678901234567890/2", true},
      {"yes", "Yes", false},
      {"", "", true},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(MathAnswersEqual(c.expected, c.got), c.equal) << c.expected << " vs " << c.got;
    EXPECT_EQ(MathAnswersEqual(c.got, c.expected), c.equal) << c.got << " vs " << c.expected;
  }
}

TEST(ParseMathNumber, Forms) {
  std::optional<MathNumber> n = ParseMathNumber("-1,234.50");
  ASSERT_TRUE(n.has_value());
  EXPECT_TRUE(n->negative);
  EXPECT_EQ(n->num, "123450");
  EXPECT_EQ(n->den, "100");
  for (absl::string_view bad :
       {"", "-", ".", "5.", "1.2.3", "1,2345", ",123", "1/", "/2", "1/0", "--1", "1e5", "0x10",
        "\\frac{1}", "\\frac{1}{2}3", "abc", "1/-2"}) {
    EXPECT_EQ(ParseMathNumber(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(ParseMathNumber(std::string(201, '1')), std::nullopt);
  EXPECT_TRUE(ParseMathNumber(std::string(200, '1')).has_value());
}

TEST(VerifyMath, RewardsAndFields) {
  v1::VerifierResult r = VerifyMath("72", "Let me think.\nAnswer: 72", "Answer:");
  EXPECT_EQ(r.reward(), 1.0);
  EXPECT_TRUE(r.correct());
  EXPECT_TRUE(r.parsed());
  EXPECT_EQ(r.extracted_answer(), "72");

  r = VerifyMath("72", "so the total is \\boxed{71}", "Answer:");
  EXPECT_EQ(r.reward(), 0.0);
  EXPECT_TRUE(r.parsed());
  EXPECT_EQ(r.detail(), "expected 72");

  r = VerifyMath("72", "72", "Answer:");
  EXPECT_EQ(r.reward(), 0.0);
  EXPECT_FALSE(r.parsed());
  EXPECT_EQ(r.detail(), "no final answer: no \\boxed{} and no \"Answer:\"");

  r = VerifyMath("72", "Answer:\n72", "Answer:");
  EXPECT_FALSE(r.parsed());
  EXPECT_EQ(r.detail(), "empty final answer");

  r = VerifyMath("", "Answer: 1", "Answer:");
  EXPECT_FALSE(r.parsed());
  EXPECT_EQ(r.detail(), "malformed answer: empty");

  r = VerifyMath("1/2", "\\boxed{\\dfrac{1}{2}}", "");
  EXPECT_EQ(r.reward(), 1.0);
}

TEST(VerifyMath, AdversarialInputs) {
  const std::string nul("Answer: 7\0", 10);
  EXPECT_EQ(VerifyMath("7", nul, "Answer:").reward(), 0.0);
  v1::VerifierResult r = VerifyMath("7", "Answer: 7\xff", "Answer:");
  EXPECT_EQ(r.reward(), 0.0);
  v1::VerifierResult round_trip;
  ASSERT_TRUE(round_trip.ParseFromString(r.SerializeAsString()));
  EXPECT_EQ(round_trip.extracted_answer(), "7\xEF\xBF\xBD");
  // Huge boxed contents, nesting and numbers: no crash, bounded time, wrong.
  EXPECT_EQ(VerifyMath("7", "\\boxed{" + std::string(1 << 20, '9') + "}", "Answer:").reward(), 0.0);
  std::string nested;
  for (int i = 0; i < 50000; ++i) nested += "\\boxed{";
  nested += "7" + std::string(50000, '}');
  EXPECT_EQ(VerifyMath("7", nested, "Answer:").reward(), 1.0);  // the innermost is the last
  EXPECT_EQ(VerifyMath("7", nested, "Answer:").extracted_answer(), "7");
  // An expected answer too long to normalise is compared as a trimmed string.
  const std::string long_answer(5000, 'a');
  EXPECT_EQ(VerifyMath(long_answer, "Answer: " + long_answer + " ", "Answer:").reward(), 1.0);
  EXPECT_EQ(VerifyMath(long_answer, "Answer: " + long_answer + "a", "Answer:").reward(), 0.0);
  EXPECT_EQ(VerifyMath("7", "Answer: " + std::string(100000, '$') + "7" + std::string(100000, '$'),
                       "Answer:")
                .reward(),
            0.0);
  EXPECT_EQ(VerifyMath("7", "Answer: $$$$7$$$$", "Answer:").reward(), 1.0);
  EXPECT_EQ(VerifyMath("7", "Answer: \\text{" + std::string(3000, '{') + "7", "Answer:").reward(),
            0.0);
}

}  // namespace
}  // namespace rhythm::common::tasks

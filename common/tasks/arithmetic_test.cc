#include "common/tasks/arithmetic.h"

#include <algorithm>
#include <set>
#include <string>

#include "absl/strings/numbers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rhythm::common::tasks {
namespace {

using ::testing::HasSubstr;

TEST(ArithmeticVerifier, ExactAnswerOnTheFirstLine) {
  v1::VerifierResult r = VerifyArithmetic("85", "85");
  EXPECT_EQ(r.reward(), 1.0);
  EXPECT_TRUE(r.correct());
  EXPECT_TRUE(r.parsed());
  EXPECT_EQ(r.extracted_answer(), "85");
  EXPECT_EQ(VerifyArithmetic("85", "  85\t\r\nanything after the newline").reward(), 1.0);
  EXPECT_EQ(VerifyArithmetic("-12", "-12").reward(), 1.0);

  r = VerifyArithmetic("85", "84");
  EXPECT_EQ(r.reward(), 0.0);
  EXPECT_TRUE(r.parsed());
  EXPECT_EQ(r.detail(), "expected 85");
  for (absl::string_view wrong :
       {"085", "85.0", "+85", "8 5", "85 86", "\n85", "", "eighty-five", "85=85", "0x55"}) {
    EXPECT_EQ(VerifyArithmetic("85", wrong).reward(), 0.0) << wrong;
  }
  EXPECT_FALSE(VerifyArithmetic("85", "85.0").parsed());
  EXPECT_FALSE(VerifyArithmetic("85", "").parsed());
  EXPECT_TRUE(VerifyArithmetic("85", "085").parsed());
}

TEST(ArithmeticVerifier, AdversarialInputs) {
  EXPECT_EQ(VerifyArithmetic("85", std::string("85\0", 3)).reward(), 0.0);
  EXPECT_EQ(VerifyArithmetic("85", std::string(1 << 20, '8')).reward(), 0.0);
  EXPECT_EQ(VerifyArithmetic("85", "\xff\xfe").reward(), 0.0);
  const v1::VerifierResult r = VerifyArithmetic("85",
                                                "8\xff"
                                                "5");
  v1::VerifierResult round_trip;
  ASSERT_TRUE(round_trip.ParseFromString(r.SerializeAsString()));
  EXPECT_EQ(round_trip.extracted_answer(),
            "8\xEF\xBF\xBD"
            "5");
  for (absl::string_view bad : {"", "8 5", "abc", "-", "\xff", "85\n"}) {
    const v1::VerifierResult m = VerifyArithmetic(bad, "85");
    EXPECT_EQ(m.reward(), 0.0) << bad;
    EXPECT_FALSE(m.parsed());
    EXPECT_THAT(m.detail(), HasSubstr("malformed arithmetic answer"));
  }
}

// Schoolbook multiplication on decimal strings: a reference independent of 128-bit integers.
std::string MultiplyDecimal(const std::string& a, const std::string& b) {
  std::string out(a.size() + b.size(), '0');
  for (size_t i = a.size(); i-- > 0;) {
    int carry = 0;
    for (size_t j = b.size(); j-- > 0;) {
      const int t = (out[i + j + 1] - '0') + (a[i] - '0') * (b[j] - '0') + carry;
      out[i + j + 1] = static_cast<char>('0' + t % 10);
      carry = t / 10;
    }
    out[i] = static_cast<char>(out[i] + carry);
  }
  const size_t nz = out.find_first_not_of('0');
  return nz == std::string::npos ? "0" : out.substr(nz);
}

std::string AddDecimal(const std::string& a, const std::string& b) {
  std::string out;
  int carry = 0;
  for (size_t k = 0; k < std::max(a.size(), b.size()) || carry; ++k) {
    const int da = k < a.size() ? a[a.size() - 1 - k] - '0' : 0;
    const int db = k < b.size() ? b[b.size() - 1 - k] - '0' : 0;
    out.push_back(static_cast<char>('0' + (da + db + carry) % 10));
    carry = (da + db + carry) / 10;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

void CheckGeneratedProblems(int digits, bool multiplication) {
  v1::ArithmeticConfig config;
  config.set_digits(digits);
  config.set_multiplication(multiplication);
  absl::StatusOr<std::unique_ptr<Task>> task = CreateArithmeticTask(config, 50, 99);
  ASSERT_TRUE(task.ok()) << task.status();
  int products = 0;
  for (uint64_t i = 0; i < 2000; ++i) {
    const Problem p = i < 50 ? (*task)->HeldOutProblem(i) : (*task)->TrainProblem(i);
    ASSERT_EQ(p.prompt.back(), '=') << p.prompt;
    const size_t op = p.prompt.find_first_of("+*");
    ASSERT_NE(op, std::string::npos) << p.prompt;
    const std::string a = p.prompt.substr(0, op);
    const std::string b = p.prompt.substr(op + 1, p.prompt.size() - op - 2);
    for (const std::string& x : {a, b}) {
      EXPECT_EQ(x.size(), static_cast<size_t>(digits)) << p.prompt;
      EXPECT_TRUE(digits == 1 || x[0] != '0') << p.prompt;
    }
    const bool times = p.prompt[op] == '*';
    products += times;
    EXPECT_TRUE(multiplication || !times);
    EXPECT_EQ(p.answer, times ? MultiplyDecimal(a, b) : AddDecimal(a, b)) << p.prompt;
    EXPECT_EQ(p.reference_solution, p.answer);
    EXPECT_TRUE((*task)->Verify(p.answer, p.reference_solution).correct());
  }
  if (multiplication) {
    EXPECT_GT(products, 800);
    EXPECT_LT(products, 1200);
  }
}

TEST(ArithmeticTask, ProblemsAreRightAtEveryDifficulty) {
  for (int digits : {1, 2, 3, 9, 10, 17, 18}) {
    SCOPED_TRACE(digits);
    CheckGeneratedProblems(digits, false);
    CheckGeneratedProblems(digits, true);
  }
}

TEST(ArithmeticTask, DefaultPromptIsShort) {
  absl::StatusOr<std::unique_ptr<Task>> task = CreateArithmeticTask(v1::ArithmeticConfig(), 200, 1);
  ASSERT_TRUE(task.ok()) << task.status();
  const Problem p = (*task)->TrainProblem(0);
  EXPECT_EQ(p.prompt.size(), 6u) << p.prompt;  // "47+38="
  EXPECT_LE(p.answer.size(), 3u);
}

TEST(ArithmeticTask, SmallSpaceCapsHeldOutAtHalf) {
  v1::ArithmeticConfig config;
  config.set_digits(1);  // 55 unordered pairs
  absl::StatusOr<std::unique_ptr<Task>> task = CreateArithmeticTask(config, 200, 3);
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ((*task)->heldout_size(), 27u);
  ASSERT_EQ((*task)->warnings().size(), 1u);
  EXPECT_THAT((*task)->warnings()[0], HasSubstr("heldout_size 200 reduced to 27"));
  // Held-out problems are distinct up to operand order, and training never meets them, even
  // commuted; every one of the other 28 pairs shows up in training.
  std::set<std::pair<int, int>> heldout, train;
  const auto pair_of = [](const Problem& p) {
    int a = p.prompt[0] - '0', b = p.prompt[2] - '0';
    return std::make_pair(std::min(a, b), std::max(a, b));
  };
  for (uint64_t i = 0; i < 27; ++i) heldout.insert(pair_of((*task)->HeldOutProblem(i)));
  EXPECT_EQ(heldout.size(), 27u);
  for (uint64_t i = 0; i < 5000; ++i) {
    const auto pr = pair_of((*task)->TrainProblem(i));
    EXPECT_EQ(heldout.count(pr), 0u) << (*task)->TrainProblem(i).prompt;
    train.insert(pr);
  }
  EXPECT_EQ(train.size(), 28u);
}

TEST(ArithmeticTask, RejectsBadDigits) {
  v1::ArithmeticConfig config;
  for (int digits : {0, -1, 19}) {
    config.set_digits(digits);
    EXPECT_EQ(CreateArithmeticTask(config, 10, 1).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace rhythm::common::tasks

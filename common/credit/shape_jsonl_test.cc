// The JSONL shaping job: bad lines are reported with line and field and skipped, good lines
// come out with exactly what the credit functions compute for them.
#include "common/credit/shape_jsonl.h"

#include <sstream>

#include "ATen/ATen.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace rhythm::common::credit {
namespace {

using nlohmann::json;

constexpr char kInput[] =
    R"({"group": 1, "reward": 1.0, "waad": [1,5,2,2,6,1,1,3,3,2], "fai": [0.1,0.5,0.9,0.2,0.3,0.8,0.05,0.7,null,null], "entropy": [0,0,0,0,0,0,0,0,0,0]}
{"group": 1, "reward": 0.0, "waad": [1,2,3], "fai": [0.3,null,null], "entropy": [1,1,1], "logprobs": [-1,-2,-3]}
not json at all
{"group": 2, "reward": "high", "waad": [1], "fai": [null], "entropy": [0]}

{"group": 2, "reward": 0.5, "waad": [1, 2], "fai": [0.1], "entropy": [0, 0]}
{"group": 2, "reward": 0.5, "waad": [1, null], "fai": [0.1, 0.2], "entropy": [0, 0]}
{"reward": 0.5, "waad": [1], "fai": [0.1], "entropy": [0]}
{"group": 3, "reward": 0.25, "waad": [4, 4], "fai": [0.1, 0.2], "entropy": [0, 0]}
{"group": 3, "reward": 0.25, "waad": [1], "fai": [null], "entropy": [0]}
)";

TEST(ShapeStream, ReportsBadLinesAndShapesTheRest) {
  std::istringstream in(kInput);
  std::ostringstream out, errors;
  ShapeStats stats = ShapeStream(in, out, errors, ShapeOptions());
  EXPECT_EQ(stats.lines, 9);
  EXPECT_EQ(stats.malformed, 5);
  EXPECT_EQ(stats.responses, 4);
  EXPECT_EQ(stats.groups, 2);
  EXPECT_EQ(stats.zero_variance_groups, 1);
  const std::string err = errors.str();
  EXPECT_NE(err.find("line 3: json: not valid JSON"), std::string::npos) << err;
  EXPECT_NE(err.find("line 4: reward: expected a number, got \"high\""), std::string::npos)
      << err;
  EXPECT_NE(err.find("line 6: fai: has 1 values, waad has 2"), std::string::npos) << err;
  EXPECT_NE(err.find("line 7: waad[1]: expected a number, got null"), std::string::npos) << err;
  EXPECT_NE(err.find("line 8: group: missing"), std::string::npos) << err;

  std::vector<json> rows;
  std::istringstream lines(out.str());
  for (std::string line; std::getline(lines, line);) rows.push_back(json::parse(line));
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0]["line"], 1);
  EXPECT_EQ(rows[1]["line"], 2);
  EXPECT_EQ(rows[2]["line"], 9);
  // Group 1 = rewards {1, 0}: GRPO advantages +-1/(sqrt(.5) + eps).
  EXPECT_NEAR(rows[0]["advantage"].get<double>(), 0.7071063, 1e-5);
  EXPECT_NEAR(rows[1]["advantage"].get<double>(), -0.7071063, 1e-5);
  // Line 1 is the hand-worked example of token_credit_test.cc.
  EXPECT_EQ(rows[0]["anchor"], json({2, 5, 7}));
  EXPECT_EQ(rows[0]["dominated"], json({2, 5}));
  EXPECT_EQ(rows[0]["introductory"], json({0, 4}));
  EXPECT_EQ(rows[0]["preplan"], json({0, 1, 3, 4}));
  const std::vector<double> gamma = rows[0]["gamma"];
  const std::vector<double> shaped = rows[0]["shaped"];
  ASSERT_EQ(gamma.size(), 10u);
  for (size_t t = 0; t < 10; ++t) {
    EXPECT_NEAR(shaped[t], gamma[t] * rows[0]["advantage"].get<double>(), 1e-5);
  }
  EXPECT_DOUBLE_EQ(gamma[7], 1.5);
  EXPECT_DOUBLE_EQ(gamma[0], 1.25);
  // Group 3 has equal rewards: flagged, advantage and shaped exactly zero.
  EXPECT_EQ(rows[2]["zero_variance_group"], true);
  EXPECT_EQ(rows[2]["advantage"], 0.0);
  for (double s : rows[2]["shaped"]) EXPECT_EQ(s, 0.0);
}

TEST(ShapeStream, RandomStrategyIsReproducibleFromTheSeed) {
  std::string input;
  for (int i = 0; i < 20; ++i) {
    input += R"({"group": )" + std::to_string(i / 4) + R"(, "reward": )" +
             std::to_string(i % 2) + R"(, "waad": [1,2,3,4,5,6,7,8,9,10], "fai": [1,1,1,1,1,1,1,1,1,1], "entropy": [0,0,0,0,0,0,0,0,0,0]})" "\n";
  }
  ShapeOptions o;
  o.credit.strategy = v1::CREDIT_STRATEGY_RANDOM;
  auto run = [&](uint64_t seed) {
    o.credit.seed = seed;
    std::istringstream in(input);
    std::ostringstream out, err;
    ShapeStream(in, out, err, o);
    return out.str();
  };
  EXPECT_EQ(run(5), run(5));
  EXPECT_NE(run(5), run(6));
}

}  // namespace
}  // namespace rhythm::common::credit

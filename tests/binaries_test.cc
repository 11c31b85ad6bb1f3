// The three binaries as a user runs them: --help is complete, --version answers, a bad config
// is one line naming the key with a non-zero exit, and `rhythm selfcheck` passes.
#include <fstream>

#include "gtest/gtest.h"
#include "tests/subprocess.h"

namespace rhythm::testing {
namespace {

std::string WriteTemp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

class Binaries : public ::testing::TestWithParam<std::string> {};

TEST_P(Binaries, HelpListsEveryCommonFlag) {
  ProcessResult r = RunProcess({BinaryPath(GetParam()), "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* flag : {"--config FILE", "--set KEY=VALUE", "--print-config", "--help",
                           "--version"}) {
    EXPECT_NE(r.out.find(flag), std::string::npos) << GetParam() << " lacks " << flag;
  }
  EXPECT_NE(r.out.find("Usage: " + GetParam()), std::string::npos) << r.out;
}

TEST_P(Binaries, VersionPrintsNameAndVersion) {
  ProcessResult r = RunProcess({BinaryPath(GetParam()), "--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.rfind(GetParam() + " 0.", 0), 0u) << r.out;
}

TEST_P(Binaries, BadConfigIsOneLineNamingTheKey) {
  const std::string bad = WriteTemp("bad.yaml", "trainer:\n  lr: 1e-6\n  lrr: 3\n");
  ProcessResult r = RunProcess({BinaryPath(GetParam()), "--config", bad});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(CountLines(r.err), 1) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("unknown key 'trainer.lrr'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("bad.yaml:3"), std::string::npos) << r.err;
}

TEST_P(Binaries, OutOfRangeOverrideIsOneLine) {
  ProcessResult r = RunProcess({BinaryPath(GetParam()), "--set", "credit.quantile=2"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(CountLines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("credit.quantile = 2 is out of range [0, 1]"), std::string::npos)
      << r.err;
}

TEST_P(Binaries, UnknownFlagIsOneLine) {
  ProcessResult r = RunProcess({BinaryPath(GetParam()), "--confg", "x.yaml"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(CountLines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("did you mean '--config'"), std::string::npos) << r.err;
}

TEST_P(Binaries, PrintConfigShowsResolvedValues) {
  const std::string good = WriteTemp("good.yaml", "credit:\n  strategy: entropy\n");
  ProcessResult r = RunProcess({BinaryPath(GetParam()), "--config", good, "--set",
                                "trainer.lr=5e-6", "--print-config"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("strategy: entropy"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("lr: 5e-06"), std::string::npos) << r.out;
}

INSTANTIATE_TEST_SUITE_P(All, Binaries,
                         ::testing::Values("rhythm-learner", "rhythm-actor", "rhythm"));

TEST(RhythmTool, SelfCheckPasses) {
  ProcessResult r = RunProcess({BinaryPath("rhythm"), "selfcheck"}, 120);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const char* check : {"runtime:", "torch: matmul", "protobuf:", "grpc:", "metrics:",
                            "config:"}) {
    EXPECT_NE(r.out.find(check), std::string::npos) << "missing " << check << "\n" << r.out;
  }
  EXPECT_EQ(r.out.find("FAIL"), std::string::npos) << r.out;
}

TEST(RhythmTool, ShapeReportsMalformedLinesAndShapesTheRest) {
  const std::string input = WriteTemp(
      "shape.jsonl",
      R"({"group": 1, "reward": 1, "waad": [1,5,2,2,6,1,1,3,3,2], "fai": [0.1,0.5,0.9,0.2,0.3,0.8,0.05,0.7,null,null], "entropy": [0,0,0,0,0,0,0,0,0,0]})"
      "\n"
      R"({"group": 1, "reward": 0, "waad": [1,2], "fai": [0.3], "entropy": [1,1]})"
      "\n"
      R"({"group": 1, "reward": 0, "waad": [1,2,3], "fai": [0.3,null,null], "entropy": [1,1,1]})"
      "\n");
  const std::string output = ::testing::TempDir() + "/shaped.jsonl";
  ProcessResult r = RunProcess({BinaryPath("rhythm"), "shape", "--input", input, "--output",
                                output, "--strategy", "coupled", "--q", "0.4"});
  EXPECT_EQ(r.exit_code, 1) << "malformed lines make the exit code 1\n" << r.err;
  EXPECT_NE(r.err.find("line 2: fai: has 1 values, waad has 2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("2 responses shaped (coupled), 1 malformed"), std::string::npos) << r.err;
  std::ifstream shaped(output);
  std::string first, second, third;
  std::getline(shaped, first);
  std::getline(shaped, second);
  EXPECT_FALSE(std::getline(shaped, third)) << "one output line per valid input line";
  EXPECT_NE(first.find("\"anchor\":[2,5,7]"), std::string::npos) << first;
  EXPECT_NE(second.find("\"line\":3"), std::string::npos) << second;
}

TEST(RhythmTool, ShapeValidatesItsShortcutsLikeConfigKeys) {
  ProcessResult r = RunProcess({BinaryPath("rhythm"), "shape", "--input", "x", "--q", "2"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("credit.quantile = 2 is out of range [0, 1]"), std::string::npos)
      << r.err;
  r = RunProcess({BinaryPath("rhythm"), "shape", "--input", "x", "--strategy", "greedy"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("credit.strategy: unknown value 'greedy'"), std::string::npos) << r.err;
  r = RunProcess({BinaryPath("rhythm"), "shape", "--input", "/nonexistent.jsonl"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("cannot read '/nonexistent.jsonl'"), std::string::npos) << r.err;
}

TEST(RhythmTool, UnknownCommandIsAnError) {
  ProcessResult r = RunProcess({BinaryPath("rhythm"), "trian"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'trian'"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace rhythm::testing

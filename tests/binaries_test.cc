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

TEST(RhythmTool, UnknownCommandIsAnError) {
  ProcessResult r = RunProcess({BinaryPath("rhythm"), "trian"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'trian'"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace rhythm::testing

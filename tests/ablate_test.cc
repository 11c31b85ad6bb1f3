// rhythm ablate end to end, in miniature: two strategies x one seed from one shared warm start
// on countdown traces, the outputs' structure, that the strategies' gamma statistics differ,
// that a second invocation resumes (keeps both finished runs), and ablation.html in headless
// Chromium. Also the statistics helpers against hand-computed values.
#include "cli/ablate.h"

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/subprocess.h"

namespace rhythm::testing {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const std::string& path) {
  std::stringstream s;
  s << std::ifstream(path).rdbuf();
  return s.str();
}

std::vector<std::string> AblateArgs(const std::string& out) {
  std::vector<std::string> args = {BinaryPath("rhythm"), "ablate", "--out", out};
  for (const char* arg :
       {"--strategies", "none,coupled", "--seeds", "1", "--parallel", "2", "--steps", "3",
        "--sft-steps", "30", "--n", "32", "--pass-k", "2", "--curve-n", "32", "--set",
        "task.kind=countdown", "--set", "task.countdown.format=steps", "--set",
        "task.countdown.num_numbers=3", "--set", "task.heldout_size=64", "--set",
        "generation.max_new_tokens=40", "--set", "model.tiny.num_layers=2", "--set",
        "model.tiny.hidden_size=64", "--set", "model.tiny.intermediate_size=128", "--set",
        "trainer.batch_groups=2", "--set", "learner.checkpoint_every=2",
        // A 30-step warm start scores 0 everywhere: keep its zero-variance
        // groups, or the learner never gets a batch with signal.
        "--set", "credit.drop_zero_variance_groups=false"}) {
    args.push_back(arg);
  }
  return args;
}

class AblateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    out_ = new std::string(::testing::TempDir() + "/ablate_test_run");
    fs::remove_all(*out_);
    first_ = new ProcessResult(RunProcess(AblateArgs(*out_), 300));
    second_ = new ProcessResult(RunProcess(AblateArgs(*out_), 120));
  }
  static void TearDownTestSuite() {
    delete first_;
    delete second_;
    delete out_;
  }
  static std::string* out_;
  static ProcessResult* first_;
  static ProcessResult* second_;
};
std::string* AblateTest::out_ = nullptr;
ProcessResult* AblateTest::first_ = nullptr;
ProcessResult* AblateTest::second_ = nullptr;

TEST_F(AblateTest, WritesTablesAndTheStrategiesCreditDiffers) {
  ASSERT_EQ(first_->exit_code, 0) << first_->out << first_->err;
  EXPECT_NE(first_->out.find("started none seed 1"), std::string::npos) << first_->out;
  EXPECT_NE(first_->out.find("started coupled seed 1"), std::string::npos) << first_->out;
  EXPECT_TRUE(fs::exists(*out_ + "/warm/config.json")) << "one shared warm start";
  EXPECT_TRUE(fs::exists(*out_ + "/runs/none-seed1/report.html"));
  EXPECT_TRUE(fs::exists(*out_ + "/runs/coupled-seed1/result.json"));

  const std::string csv = ReadFile(*out_ + "/ablation.csv");
  std::vector<std::string> lines = absl::StrSplit(csv, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << csv;
  EXPECT_EQ(lines[0].rfind("strategy,seed,greedy_before,greedy_after,sampled_before,", 0), 0u);
  EXPECT_EQ(lines[1].rfind("none,1,", 0) == 0 || lines[2].rfind("none,1,", 0) == 0, true) << csv;

  nlohmann::json j = nlohmann::json::parse(ReadFile(*out_ + "/ablation.json"));
  ASSERT_EQ(j["runs"].size(), 2u);
  ASSERT_EQ(j["strategies"].size(), 2u);
  EXPECT_EQ(j["config"]["seeds"], 1);
  EXPECT_EQ(j["config"]["problems"], 32);
  const nlohmann::json& none = j["strategies"][0];
  const nlohmann::json& coupled = j["strategies"][1];
  EXPECT_EQ(none["arm"], "none");
  EXPECT_EQ(coupled["arm"], "coupled");
  for (const nlohmann::json* s : {&none, &coupled}) {
    EXPECT_EQ((*s)["runs"], 1);
    EXPECT_GE((*s)["sampled"]["mean"].get<double>(), 0.0);
    EXPECT_LE((*s)["sampled"]["mean"].get<double>(), 1.0);
    EXPECT_GE((*s)["curve"].size(), 2u) << "warm start and at least one checkpoint";
    EXPECT_GT((*s)["gamma"]["fai_defined"].get<double>(), 0.1)
        << "responses are longer than the FAI band's lower horizon";
  }
  // Both runs start from the same warm start: the same "before".
  EXPECT_EQ(j["runs"][0]["before"]["pass1"], j["runs"][1]["before"]["pass1"]);
  // The instrument sees the strategies differ: none amplifies nothing, coupled a share.
  EXPECT_EQ(none["gamma"]["amplified_tokens"].get<double>(), 0.0);
  EXPECT_GT(coupled["gamma"]["amplified_tokens"].get<double>(), 0.1);
  EXPECT_EQ(none["sampled_vs_none"]["mean"].get<double>(), 0.0) << "paired with itself";
  EXPECT_EQ(coupled["sampled_vs_none"]["n"], 1);
}

TEST_F(AblateTest, ASecondRunKeepsFinishedRuns) {
  ASSERT_EQ(second_->exit_code, 0) << second_->out << second_->err;
  EXPECT_NE(second_->out.find("kept " + *out_ + "/runs/none-seed1"), std::string::npos)
      << second_->out;
  EXPECT_NE(second_->out.find("kept " + *out_ + "/runs/coupled-seed1"), std::string::npos);
  EXPECT_EQ(second_->out.find("started"), std::string::npos) << "nothing reran";
  EXPECT_EQ(second_->out.find("shared warm start ->"), std::string::npos) << "nor the warm start";
}

TEST_F(AblateTest, ReportRendersInHeadlessChromium) {
  if (!fs::exists(kChromium)) GTEST_SKIP() << kChromium << " is not installed";
  ASSERT_EQ(first_->exit_code, 0);
  ProcessResult dom =
      RunChromium({"--dump-dom", "file://" + fs::absolute(*out_ + "/ablation.html").string()});
  ASSERT_EQ(dom.exit_code, 0) << dom.err;
  EXPECT_NE(dom.out.find("<svg class=\"chart\""), std::string::npos);
  EXPECT_NE(dom.out.find("data-label=\"coupled\""), std::string::npos);
  EXPECT_NE(dom.out.find("<polygon class=\"band\""), std::string::npos);
  const std::regex row(R"(<tr><td>(none|coupled)</td>)");
  EXPECT_EQ(std::distance(std::sregex_iterator(dom.out.begin(), dom.out.end(), row),
                          std::sregex_iterator()),
            4)
      << "two rows in the final table, two in the gamma table";
}

TEST(AblateStatistics, MeanAndStudentInterval) {
  const cli::MeanCi c = cli::MeanWithCi({0.1, 0.2, 0.3});
  // mean 0.2, sd 0.1, se 0.1/sqrt(3), t(0.975, 2) = 4.303.
  EXPECT_NEAR(c.mean, 0.2, 1e-12);
  EXPECT_NEAR(c.hi - c.mean, 4.303 * 0.1 / std::sqrt(3.0), 1e-9);
  EXPECT_NEAR(c.mean - c.lo, c.hi - c.mean, 1e-12);
  EXPECT_EQ(c.n, 3);
  const cli::MeanCi one = cli::MeanWithCi({0.5});
  EXPECT_EQ(one.lo, 0.5);
  EXPECT_EQ(one.hi, 0.5);
  EXPECT_EQ(cli::MeanWithCi({}).n, 0);
}

TEST(AblateStatistics, PairedDifferencesMatchSeedBySeed) {
  auto run = [](const char* arm, int seed, double sampled) {
    nlohmann::json r;
    r["arm"] = arm;
    r["seed"] = seed;
    r["after"] = {{"pass1", sampled / 2}, {"sampled", sampled}};
    r["curve"] = nlohmann::json::array({{{"version", 0}, {"sampled", 0.1}}});
    r["amplified_tokens"] = std::string(arm) == "none" ? 0.0 : 0.4;
    return r;
  };
  // coupled - none by seed: +0.1, +0.3, -0.1 -> mean 0.1, sd 0.2.
  std::vector<nlohmann::json> runs = {run("none", 1, 0.2),    run("none", 2, 0.3),
                                      run("none", 3, 0.4),    run("coupled", 1, 0.3),
                                      run("coupled", 2, 0.6), run("coupled", 3, 0.3)};
  auto arms = cli::ParseArms("none,coupled");
  ASSERT_TRUE(arms.ok());
  nlohmann::json s = cli::SummarizeAblation(runs, *arms);
  const nlohmann::json& d = s[1]["sampled_vs_none"];
  EXPECT_NEAR(d["mean"].get<double>(), 0.1, 1e-12);
  EXPECT_NEAR(d["hi"].get<double>() - 0.1, 4.303 * 0.2 / std::sqrt(3.0), 1e-9);
  EXPECT_NEAR(s[1]["sampled"]["mean"].get<double>(), 0.4, 1e-12);
  EXPECT_NEAR(s[1]["gamma"]["amplified_tokens"].get<double>(), 0.4, 1e-12);
  EXPECT_EQ(s[1]["curve"].size(), 1u);
}

TEST(AblateStatistics, ArmNamesAreCheckedAndInvertedMeansBottomQ) {
  auto arms = cli::ParseArms("none, coupled_inverted,global_anchor");
  ASSERT_TRUE(arms.ok()) << arms.status();
  ASSERT_EQ(arms->size(), 3u);
  EXPECT_EQ((*arms)[1].strategy, v1::CREDIT_STRATEGY_COUPLED);
  EXPECT_TRUE((*arms)[1].invert_selection);
  EXPECT_FALSE((*arms)[2].invert_selection);
  auto bad = cli::ParseArms("none,greedy");
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'greedy' is not a strategy"), std::string::npos);
  EXPECT_FALSE(cli::ParseArms("none,none").ok());
  EXPECT_FALSE(cli::ParseArms("random_inverted").ok()) << "nothing to invert";
}

}  // namespace
}  // namespace rhythm::testing

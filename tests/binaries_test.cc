// The three binaries as a user runs them: --help is complete, --version answers, a bad config
// is one line naming the key with a non-zero exit, and `rhythm selfcheck` passes.
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
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

TEST(RhythmTool, InitModelThenGenerateOnlineSummariesEqualTheReference) {
  const std::string dir = ::testing::TempDir() + "/tiny_model";
  std::filesystem::remove_all(dir);
  ProcessResult init = RunProcess({BinaryPath("rhythm"), "init-model", "--out", dir, "--set",
                                   "model.tiny.num_layers=3", "--seed", "4"});
  ASSERT_EQ(init.exit_code, 0) << init.err;
  std::vector<std::string> args = {BinaryPath("rhythm"), "generate", "--model", dir,
                                   "--prompt", "7*8=", "--max-new-tokens", "24", "--samples",
                                   "2", "--fai-band", "2,8", "--window", "4", "--seed", "9",
                                   "--json"};
  ProcessResult online = RunProcess(args);
  ASSERT_EQ(online.exit_code, 0) << online.err;
  args.push_back("--reference");
  ProcessResult reference = RunProcess(args);
  ASSERT_EQ(reference.exit_code, 0) << reference.err;
  std::istringstream a(online.out), b(reference.out);
  std::string la, lb;
  int samples = 0;
  while (std::getline(a, la) && std::getline(b, lb)) {
    const nlohmann::json ja = nlohmann::json::parse(la), jb = nlohmann::json::parse(lb);
    for (const char* key : {"prompt_ids", "response_ids", "logprobs", "entropy", "waad", "fai",
                            "local_heads", "global_heads", "tap_layers", "text"}) {
      ASSERT_TRUE(ja.contains(key)) << key;
    }
    EXPECT_EQ(ja["summary_source"], "online");
    EXPECT_EQ(jb["summary_source"], "reference");
    EXPECT_EQ(ja["response_ids"], jb["response_ids"]) << "same seed, same tokens";
    EXPECT_EQ(ja["local_heads"], jb["local_heads"]);
    EXPECT_EQ(ja["global_heads"], jb["global_heads"]);
    EXPECT_EQ(ja["tap_layers"], nlohmann::json({1, 2}));
    ASSERT_EQ(ja["waad"].size(), ja["response_ids"].size());
    for (size_t j = 0; j < ja["waad"].size(); ++j) {
      EXPECT_NEAR(ja["waad"][j].get<double>(), jb["waad"][j].get<double>(), 1e-4);
      EXPECT_EQ(ja["fai"][j].is_null(), jb["fai"][j].is_null()) << j;
      if (!ja["fai"][j].is_null()) {
        EXPECT_NEAR(ja["fai"][j].get<double>(), jb["fai"][j].get<double>(), 1e-4);
      }
    }
    ++samples;
  }
  EXPECT_EQ(samples, 2);
}

TEST(RhythmTool, GenerateRejectsBadArguments) {
  const std::string dir = ::testing::TempDir() + "/tiny_model_args";
  std::filesystem::remove_all(dir);
  ASSERT_EQ(RunProcess({BinaryPath("rhythm"), "init-model", "--out", dir}).exit_code, 0);
  struct Case {
    std::vector<std::string> extra;
    std::string want;
  } cases[] = {
      {{"--prompt", "1", "--prompt-ids", "1"}, "exactly one of --prompt"},
      {{"--prompt-ids", "1,x"}, "'x' is not a token id"},
      {{"--prompt-ids", "1,5000"}, "token 1 = 5000 is outside the vocabulary"},
      {{"--prompt", "1", "--fai-band", "10"}, "--fai-band '10' must be LO,HI"},
      {{"--prompt", "1", "--tap-layers", "0,9"}, "tap layer 9 is outside"},
      {{"--prompt", "1", "--temperature", "-1"}, "generation.temperature = -1 is out of range"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {BinaryPath("rhythm"), "generate", "--model", dir};
    args.insert(args.end(), c.extra.begin(), c.extra.end());
    ProcessResult r = RunProcess(args);
    EXPECT_NE(r.exit_code, 0) << c.want;
    EXPECT_NE(r.err.find(c.want), std::string::npos) << r.err;
  }
  ProcessResult missing =
      RunProcess({BinaryPath("rhythm"), "generate", "--model", "/nonexistent", "--prompt", "1"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("/nonexistent/config.json: cannot read"), std::string::npos)
      << missing.err;
  // A tokenizer file that is there but malformed is reported with its own error, not as "has
  // no tokenizer".
  std::ofstream(dir + "/rhythm_tokenizer.json") << "{\"not\": json";
  ProcessResult bad_tokenizer =
      RunProcess({BinaryPath("rhythm"), "generate", "--model", dir, "--prompt", "1"});
  EXPECT_EQ(bad_tokenizer.exit_code, 1);
  EXPECT_NE(bad_tokenizer.err.find("rhythm_tokenizer.json: (document): not valid JSON"),
            std::string::npos)
      << bad_tokenizer.err;
  EXPECT_EQ(bad_tokenizer.err.find("has no tokenizer"), std::string::npos) << bad_tokenizer.err;
}

TEST(RhythmTool, SftLowersTheLossThenEvalScoresTheHeldOutSet) {
  const std::string dir = ::testing::TempDir() + "/sft_model";
  std::filesystem::remove_all(dir);
  ProcessResult sft = RunProcess({BinaryPath("rhythm"), "sft", "--out", dir, "--task",
                                  "arithmetic", "--steps", "60", "--batch", "8", "--set",
                                  "model.tiny.num_layers=2"},
                                 300);
  ASSERT_EQ(sft.exit_code, 0) << sft.err;
  std::vector<double> losses;
  std::istringstream lines(sft.out);
  for (std::string line; std::getline(lines, line);) {
    const size_t at = line.find(" loss ");
    if (at != std::string::npos) losses.push_back(std::stod(line.substr(at + 6)));
  }
  ASSERT_GE(losses.size(), 2u) << sft.out;
  EXPECT_LT(losses.back(), 0.8 * losses.front()) << sft.out;
  ProcessResult eval = RunProcess({BinaryPath("rhythm"), "eval", "--model", dir, "--task",
                                   "arithmetic", "--n", "20", "--pass-k", "2"});
  EXPECT_EQ(eval.exit_code, 0) << eval.err;
  EXPECT_NE(eval.out.find("arithmetic held-out n=20 pass@1 "), std::string::npos) << eval.out;
  EXPECT_NE(eval.out.find(" pass@2 "), std::string::npos) << eval.out;
  ProcessResult bad = RunProcess({BinaryPath("rhythm"), "eval", "--model", dir, "--n", "0"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--n '0' must be >= 1"), std::string::npos) << bad.err;
}

// `rhythm analyze` end to end on a random 3-layer model tapped at its top layer only, so the
// per-third statistics (from a forward pass's maps) must reproduce the main ones (from the
// engine's online summaries).
TEST(RhythmTool, AnalyzeWritesTheStatisticsAndThePage) {
  const std::string dir = ::testing::TempDir() + "/analyze_model";
  const std::string out = ::testing::TempDir() + "/analyze_out";
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(out);
  ASSERT_EQ(RunProcess({BinaryPath("rhythm"), "init-model", "--out", dir, "--set",
                        "model.tiny.num_layers=3", "--seed", "5"})
                .exit_code,
            0);
  ProcessResult r = RunProcess({BinaryPath("rhythm"), "analyze", "--model", dir, "--out", out,
                                "--n", "12", "--max-new-tokens", "24", "--tap-layers", "2",
                                "--examples", "2", "--seed", "3"},
                               120);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("entropy at WAAD peaks"), std::string::npos) << r.out;
  std::ifstream in(out + "/analysis.json");
  const nlohmann::json a = nlohmann::json::parse(in);
  EXPECT_GE(a["responses"].get<int>(), 8);
  EXPECT_GT(a["fai_defined"].get<double>(), 0.3);  // the short task's band [1, 8] acts
  for (const char* rule : {"local_max", "top_20"}) {
    const nlohmann::json& s = a["statistics"][rule];
    EXPECT_GT(s["waad_peak_tokens"].get<int>(), 0) << rule;
    EXPECT_GT(s["fai_peaks"].get<int>(), 0) << rule;
    const double base = s["fai_peaks_after_waad_peak_baseline"].get<double>();
    EXPECT_GT(base, 0) << rule;
    EXPECT_LT(base, 1) << rule;
    EXPECT_LE(s["entropy_difference_ci"][0].get<double>(),
              s["entropy_difference_ci"][1].get<double>());
  }
  ASSERT_EQ(a["per_third"].size(), 1u);
  EXPECT_EQ(a["per_third"][0]["third"], "top");
  EXPECT_EQ(a["per_third"][0]["layers"], nlohmann::json({2}));
  const nlohmann::json& third = a["per_third"][0]["statistics"]["local_max"];
  const nlohmann::json& main = a["statistics"]["local_max"];
  EXPECT_EQ(third["waad_peak_tokens"], main["waad_peak_tokens"]);
  EXPECT_EQ(third["fai_peaks"], main["fai_peaks"]);
  EXPECT_NEAR(third["entropy_at_waad_peaks"].get<double>(),
              main["entropy_at_waad_peaks"].get<double>(), 1e-6);
  EXPECT_NEAR(third["fai_peaks_after_waad_peak"].get<double>(),
              main["fai_peaks_after_waad_peak"].get<double>(), 1e-6);
  const nlohmann::json& pw = a["perturbation"]["words"];
  EXPECT_EQ(pw["trials"].get<int>(), 3 * a["perturbation"]["responses"].get<int>());
  EXPECT_GT(pw["trials"].get<int>(), 0);
  EXPECT_GE(pw["top_fai_mean_jaccard"].get<double>(), 0);
  EXPECT_LE(pw["top_fai_mean_jaccard"].get<double>(), 1);
  EXPECT_EQ(a["examples"].size(), 2u);
  std::stringstream html;
  html << std::ifstream(out + "/analysis.html").rdbuf();
  EXPECT_NE(html.str().find("<svg class='chart'"), std::string::npos);
  EXPECT_NE(html.str().find("class='mark'"), std::string::npos);  // peaks marked
  EXPECT_NE(html.str().find("0.534"), std::string::npos);         // the paper's value beside
  // Bad arguments are named, with exit code 2.
  ProcessResult bad = RunProcess(
      {BinaryPath("rhythm"), "analyze", "--model", dir, "--alternatives", "0", "--out", out});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--alternatives '0' must be >= 1"), std::string::npos) << bad.err;
  ProcessResult none = RunProcess({BinaryPath("rhythm"), "analyze"});
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.err.find("--model DIR is required"), std::string::npos) << none.err;
}

// Issue 17: three malformed model directories used to abort rhythm-learner at start-up
// (SIGABRT, exit 134). Each is now one line on stderr naming the file and the field, with a
// non-zero exit.
TEST(RhythmLearner, MalformedModelDirectoriesAreOneLineErrors) {
  const std::string base = ::testing::TempDir() + "/malformed_models";
  std::filesystem::remove_all(base);
  struct Case {
    std::string name;
    std::function<void(const std::string& dir)> corrupt;
    std::vector<std::string> want;
  } cases[] = {
      {"rope_scaling",
       [](const std::string& dir) {
         std::ifstream in(dir + "/config.json");
         nlohmann::json j = nlohmann::json::parse(in);
         j["rope_scaling"] = 5;
         std::ofstream(dir + "/config.json") << j.dump();
       },
       {"config.json", "rope_scaling: 5 is not supported"}},
      {"layers",
       [](const std::string& dir) {
         std::ifstream in(dir + "/config.json");
         nlohmann::json j = nlohmann::json::parse(in);
         j["num_hidden_layers"] = 1000000000;
         std::ofstream(dir + "/config.json") << j.dump();
       },
       {"config.json", "num_hidden_layers: 1000000000 exceeds"}},
      {"safetensors",
       [](const std::string& dir) {
         for (const auto& e : std::filesystem::directory_iterator(dir)) {
           if (e.path().extension() == ".safetensors") std::filesystem::remove(e.path());
         }
         const std::string header =
             R"({"model.embed_tokens.weight":{"dtype":"F32","shape":[4294967296,4294967296],)"
             R"("data_offsets":[0,0]}})";
         std::ofstream out(dir + "/model.safetensors", std::ios::binary);
         for (int i = 0; i < 8; ++i) out.put(static_cast<char>((header.size() >> (8 * i)) & 0xff));
         out << header;
       },
       {"model.safetensors", "model.embed_tokens.weight", "overflows"}},
  };
  for (const Case& c : cases) {
    const std::string dir = base + "/" + c.name;
    ASSERT_EQ(RunProcess({BinaryPath("rhythm"), "init-model", "--out", dir}).exit_code, 0);
    c.corrupt(dir);
    ProcessResult r =
        RunProcess({BinaryPath("rhythm-learner"), "--set", "model.path=" + dir, "--set",
                    "learner.run_dir=" + base + "/run_" + c.name, "--set",
                    "learner.address=127.0.0.1:0", "--set", "learner.metrics_address=", "--set",
                    "runtime.log_level=error"});  // no start-up info lines
    EXPECT_NE(r.exit_code, 0) << c.name << ": " << r.err;
    EXPECT_NE(r.exit_code, 128 + SIGABRT) << c.name << " aborted: " << r.err;
    EXPECT_EQ(CountLines(r.err), 1) << c.name << ": " << r.err;
    for (const std::string& w : c.want) {
      EXPECT_NE(r.err.find(w), std::string::npos) << c.name << " lacks '" << w << "': " << r.err;
    }
  }
}

TEST(RhythmTool, UnknownCommandIsAnError) {
  ProcessResult r = RunProcess({BinaryPath("rhythm"), "trian"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'trian'"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace rhythm::testing

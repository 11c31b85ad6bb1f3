#include "common/config.h"

#include <cstdio>
#include <fstream>

#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace rhythm::common {
namespace {

using v1::RhythmConfig;

std::string WriteTemp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

bool Contains(const absl::Status& s, const std::string& needle) {
  return std::string(s.message()).find(needle) != std::string::npos;
}

TEST(Config, DefaultsAreDeclaredAndWithinBounds) {
  absl::StatusOr<RhythmConfig> c = LoadConfig("", {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->credit().quantile(), 0.4);
  EXPECT_DOUBLE_EQ(c->credit().gamma_amp(), 1.5);
  EXPECT_EQ(c->credit().strategy(), v1::CREDIT_STRATEGY_COUPLED);
  EXPECT_EQ(c->generation().waad_window(), 10);
  EXPECT_EQ(c->generation().fai_band_hi(), 100);
  EXPECT_TRUE(ValidateBounds(*c).ok());
}

TEST(Config, GoodFileSetsNestedScalarsEnumsAndLists) {
  const std::string path = WriteTemp("good.yaml", R"(
runtime:
  torch_threads: 2
  seed: 7
trainer:
  lr: 2.5e-6
  steps: 1e3          # integral doubles are accepted for integer fields
credit:
  strategy: local_chunk
  advantage: RLOO
  shape_negative: false
generation:
  stop_strings: ["\n\n", "</answer>"]
  tap_layers: [1, 2]
model:
  path: /models/qwen
)");
  absl::StatusOr<RhythmConfig> c = LoadConfig(path, {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->runtime().torch_threads(), 2);
  EXPECT_EQ(c->runtime().seed(), 7u);
  EXPECT_DOUBLE_EQ(c->trainer().lr(), 2.5e-6);
  EXPECT_EQ(c->trainer().steps(), 1000);
  EXPECT_EQ(c->credit().strategy(), v1::CREDIT_STRATEGY_LOCAL_CHUNK);
  EXPECT_EQ(c->credit().advantage(), v1::ADVANTAGE_ESTIMATOR_RLOO);
  EXPECT_FALSE(c->credit().shape_negative());
  ASSERT_EQ(c->generation().stop_strings_size(), 2);
  EXPECT_EQ(c->generation().stop_strings(0), "\n\n");
  EXPECT_EQ(c->generation().tap_layers(1), 2);
  EXPECT_EQ(c->model().path(), "/models/qwen");
  // Untouched fields keep their defaults.
  EXPECT_DOUBLE_EQ(c->credit().alpha(), 0.5);
}

TEST(Config, UnknownKeyNamesKeyLineAndSuggestion) {
  const std::string path = WriteTemp("typo.yaml", "trainer:\n  lr: 1e-6\n  lrr: 2\n");
  absl::StatusOr<RhythmConfig> c = LoadConfig(path, {});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(c.status(), "unknown key 'trainer.lrr'")) << c.status();
  EXPECT_TRUE(Contains(c.status(), "typo.yaml:3")) << c.status();
  EXPECT_TRUE(Contains(c.status(), "did you mean 'trainer.lr'")) << c.status();
}

TEST(Config, UnknownTopLevelSection) {
  absl::StatusOr<RhythmConfig> c = LoadConfig(WriteTemp("sec.yaml", "trainr:\n  lr: 1\n"), {});
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(c.status(), "unknown key 'trainr'")) << c.status();
  EXPECT_TRUE(Contains(c.status(), "did you mean 'trainer'")) << c.status();
}

TEST(Config, WrongTypeNamesKeyAndValue) {
  struct Case {
    std::string yaml;
    std::string want;
  } cases[] = {
      {"trainer:\n  lr: fast\n", "trainer.lr: expected a number, got 'fast'"},
      {"trainer:\n  group_size: 2.5\n", "trainer.group_size: expected an integer, got '2.5'"},
      {"credit:\n  shape_negative: maybe\n",
       "credit.shape_negative: expected true or false, got 'maybe'"},
      {"credit:\n  strategy: couple\n",
       "credit.strategy: unknown value 'couple'"},
      {"trainer: 3\n", "trainer: expected a map of keys, got '3'"},
      {"generation:\n  stop_strings: x\n", "generation.stop_strings: expected a list"},
      {"runtime:\n  seed: -1\n", "runtime.seed = -1 does not fit in uint64"},
      {"trainer:\n  group_size: 99999999999\n", "does not fit in int32"},
      {"trainer:\n  lr: .nan\n", "trainer.lr: expected a number"},
  };
  for (const Case& c : cases) {
    RhythmConfig config;
    absl::Status s = MergeYaml(c.yaml, "t.yaml", config);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.yaml;
    EXPECT_TRUE(Contains(s, c.want)) << "yaml: " << c.yaml << "\nstatus: " << s;
  }
}

TEST(Config, EnumErrorListsChoicesAndSuggests) {
  RhythmConfig config;
  absl::Status s = MergeYaml("credit:\n  strategy: couple\n", "t.yaml", config);
  EXPECT_TRUE(Contains(s, "coupled")) << s;
  EXPECT_TRUE(Contains(s, "global_anchor")) << s;
  EXPECT_TRUE(Contains(s, "did you mean 'coupled'")) << s;
}

TEST(Config, OutOfRangeNamesKeyValueAndRange) {
  absl::StatusOr<RhythmConfig> c =
      LoadConfig(WriteTemp("range.yaml", "credit:\n  quantile: 1.5\n"), {});
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(c.status(), "credit.quantile = 1.5 is out of range [0, 1]")) << c.status();
  EXPECT_TRUE(Contains(c.status(), "range.yaml:2")) << c.status();

  c = LoadConfig("", {"trainer.lr=0"});
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(c.status(), "trainer.lr = 0 is out of range (0, 1]")) << c.status();
  EXPECT_TRUE(Contains(c.status(), "--set")) << c.status();

  c = LoadConfig("", {"generation.tap_layers=[3, -1]"});
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(c.status(), "generation.tap_layers[1] = -1 is out of range"))
      << c.status();
}

TEST(Config, CrossFieldConstraints) {
  absl::StatusOr<RhythmConfig> c =
      LoadConfig("", {"generation.fai_band_lo=200", "generation.fai_band_hi=100"});
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(c.status(), "generation.fai_band_lo = 200")) << c.status();
  c = LoadConfig("", {"model.tiny.num_heads=4", "model.tiny.num_kv_heads=3"});
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(c.status(), "model.tiny.num_kv_heads = 3 must divide")) << c.status();
}

TEST(Config, OverridesApplyAfterFileInOrder) {
  const std::string path = WriteTemp("ov.yaml", "trainer:\n  lr: 1e-5\n  steps: 10\n");
  absl::StatusOr<RhythmConfig> c =
      LoadConfig(path, {"trainer.lr=3e-6", "credit.strategy=global_anchor",
                        "generation.stop_strings=[a, b]", "model.path=/x/y=z", "trainer.lr=4e-6",
                        "trainer.steps=~"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->trainer().lr(), 4e-6);
  EXPECT_EQ(c->credit().strategy(), v1::CREDIT_STRATEGY_GLOBAL_ANCHOR);
  EXPECT_EQ(c->generation().stop_strings_size(), 2);
  EXPECT_EQ(c->model().path(), "/x/y=z");
  EXPECT_FALSE(c->trainer().has_steps()) << "~ resets to the default";
  EXPECT_EQ(c->trainer().steps(), 0);
}

TEST(Config, BadOverrides) {
  RhythmConfig config;
  absl::Status s = ApplyOverride("trainer.lr", config);
  EXPECT_TRUE(Contains(s, "must look like key=value")) << s;
  s = ApplyOverride("trainer.lrr=1", config);
  EXPECT_TRUE(Contains(s, "unknown key 'trainer.lrr'")) << s;
  EXPECT_TRUE(Contains(s, "did you mean 'trainer.lr'")) << s;
  s = ApplyOverride("trainer.lr.x=1", config);
  EXPECT_TRUE(Contains(s, "'trainer.lr' has no sub-keys")) << s;
  s = ApplyOverride("trainer.lr=[1", config);
  EXPECT_TRUE(Contains(s, "trainer.lr: cannot parse '[1'")) << s;
}

TEST(Config, MissingFileAndSyntaxError) {
  absl::StatusOr<RhythmConfig> c = LoadConfig("/nonexistent/x.yaml", {});
  EXPECT_TRUE(Contains(c.status(), "cannot read config file '/nonexistent/x.yaml'"));
  c = LoadConfig(WriteTemp("syntax.yaml", "trainer:\n  lr: [1, 2\n"), {});
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(c.status(), "YAML syntax error")) << c.status();
}

TEST(Config, YamlDumpRoundTripsIncludingDefaults) {
  absl::StatusOr<RhythmConfig> c =
      LoadConfig("", {"trainer.lr=1.23456789e-7", "credit.strategy=entropy",
                      "generation.stop_strings=[\"x: y\", \"\\n\"]", "model.path=a b"});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string yaml = ConfigToYaml(*c);
  EXPECT_NE(yaml.find("strategy: entropy"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("fai_band_hi: 100"), std::string::npos) << "defaults are written";
  RhythmConfig back;
  ASSERT_TRUE(MergeYaml(yaml, "dump", back).ok()) << MergeYaml(yaml, "dump", back);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equivalent(*c, back))
      << yaml << "\nvs\n" << ConfigToYaml(back);
  EXPECT_EQ(ConfigToYaml(back), yaml);
}

}  // namespace
}  // namespace rhythm::common

#include "common/flags.h"

#include "gtest/gtest.h"

namespace rhythm::common {
namespace {

struct Parsed {
  std::string config;
  bool help = false;
  std::vector<std::string> sets;
  std::vector<std::string> positionals;
};

absl::Status ParseArgs(std::vector<const char*> argv, Parsed* p) {
  FlagParser parser("prog [flags]", "A test program.");
  parser.AddString("config", "FILE", "YAML config", &p->config);
  parser.AddBool("help", "show help", &p->help);
  parser.AddRepeated("set", "KEY=VALUE", "override", &p->sets);
  return parser.Parse(static_cast<int>(argv.size()), argv.data(), 1, &p->positionals);
}

TEST(FlagParser, ParsesBothValueFormsRepeatsAndPositionals) {
  Parsed p;
  ASSERT_TRUE(ParseArgs({"prog", "train", "--config", "a.yaml", "--set=x=1", "--set", "y=2",
                         "--help", "--", "--not-a-flag"},
                        &p)
                  .ok());
  EXPECT_EQ(p.config, "a.yaml");
  EXPECT_TRUE(p.help);
  EXPECT_EQ(p.sets, (std::vector<std::string>{"x=1", "y=2"}));
  EXPECT_EQ(p.positionals, (std::vector<std::string>{"train", "--not-a-flag"}));
}

TEST(FlagParser, UnknownFlagSuggestsClosest) {
  Parsed p;
  absl::Status s = ParseArgs({"prog", "--confg", "a.yaml"}, &p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'--confg'"), std::string::npos) << s;
  EXPECT_NE(s.message().find("did you mean '--config'"), std::string::npos) << s;
}

TEST(FlagParser, MissingValueIsAnError) {
  Parsed p;
  absl::Status s = ParseArgs({"prog", "--config"}, &p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("needs a value"), std::string::npos) << s;
}

TEST(FlagParser, UsageListsEveryFlag) {
  std::string config = "default.yaml";
  bool b = false;
  std::vector<std::string> sets;
  FlagParser parser("prog [flags]", "Desc.");
  parser.AddString("config", "FILE", "YAML config", &config);
  parser.AddBool("verbose", "talk more", &b);
  parser.AddRepeated("set", "KEY=VALUE", "override", &sets);
  parser.AddSection("Commands", "  run   do it\n");
  const std::string usage = parser.Usage();
  EXPECT_NE(usage.find("Usage: prog [flags]"), std::string::npos);
  EXPECT_NE(usage.find("--config FILE"), std::string::npos);
  EXPECT_NE(usage.find("(default: default.yaml)"), std::string::npos);
  EXPECT_NE(usage.find("--verbose"), std::string::npos);
  EXPECT_NE(usage.find("--set KEY=VALUE"), std::string::npos);
  EXPECT_NE(usage.find("Commands:\n  run   do it"), std::string::npos);
}

TEST(EditDistance, ClassicExamples) {
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3);
  EXPECT_EQ(EditDistance("", "abc"), 3);
  EXPECT_EQ(EditDistance("same", "same"), 0);
  EXPECT_EQ(ClosestMatch("lrr", {"lr", "steps"}), "lr");
  EXPECT_EQ(ClosestMatch("zzzzzz", {"lr", "steps"}), "");
}

}  // namespace
}  // namespace rhythm::common

#include "learner/rollout_dump.h"

#include <filesystem>
#include <fstream>

#include "common/fp16.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace rhythm::learner {
namespace {

v1::Rollout Sample(uint64_t id, uint32_t index) {
  v1::Rollout r;
  r.set_rollout_id(id);
  r.set_actor_id("actor-a");
  r.set_run_id("run-7");
  r.set_group_id(42);
  r.set_sample_index(index);
  r.mutable_verifier()->set_reward(0.5 * index);
  for (uint32_t t : {5u, 6u}) r.add_prompt_token_ids(t);
  for (uint32_t t : {9u, 10u, 2u}) r.add_response_token_ids(t);
  for (float x : {-0.5f, -1.0f, -0.25f}) r.add_behaviour_logprobs(x);
  for (float x : {1.5f, 2.0f, 0.5f}) r.add_entropy(x);
  r.mutable_summary()->set_waad_f16(common::EncodeFp16({1, 2, 4}));
  r.mutable_summary()->set_fai_f16(common::EncodeFp16({0.25f, NAN, NAN}));
  return r;
}

TEST(RolloutDumpTest, OneLinePerRolloutWithEveryField) {
  const std::string dir = ::testing::TempDir() + "/rollout_dump_test";
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(DumpBatch(dir, {{Sample(11, 0), Sample(12, 1)}}, 7).ok());
  std::ifstream in(dir + "/step-00000007.jsonl");
  ASSERT_TRUE(in.good());
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 2u);
  const nlohmann::json& j = lines[1];
  EXPECT_EQ(j["rollout_id"], 12);
  EXPECT_EQ(j["actor_id"], "actor-a");
  EXPECT_EQ(j["run_id"], "run-7");
  EXPECT_EQ(j["group"], 42);
  EXPECT_DOUBLE_EQ(j["reward"].get<double>(), 0.5);
  EXPECT_EQ(j["prompt_ids"], nlohmann::json({5, 6}));
  EXPECT_EQ(j["response_ids"], nlohmann::json({9, 10, 2}));
  EXPECT_EQ(j["logprobs"], nlohmann::json({-0.5, -1.0, -0.25}));
  EXPECT_EQ(j["entropy"], nlohmann::json({1.5, 2.0, 0.5}));
  EXPECT_EQ(j["waad"], nlohmann::json({1.0, 2.0, 4.0}));
  EXPECT_EQ(j["fai"], nlohmann::json({0.25, nullptr, nullptr})) << "undefined FAI is null";
  std::filesystem::remove_all(dir);
}

TEST(RolloutDumpTest, AnUnwritableDirectoryIsAnErrorNamingThePath) {
  const absl::Status s = DumpBatch("/proc/rhythm-no-such-dir", {{Sample(1, 0)}}, 3);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_NE(s.message().find("/proc/rhythm-no-such-dir/step-00000003.jsonl"), std::string::npos)
      << s;
}

}  // namespace
}  // namespace rhythm::learner

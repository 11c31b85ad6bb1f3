#include "common/rollout/rollout_jsonl.h"

#include <cmath>

#include "common/rollout/summary_codec.h"
#include "gtest/gtest.h"

namespace rhythm::common::rollout {
namespace {

TEST(RolloutJsonlTest, WhatTheWriterWritesTheReaderReads) {
  v1::Rollout r;
  r.set_rollout_id(12);
  r.set_actor_id("actor-a");
  r.set_run_id("run-7");
  r.set_group_id(42);
  r.mutable_verifier()->set_reward(0.5);
  for (uint32_t t : {5u, 6u}) r.add_prompt_token_ids(t);
  for (uint32_t t : {9u, 10u, 2u}) r.add_response_token_ids(t);
  for (float x : {-0.5f, -1.0f, -0.25f}) r.add_behaviour_logprobs(x);
  for (float x : {1.5f, 2.0f, 0.5f}) r.add_entropy(x);
  SummaryFields f;
  f.waad = {1, 2, 4};
  f.fai = {0.25f, NAN, NAN};
  *r.mutable_summary() = EncodeSummary(f);
  absl::StatusOr<RolloutLine> back = ParseRolloutLine(ToRolloutLine(r), 3);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->line, 3);
  EXPECT_EQ(back->group, "42");
  EXPECT_EQ(back->rollout_id, 12u);
  EXPECT_EQ(back->actor_id, "actor-a");
  EXPECT_EQ(back->run_id, "run-7");
  EXPECT_EQ(back->reward, 0.5);
  EXPECT_EQ(back->waad, (std::vector<double>{1, 2, 4}));
  ASSERT_EQ(back->fai.size(), 3u);
  EXPECT_EQ(back->fai[0], 0.25);
  EXPECT_TRUE(std::isnan(back->fai[1]) && std::isnan(back->fai[2])) << "null is undefined";
  EXPECT_EQ(back->entropy, (std::vector<double>{1.5, 2.0, 0.5}));
  EXPECT_EQ(back->logprobs, (std::vector<double>{-0.5, -1.0, -0.25}));
  EXPECT_EQ(back->prompt_ids, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(back->response_ids, (std::vector<int32_t>{9, 10, 2}));
}

TEST(RolloutJsonlTest, BadIdsAreErrorsNamingTheField) {
  const std::string base = R"("group":1,"reward":1,"waad":[1],"fai":[null],"entropy":[1])";
  struct Case {
    std::string extra, field;
  } cases[] = {{R"("rollout_id":-3)", "rollout_id"},
               {R"("actor_id":7)", "actor_id"},
               {R"("response_ids":[1,2.5])", "response_ids[1]"},
               {R"("prompt_ids":[-1])", "prompt_ids[0]"}};
  for (const Case& c : cases) {
    absl::StatusOr<RolloutLine> r = ParseRolloutLine("{" + base + "," + c.extra + "}", 9);
    ASSERT_FALSE(r.ok()) << c.extra;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("line 9: " + c.field + ":"), std::string::npos)
        << r.status();
  }
  EXPECT_TRUE(ParseRolloutLine("{" + base + "}", 1).ok()) << "the ids are optional";
}

}  // namespace
}  // namespace rhythm::common::rollout

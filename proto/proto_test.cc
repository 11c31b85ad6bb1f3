// The wire schema round-trips: a fully populated Rollout (every field, the summary included)
// survives binary serialization and parsing unchanged, and so does a rollout stream message.
#include <cstring>

#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "rhythm/v1/learner_service.pb.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::v1 {
namespace {

using google::protobuf::util::MessageDifferencer;

std::string Fp16Bytes(const std::vector<uint16_t>& halves) {
  std::string out(halves.size() * 2, '\0');
  std::memcpy(out.data(), halves.data(), out.size());
  return out;
}

Rollout FullRollout() {
  Rollout r;
  r.set_rollout_id(0xFFFFFFFF00000001ull);
  r.set_actor_id("actor-host-17");
  r.set_run_id("run-8c1f");
  r.set_prompt_id(42);
  r.set_group_id(9001);
  r.set_sample_index(3);
  r.set_group_size(8);
  auto* span = r.add_version_spans();
  span->set_begin(0);
  span->set_version(11);
  span = r.add_version_spans();
  span->set_begin(3);
  span->set_version(12);
  for (uint32_t t : {151643u, 9707u, 11u}) r.add_prompt_token_ids(t);
  for (uint32_t t : {1u, 2u, 3u, 4u, 151645u}) r.add_response_token_ids(t);
  for (float lp : {-0.1f, -2.5f, -0.0f, -7.25f, -1e-6f}) r.add_behaviour_logprobs(lp);
  for (float h : {0.3f, 1.2f, 0.0f, 2.5f, 0.01f}) r.add_entropy(h);
  auto* v = r.mutable_verifier();
  v->set_reward(1.0);
  v->set_correct(true);
  v->set_parsed(true);
  v->set_extracted_answer("(3 + 5) * 2");
  v->set_detail("evaluates to 16");
  r.set_finish_reason(FINISH_REASON_EOS);
  auto* s = r.mutable_summary();
  // 1.0, 2.5, 0.5, 10.0, 0.0 in IEEE fp16; FAI NaN where undefined.
  s->set_waad_f16(Fp16Bytes({0x3C00, 0x4100, 0x3800, 0x4900, 0x0000}));
  s->set_fai_f16(Fp16Bytes({0x2E66, 0x3000, 0x7E00, 0x7E00, 0x7E00}));
  s->set_window(10);
  s->set_fai_band_lo(10);
  s->set_fai_band_hi(100);
  for (uint32_t l : {12u, 15u, 18u, 21u, 24u}) s->add_tapped_layers(l);
  s->set_heads_per_layer(32);
  for (uint32_t h : {0u, 5u, 33u}) s->add_local_heads(h);
  for (uint32_t h : {7u, 100u, 159u}) s->add_global_heads(h);
  r.set_generation_seconds(1.75);
  return r;
}

TEST(Proto, FullRolloutRoundTrips) {
  const Rollout original = FullRollout();
  // Every field of Rollout and AttentionSummary is set, so a dropped field would show.
  const auto* d = Rollout::descriptor();
  const auto* refl = original.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (f->is_repeated()) {
      EXPECT_GT(refl->FieldSize(original, f), 0) << f->name();
    } else {
      EXPECT_TRUE(refl->HasField(original, f)) << f->name();
    }
  }
  std::string wire;
  ASSERT_TRUE(original.SerializeToString(&wire));
  Rollout parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  std::string diff;
  MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differ.Compare(original, parsed)) << diff;
  EXPECT_EQ(parsed.summary().waad_f16().size(), 2u * parsed.response_token_ids_size());
  EXPECT_EQ(parsed.version_spans(1).version(), 12);
}

TEST(Proto, StreamMessagesRoundTripInsideOneof) {
  RolloutStreamRequest req;
  *req.mutable_rollout() = FullRollout();
  std::string wire = req.SerializeAsString();
  RolloutStreamRequest back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_EQ(back.kind_case(), RolloutStreamRequest::kRollout);
  EXPECT_TRUE(MessageDifferencer::Equals(req, back));

  RolloutStreamResponse resp;
  resp.mutable_ack()->set_rollout_id(5);
  resp.mutable_ack()->set_code(3);
  resp.mutable_ack()->set_error_message("response_token_ids[2] = 999999 is outside the vocabulary");
  resp.mutable_ack()->set_reject_reason(REJECT_REASON_TOKEN_OUT_OF_VOCAB);
  resp.set_granted_credits(1);
  RolloutStreamResponse resp_back;
  ASSERT_TRUE(resp_back.ParseFromString(resp.SerializeAsString()));
  EXPECT_TRUE(MessageDifferencer::Equals(resp, resp_back));
}

// The last field on the wire is generation_seconds (fixed64): cutting a byte breaks it.
TEST(Proto, TruncatedBytesDoNotParse) {
  const std::string wire = FullRollout().SerializeAsString();
  Rollout parsed;
  EXPECT_FALSE(parsed.ParseFromString(wire.substr(0, wire.size() - 1)));
}

}  // namespace
}  // namespace rhythm::v1

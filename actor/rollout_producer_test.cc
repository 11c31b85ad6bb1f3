// RolloutProducer without a network: a real tiny Transformer and the real arithmetic task, with
// fakes for the leaser, the weight source and the sink that record, in order, every call the
// producer makes. Checks the rollouts it builds (lease, group and sample ids, the version that
// generated them, rewards from the verifier, summaries), that weights are asked for and swapped
// only between batches, and how failures of the source, the sink and the leaser are handled.
#include "actor/rollout_producer.h"

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "common/model/flat_weights.h"
#include "common/model/load_model.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace rhythm::actor {
namespace {

using common::weights::WeightUpdate;
using Events = std::vector<std::string>;

class FakeLeaser final : public PromptLeaser {
 public:
  explicit FakeLeaser(Events& events) : events_(events) {}
  absl::StatusOr<v1::LeaseResponse> Lease(uint32_t max_prompts) override {
    events_.push_back("lease");
    max_prompts_asked.push_back(max_prompts);
    if (script.empty()) return absl::UnavailableError("no more leases scripted");
    absl::StatusOr<v1::LeaseResponse> r = std::move(script.front());
    script.pop_front();
    return r;
  }
  std::deque<absl::StatusOr<v1::LeaseResponse>> script;
  std::vector<uint32_t> max_prompts_asked;

 private:
  Events& events_;
};

class FakeWeights final : public common::weights::WeightSource {
 public:
  explicit FakeWeights(Events& events) : events_(events) {}
  absl::StatusOr<std::optional<WeightUpdate>> Newer(int64_t have) override {
    events_.push_back(absl::StrCat("newer ", have));
    if (script.empty()) return std::nullopt;
    absl::StatusOr<std::optional<WeightUpdate>> r = std::move(script.front());
    script.pop_front();
    return r;
  }
  bool Connected() const override { return true; }
  void Recycle(std::string) override { ++recycled; }
  std::deque<absl::StatusOr<std::optional<WeightUpdate>>> script;
  int recycled = 0;

 private:
  Events& events_;
};

class FakeSink final : public RolloutSink {
 public:
  explicit FakeSink(Events& events) : events_(events) {}
  absl::Status Deliver(std::vector<v1::Rollout> group) override {
    events_.push_back("deliver");
    if (producer != nullptr) leases_while_delivering.push_back(producer->GeneratingLeases());
    if (!failures.empty()) {
      absl::Status s = failures.front();
      failures.pop_front();
      if (!s.ok()) return s;
    }
    groups.push_back(std::move(group));
    return absl::OkStatus();
  }
  // The rollouts of every group delivered, in order.
  std::vector<v1::Rollout> All() const {
    std::vector<v1::Rollout> all;
    for (const auto& g : groups) all.insert(all.end(), g.begin(), g.end());
    return all;
  }
  const RolloutProducer* producer = nullptr;
  std::deque<absl::Status> failures;  // per Deliver call, then OK
  std::vector<std::vector<v1::Rollout>> groups;
  std::vector<std::vector<uint64_t>> leases_while_delivering;

 private:
  Events& events_;
};

// Records sleeps instead of sleeping.
class RecordingClock final : public common::Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
  void SleepFor(absl::Duration d) override { slept.push_back(d); }
  std::vector<absl::Duration> slept;
};

v1::TinyModelConfig Tiny() {
  v1::TinyModelConfig tiny;
  tiny.set_hidden_size(32);
  tiny.set_num_layers(2);
  tiny.set_num_heads(2);
  tiny.set_num_kv_heads(1);
  tiny.set_intermediate_size(64);
  tiny.set_max_seq_len(64);
  return tiny;
}

WeightUpdate FromModel(int64_t version, const common::model::Transformer& m) {
  common::model::FlatWeights flat = common::model::FlattenWeights(m, v1::WIRE_DTYPE_FP32);
  WeightUpdate u;
  u.announcement.set_version(version);
  u.announcement.set_wire_dtype(flat.dtype);
  for (v1::TensorSpec& t : flat.tensors) *u.announcement.add_tensors() = std::move(t);
  u.bytes = std::move(flat.bytes);
  return u;
}

class RolloutProducerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loaded = common::model::LoadModelAndTokenizer("", Tiny(), /*seed=*/0);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    model_ = std::move(loaded->model);
    tokenizer_ = std::move(loaded->tokenizer);
    v1::TaskConfig tc;
    tc.set_kind(v1::TASK_KIND_ARITHMETIC);
    auto task = common::tasks::CreateTask(tc, 1);
    ASSERT_TRUE(task.ok()) << task.status();
    task_ = std::move(*task);
    metrics_ = std::make_unique<ActorMetrics>(registry_);
    RolloutProducer::Options o;
    o.actor_id = "actor-a";
    o.run_id = "run-1";
    o.prompts_per_batch = 3;
    o.seed = 5;
    o.generation.set_max_new_tokens(3);
    producer_ = std::make_unique<RolloutProducer>(o, *model_, *tokenizer_, *task_, leaser_,
                                                  weights_, sink_, *metrics_, clock_);
    sink_.producer = producer_.get();
  }

  std::vector<int32_t> Encode(const std::string& text) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(text);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? *std::move(ids) : std::vector<int32_t>{};
  }

  // A lease of training problem `index`, G = 2; `answer` replaces the problem's.
  v1::PromptLease Lease(uint64_t lease_id, uint64_t index, const std::string& answer = "") {
    const common::tasks::Problem p = task_->TrainProblem(index);
    v1::PromptLease l;
    l.set_lease_id(lease_id);
    l.set_prompt_id(p.id);
    l.set_prompt_text(p.prompt);
    for (int32_t t : Encode(p.prompt)) l.add_prompt_token_ids(static_cast<uint32_t>(t));
    l.set_answer(answer.empty() ? p.answer : answer);
    l.set_group_size(2);
    return l;
  }
  void ScriptLeases(std::vector<v1::PromptLease> leases) {
    v1::LeaseResponse r;
    for (v1::PromptLease& l : leases) *r.add_leases() = std::move(l);
    leaser_.script.push_back(std::move(r));
  }

  // Weights under which the model emits `text`'s one character at every step, whatever the
  // prompt: attention and MLP outputs are zeroed, so the last hidden state is the normalised
  // embedding of the current token, all of them one direction; the character's output row is
  // 5x the others, so its logit leads by 4 x hidden_size = 128.
  WeightUpdate AlwaysEmits(int64_t version, const std::string& text) {
    auto other = common::model::LoadModelAndTokenizer("", Tiny(), /*seed=*/9);
    EXPECT_TRUE(other.ok()) << other.status();
    const std::vector<int32_t> ids = Encode(text);
    EXPECT_EQ(ids.size(), 1u) << text;
    const int32_t id = ids.empty() ? 0 : ids[0];
    at::NoGradGuard no_grad;
    for (auto& [name, t] : other->model->NamedParameters()) {
      if (name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos) {
        t.zero_();
      } else if (name == "model.embed_tokens.weight" || name == "lm_head.weight") {
        t.fill_(1.0);
        t[id].fill_(5.0);
      }
    }
    return FromModel(version, *other->model);
  }

  std::string Completion(const v1::Rollout& r) {
    std::vector<int32_t> ids(r.response_token_ids().begin(), r.response_token_ids().end());
    if (!ids.empty() && ids.back() == tokenizer_->eos_id()) ids.pop_back();
    return tokenizer_->Decode(ids).value_or("<undecodable>");
  }

  Events events_;
  FakeLeaser leaser_{events_};
  FakeWeights weights_{events_};
  FakeSink sink_{events_};
  RecordingClock clock_;
  prometheus::Registry registry_;
  std::unique_ptr<ActorMetrics> metrics_;
  std::unique_ptr<common::model::Transformer> model_;
  std::unique_ptr<common::Tokenizer> tokenizer_;
  std::unique_ptr<common::tasks::Task> task_;
  std::unique_ptr<RolloutProducer> producer_;
};

TEST_F(RolloutProducerTest, BuildsEachLeasesRolloutsWithTheVersionThatGeneratedThem) {
  weights_.script.push_back(FromModel(7, *model_));
  const v1::PromptLease a = Lease(101, 0), b = Lease(102, 1);
  ScriptLeases({a, b});
  ASSERT_TRUE(producer_->RunBatch().ok());

  EXPECT_EQ(events_, (Events{"newer -1", "lease", "deliver", "deliver"}));
  EXPECT_EQ(leaser_.max_prompts_asked, std::vector<uint32_t>{3});
  EXPECT_EQ(producer_->version(), 7);
  EXPECT_EQ(weights_.recycled, 1) << "the applied buffer goes back to the source";
  ASSERT_EQ(sink_.groups.size(), 2u) << "one delivery per lease group";
  uint64_t next_id = 1;
  double reward_sum = 0;
  for (size_t g = 0; g < 2; ++g) {
    const v1::PromptLease& lease = g == 0 ? a : b;
    ASSERT_EQ(sink_.groups[g].size(), 2u);
    for (size_t j = 0; j < 2; ++j) {
      const v1::Rollout& r = sink_.groups[g][j];
      SCOPED_TRACE(absl::StrCat("lease ", lease.lease_id(), " sample ", j));
      EXPECT_EQ(r.rollout_id(), next_id++) << "ids 1, 2, 3, ... in delivery order";
      EXPECT_EQ(r.actor_id(), "actor-a");
      EXPECT_EQ(r.run_id(), "run-1");
      EXPECT_EQ(r.group_id(), lease.lease_id());
      EXPECT_EQ(r.prompt_id(), lease.prompt_id());
      EXPECT_EQ(r.sample_index(), j);
      EXPECT_EQ(r.group_size(), 2u);
      ASSERT_EQ(r.version_spans_size(), 1);
      EXPECT_EQ(r.version_spans(0).begin(), 0u);
      EXPECT_EQ(r.version_spans(0).version(), 7);
      EXPECT_TRUE(std::equal(r.prompt_token_ids().begin(), r.prompt_token_ids().end(),
                             lease.prompt_token_ids().begin(), lease.prompt_token_ids().end()));
      const int t = r.response_token_ids_size();
      EXPECT_GE(t, 1);
      EXPECT_LE(t, 3) << "generation.max_new_tokens";
      EXPECT_EQ(r.behaviour_logprobs_size(), t);
      EXPECT_EQ(r.entropy_size(), t);
      for (float lp : r.behaviour_logprobs()) EXPECT_LE(lp, 0.0f);
      EXPECT_NE(r.finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
      ASSERT_TRUE(r.has_summary()) << "attention summaries from the decode loop";
      EXPECT_EQ(r.summary().waad_f16().size(), 2u * static_cast<size_t>(t)) << "fp16 per token";
      EXPECT_EQ(r.summary().fai_f16().size(), 2u * static_cast<size_t>(t));
      EXPECT_GT(r.summary().tapped_layers_size(), 0);
      const v1::VerifierResult want = task_->Verify(lease.answer(), Completion(r));
      EXPECT_EQ(r.verifier().reward(), want.reward());
      EXPECT_EQ(r.verifier().correct(), want.correct());
      EXPECT_EQ(r.verifier().extracted_answer(), want.extracted_answer());
      EXPECT_GT(r.generation_seconds(), 0);
      reward_sum += r.verifier().reward();
    }
  }
  EXPECT_EQ(sink_.leases_while_delivering,
            (std::vector<std::vector<uint64_t>>{{101, 102}, {101, 102}}))
      << "the heartbeat names the batch's leases until it is delivered";
  EXPECT_TRUE(producer_->GeneratingLeases().empty());
  EXPECT_EQ(metrics_->rollouts_sent.Value(), 4);
  EXPECT_EQ(metrics_->policy_version.Value(), 7);
  EXPECT_DOUBLE_EQ(metrics_->reward_mean.Value(), reward_sum / 4);
}

TEST_F(RolloutProducerTest, SkipsTheTapsWhenTheLearnerComputesItsOwnSummaries) {
  v1::CreditConfig credit;
  EXPECT_TRUE(RolloutProducer::TapsWanted(credit)) << "default: the actor's summaries";
  credit.set_summary_source(v1::SUMMARY_SOURCE_LEARNER);
  EXPECT_FALSE(RolloutProducer::TapsWanted(credit));
  credit.set_summary_agreement(true);
  EXPECT_TRUE(RolloutProducer::TapsWanted(credit)) << "agreement compares with the actor's";
  credit.set_summary_agreement(false);

  v1::GenerationConfig g;
  g.set_max_new_tokens(3);
  producer_->SetGenerationConfig(g, RolloutProducer::TapsWanted(credit));
  weights_.script.push_back(FromModel(7, *model_));
  ScriptLeases({Lease(101, 0)});
  ASSERT_TRUE(producer_->RunBatch().ok());
  ASSERT_EQ(sink_.groups.size(), 1u);
  ASSERT_EQ(sink_.groups[0].size(), 2u);
  for (const v1::Rollout& r : sink_.groups[0]) {
    EXPECT_FALSE(r.has_summary()) << "no taps, no summary";
    EXPECT_EQ(r.entropy_size(), r.response_token_ids_size()) << "the rest is unchanged";
  }
}

TEST_F(RolloutProducerTest, WeightsChangeOnlyBetweenBatchesAndRewardsComeFromTheVerifier) {
  weights_.script.push_back(FromModel(7, *model_));
  weights_.script.push_back(std::nullopt);  // nothing newer before batch 2
  weights_.script.push_back(AlwaysEmits(8, "8"));
  ScriptLeases({Lease(201, 2)});
  ScriptLeases({Lease(202, 3)});
  v1::PromptLease continuation = Lease(205, 6);
  continuation.add_sample_indices(1);  // completes a group whose sample 0 is already held
  ScriptLeases({Lease(203, 4, "888"), Lease(204, 5), continuation});
  for (int b = 0; b < 3; ++b) ASSERT_TRUE(producer_->RunBatch().ok()) << "batch " << b;

  EXPECT_EQ(events_, (Events{"newer -1", "lease", "deliver",  // batch 1 (version 7)
                             "newer 7", "lease", "deliver",   // batch 2 (still 7)
                             "newer 7", "lease", "deliver", "deliver", "deliver"}))  // 8
      << "the source is asked once per batch, before it, never while one is generated or "
         "delivered";
  const std::vector<v1::Rollout> all = sink_.All();
  ASSERT_EQ(all.size(), 2u + 2u + 5u);
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].rollout_id(), i + 1);
    EXPECT_EQ(all[i].version_spans(0).version(), i < 4 ? 7 : 8) << "rollout " << i + 1;
  }
  // Version 8 emits "8" at every step: the swap happened before batch 3 and only then.
  for (size_t i = 4; i < all.size(); ++i) EXPECT_EQ(Completion(all[i]), "888");
  for (size_t i = 0; i < 4; ++i) EXPECT_NE(Completion(all[i]), "888");
  ASSERT_EQ(sink_.groups.size(), 5u);
  for (const v1::Rollout& r : sink_.groups[2]) {  // lease 203, answer "888"
    EXPECT_EQ(r.group_id(), 203u);
    EXPECT_EQ(r.verifier().reward(), 1.0);
    EXPECT_TRUE(r.verifier().correct());
    EXPECT_EQ(r.verifier().extracted_answer(), "888");
  }
  for (const v1::Rollout& r : sink_.groups[3]) {  // lease 204, its real sum (< 200)
    EXPECT_EQ(r.group_id(), 204u);
    EXPECT_EQ(r.verifier().reward(), 0.0);
    EXPECT_FALSE(r.verifier().correct());
    EXPECT_TRUE(r.verifier().parsed());
  }
  ASSERT_EQ(sink_.groups[4].size(), 1u) << "only the sample index the continuation asks for";
  EXPECT_EQ(sink_.groups[4][0].group_id(), 205u);
  EXPECT_EQ(sink_.groups[4][0].sample_index(), 1u);
  EXPECT_EQ(sink_.groups[4][0].group_size(), 2u);
  EXPECT_DOUBLE_EQ(metrics_->reward_mean.Value(), 2.0 / 5) << "mean over the rollouts built";
  EXPECT_EQ(metrics_->policy_version.Value(), 8);
  EXPECT_EQ(metrics_->rollouts_sent.Value(), 9);
}

TEST_F(RolloutProducerTest, AFailingWeightSourceIsHandledAsTheActorDid) {
  // No weights yet and the source fails: nothing is leased; the caller backs off.
  weights_.script.push_back(absl::UnavailableError("weights: no version announcement"));
  EXPECT_EQ(producer_->RunBatch().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(events_, (Events{"newer -1"}));
  EXPECT_EQ(producer_->version(), -1);

  // Nothing from the source while we have nothing either: still no generation.
  weights_.script.push_back(std::nullopt);
  EXPECT_EQ(producer_->RunBatch().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(sink_.groups.empty());

  weights_.script.push_back(FromModel(7, *model_));
  ScriptLeases({Lease(301, 0)});
  ASSERT_TRUE(producer_->RunBatch().ok());
  ASSERT_EQ(sink_.groups.size(), 1u);

  // A failed download with weights in hand: generate with them.
  events_.clear();
  weights_.script.push_back(absl::UnavailableError("weights: chunks did not arrive"));
  ScriptLeases({Lease(302, 1)});
  ASSERT_TRUE(producer_->RunBatch().ok());
  EXPECT_EQ(events_, (Events{"newer 7", "lease", "deliver"}));
  ASSERT_EQ(sink_.groups.size(), 2u);
  EXPECT_EQ(sink_.groups[1][0].version_spans(0).version(), 7);

  // Weights that do not fit the model: INVALID_ARGUMENT (the actor stops), model untouched.
  events_.clear();
  WeightUpdate bad = FromModel(8, *model_);
  bad.bytes.resize(bad.bytes.size() / 2);
  weights_.script.push_back(std::move(bad));
  EXPECT_EQ(producer_->RunBatch().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(events_, (Events{"newer 7"}));
  EXPECT_EQ(producer_->version(), 7);
  weights_.script.push_back(absl::InvalidArgumentError("weights: announces chunk_bytes 0"));
  EXPECT_EQ(producer_->RunBatch().code(), absl::StatusCode::kInvalidArgument);

  // The learner's identity changed: the version number is forgotten and asked for afresh.
  events_.clear();
  producer_->ForgetVersion();
  weights_.script.push_back(FromModel(2, *model_));
  ScriptLeases({Lease(303, 2)});
  ASSERT_TRUE(producer_->RunBatch().ok());
  EXPECT_EQ(events_, (Events{"newer -1", "lease", "deliver"}));
  EXPECT_EQ(sink_.groups.back()[0].version_spans(0).version(), 2);
}

TEST_F(RolloutProducerTest, AFailingSinkIsHandledAsTheActorDid) {
  weights_.script.push_back(FromModel(7, *model_));
  // Closed sink (shutdown): CANCELLED, the actor's loop stops.
  sink_.failures.push_back(absl::CancelledError("rollout streamer closed"));
  ScriptLeases({Lease(401, 0), Lease(402, 1)});
  EXPECT_EQ(producer_->RunBatch().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(events_, (Events{"newer -1", "lease", "deliver"})) << "nothing after the failure";
  EXPECT_TRUE(producer_->GeneratingLeases().empty()) << "undelivered leases are left to expire";
  EXPECT_EQ(metrics_->rollouts_sent.Value(), 0);

  // A failure after one group went through: the error, the first group delivered.
  sink_.failures.push_back(absl::OkStatus());
  sink_.failures.push_back(absl::UnavailableError("sink down"));
  ScriptLeases({Lease(403, 2), Lease(404, 3)});
  EXPECT_EQ(producer_->RunBatch().code(), absl::StatusCode::kUnavailable);
  ASSERT_EQ(sink_.groups.size(), 1u);
  EXPECT_EQ(sink_.groups[0][0].group_id(), 403u);
  EXPECT_EQ(metrics_->rollouts_sent.Value(), 2);
  EXPECT_TRUE(producer_->GeneratingLeases().empty());

  // The next batch goes through, its ids above every id used before (never reused).
  const uint64_t last_delivered = sink_.groups[0].back().rollout_id();
  ScriptLeases({Lease(405, 4)});
  ASSERT_TRUE(producer_->RunBatch().ok());
  ASSERT_EQ(sink_.groups.size(), 2u);
  EXPECT_GT(sink_.groups[1][0].rollout_id(), last_delivered + 2);
  EXPECT_EQ(sink_.groups[1][1].rollout_id(), sink_.groups[1][0].rollout_id() + 1);
}

TEST_F(RolloutProducerTest, NoLeasesWaitsRetryAfterAndALeaseErrorIsReturned) {
  weights_.script.push_back(FromModel(7, *model_));
  v1::LeaseResponse none;
  none.set_retry_after_s(0.25);
  leaser_.script.push_back(none);
  leaser_.script.push_back(v1::LeaseResponse());  // retry_after_s 0: at least 50 ms
  ASSERT_TRUE(producer_->RunBatch().ok());
  ASSERT_TRUE(producer_->RunBatch().ok());
  EXPECT_EQ(clock_.slept,
            (std::vector<absl::Duration>{absl::Seconds(0.25), absl::Milliseconds(50)}));
  leaser_.script.push_back(absl::UnavailableError("lease: learner unreachable"));
  EXPECT_EQ(producer_->RunBatch().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(sink_.groups.empty());
  EXPECT_EQ(events_, (Events{"newer -1", "lease", "newer 7", "lease", "newer 7", "lease"}));
}

}  // namespace
}  // namespace rhythm::actor

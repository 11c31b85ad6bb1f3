// The evaluator (learner/evaluator.h) on a tiny random model: its figures against per-problem
// generation done one prompt at a time, the background evaluator's copy of the weights, and the
// evaluation sets.
#include "learner/evaluator.h"

#include <filesystem>
#include <fstream>

#include "absl/synchronization/notification.h"
#include "common/rollout/engine.h"
#include "common/tokenizer/char_tokenizer.h"
#include "gtest/gtest.h"

namespace rhythm::learner {
namespace {

common::model::ModelConfig TinyModel(int32_t vocab) {
  common::model::ModelConfig c;
  c.architecture = common::model::Architecture::kQwen2;
  c.vocab_size = vocab;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 64;
  c.max_position_embeddings = 64;
  c.qkv_bias = true;
  c.tie_word_embeddings = false;  // tied, greedy echoes the last prompt token
  return c;
}

// Problem i's prompt is "<i>+1=" and its answer a completion text; Verify is string equality.
class ExactTask : public common::tasks::Task {
 public:
  explicit ExactTask(std::vector<std::string> answers) : answers_(std::move(answers)) {}
  absl::string_view name() const override { return "exact"; }
  common::tasks::Problem TrainProblem(uint64_t i) const override { return HeldOutProblem(i); }
  common::tasks::Problem HeldOutProblem(uint64_t i) const override {
    common::tasks::Problem p;
    p.id = i;
    p.prompt = std::to_string(i) + "+1=";
    p.answer = answers_[i % answers_.size()];
    return p;
  }
  uint64_t heldout_size() const override { return answers_.size(); }
  v1::VerifierResult Verify(absl::string_view answer, absl::string_view completion) const override {
    v1::VerifierResult r;
    r.set_correct(answer == completion);
    r.set_reward(r.correct() ? 1.0 : 0.0);
    return r;
  }

 private:
  std::vector<std::string> answers_;
};

v1::RhythmConfig EvalConfig() {
  v1::RhythmConfig c;
  c.mutable_generation()->set_max_new_tokens(4);
  c.mutable_generation()->set_temperature(1.0);
  c.mutable_runtime()->set_seed(7);
  return c;
}

// The greedy completion of one prompt, generated alone (the slow, obvious way).
std::string GreedyAlone(const common::model::Transformer& m, const common::Tokenizer& tok,
                        const std::string& prompt, const v1::RhythmConfig& config) {
  common::rollout::GenerationOptions o =
      common::rollout::GenerationOptionsFromConfig(config.generation());
  o.taps = false;
  o.stop_token_ids = {tok.eos_id()};
  o.pad_id = tok.pad_id();
  o.stop_strings.clear();
  o.sampling.temperature = 0;
  auto ids = tok.Encode(prompt);
  EXPECT_TRUE(ids.ok());
  auto samples = common::rollout::GenerationEngine(m).Generate({*ids}, o);
  EXPECT_TRUE(samples.ok()) << samples.status();
  std::vector<int32_t> body = samples->at(0).response_ids;
  if (!body.empty() && body.back() == tok.eos_id()) body.pop_back();
  return tok.Decode(body).value_or("");
}

TEST(Evaluator, GreedyFiguresMatchOnePromptAtATimeAcrossBatches) {
  auto tok = common::CharTokenizer::CreateDefault();
  auto m = *common::model::Transformer::RandomInit(TinyModel(tok->vocab_size()), 3);
  const v1::RhythmConfig config = EvalConfig();
  // 40 problems (two batches of 32): every third one's answer is the model's own greedy
  // completion, the others an impossible one.
  const int n = 40;
  std::vector<std::string> answers;
  std::vector<bool> want;
  {
    ExactTask probe({""});
    for (int i = 0; i < n; ++i) {
      const bool right = i % 3 == 0;
      answers.push_back(right ? GreedyAlone(*m, *tok, probe.HeldOutProblem(i).prompt, config)
                              : "<never>");
      want.push_back(right);
    }
  }
  ExactTask task(answers);
  for (int64_t k : {1, 3}) {
    absl::StatusOr<EvalResult> r = EvaluateHeldOut(*m, *tok, task, 100, k, config);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->problems, n) << "capped at the held-out size";
    EXPECT_EQ(r->greedy_correct, want) << "k " << k;
    EXPECT_DOUBLE_EQ(r->pass1, 14.0 / n);  // i = 0, 3, ..., 39
    int64_t correct = 0, any = 0;
    for (int i = 0; i < n; ++i) {
      EXPECT_GE(r->samples_correct[i], 0);
      EXPECT_LE(r->samples_correct[i], k);
      if (!want[i]) {
        EXPECT_EQ(r->samples_correct[i], 0) << "no sample writes <never>";
      }
      correct += r->samples_correct[i];
      any += r->samples_correct[i] > 0;
    }
    EXPECT_DOUBLE_EQ(r->sampled, static_cast<double>(correct) / (n * k));
    EXPECT_DOUBLE_EQ(r->passk, k > 1 ? static_cast<double>(any) / n : r->pass1);
    if (k == 1) {
      EXPECT_DOUBLE_EQ(r->sampled, r->pass1) << "avg@1 is the greedy figure";
    }
  }
  // Cancelled before the first batch.
  absl::StatusOr<EvalResult> c = EvaluateProblems(
      *m, *tok, task, [&](uint64_t i) { return task.HeldOutProblem(i); }, n, 1, config,
      [] { return true; });
  EXPECT_EQ(c.status().code(), absl::StatusCode::kCancelled);
}

TEST(Evaluator, BackgroundEvaluatorScoresACopyOfTheOfferedWeights) {
  auto tok = common::CharTokenizer::CreateDefault();
  const common::model::ModelConfig shape = TinyModel(tok->vocab_size());
  auto a = *common::model::Transformer::RandomInit(shape, 3);
  auto b = *common::model::Transformer::RandomInit(shape, 4);
  v1::RhythmConfig config = EvalConfig();
  config.mutable_learner()->set_eval_n(12);
  config.mutable_learner()->set_eval_k(2);
  // Answers: model a's greedy completions, so a scores pass@1 = 1 and b (other weights) less.
  std::vector<std::string> answers;
  {
    ExactTask probe({""});
    for (int i = 0; i < 12; ++i) {
      answers.push_back(GreedyAlone(*a, *tok, probe.HeldOutProblem(i).prompt, config));
    }
  }
  ExactTask task(answers);
  auto set = EvalSet::Create(config, task);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ((*set)->size(), 12);

  absl::Mutex mu;
  std::vector<BackgroundEvaluator::Report> reports;
  absl::Notification release;  // holds the first report, so the evaluator stays busy
  BackgroundEvaluator::Options o;
  o.config = config;
  o.tokenizer = tok.get();
  o.problems = std::shared_ptr<const EvalSet>(std::move(*set));
  o.on_report = [&](const BackgroundEvaluator::Report& r) {
    {
      absl::MutexLock lock(&mu);
      reports.push_back(r);
    }
    if (r.version == 10) release.WaitForNotification();
  };
  auto e = BackgroundEvaluator::Create(*a, o);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE((*e)->idle());

  absl::StatusOr<bool> offered = (*e)->Offer(10, *a);
  ASSERT_TRUE(offered.ok()) << offered.status();
  EXPECT_TRUE(*offered);
  absl::StatusOr<bool> busy = (*e)->Offer(11, *b);
  ASSERT_TRUE(busy.ok());
  EXPECT_FALSE(*busy) << "one evaluation at a time: version 11 is skipped";
  release.Notify();
  (*e)->WaitIdle();
  ASSERT_TRUE((*e)->Offer(12, *b).value());
  // Training moves on while 12 is evaluated: the copy, not `b`, is scored.
  {
    at::NoGradGuard no_grad;
    for (auto& [name, t] : b->NamedParameters()) t.zero_();
  }
  (*e)->WaitIdle();

  auto direct_a = EvaluateHeldOut(*a, *tok, task, 12, 2, config);
  auto b_again = *common::model::Transformer::RandomInit(shape, 4);
  auto direct_b = EvaluateHeldOut(*b_again, *tok, task, 12, 2, config);
  ASSERT_TRUE(direct_a.ok() && direct_b.ok());
  absl::MutexLock lock(&mu);
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].version, 10);
  EXPECT_EQ(reports[1].version, 12);
  ASSERT_TRUE(reports[0].result.ok()) << reports[0].result.status();
  ASSERT_TRUE(reports[1].result.ok()) << reports[1].result.status();
  EXPECT_DOUBLE_EQ(reports[0].result->pass1, 1.0);
  EXPECT_EQ(reports[0].result->greedy_correct, direct_a->greedy_correct);
  EXPECT_EQ(reports[0].result->samples_correct, direct_a->samples_correct);
  EXPECT_EQ(reports[1].result->greedy_correct, direct_b->greedy_correct);
  EXPECT_EQ(reports[1].result->samples_correct, direct_b->samples_correct);
  EXPECT_LT(reports[1].result->pass1, 1.0) << "other weights, other completions";
  EXPECT_GT(reports[0].seconds, 0);

  common::model::ModelConfig wider = shape;
  wider.intermediate_size = 96;
  auto other = *common::model::Transformer::RandomInit(wider, 1);
  absl::StatusOr<bool> bad = (*e)->Offer(13, *other);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*e)->idle()) << "nothing started";
}

TEST(Evaluator, EvalSetsComeFromTheDatasetInFileOrderOrTheHeldOutSplit) {
  const std::string path = ::testing::TempDir() + "/eval_set.jsonl";
  {
    std::ofstream out(path);
    for (int i = 0; i < 5; ++i) {
      out << "{\"prompt\": \"q" << i << "\", \"answer\": \"" << i << "\"}\n";
    }
  }
  ExactTask training({"a", "b", "c"});
  v1::RhythmConfig c;
  c.mutable_learner()->set_eval_every(2);
  c.mutable_learner()->set_eval_dataset(path);
  c.mutable_learner()->set_eval_n(3);
  auto three = EvalSet::Create(c, training);
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_EQ((*three)->size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ((*three)->Problem(i).prompt, "q" + std::to_string(i));
    EXPECT_EQ((*three)->Problem(i).answer, std::to_string(i));
  }
  EXPECT_EQ((*three)->task().name(), "jsonl");
  EXPECT_TRUE((*three)->task().Verify("2", "Answer: 2").correct()) << "the maths verifier";
  c.mutable_learner()->set_eval_n(100);
  auto all = EvalSet::Create(c, training);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ((*all)->size(), 5) << "every line, once";

  c.mutable_learner()->set_eval_dataset(path + ".missing");
  auto missing = EvalSet::Create(c, training);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("learner.eval_dataset = '" + path + ".missing'"),
            std::string::npos)
      << missing.status();

  c.mutable_learner()->clear_eval_dataset();
  c.mutable_learner()->set_eval_n(2);
  auto heldout = EvalSet::Create(c, training);
  ASSERT_TRUE(heldout.ok()) << heldout.status();
  EXPECT_EQ((*heldout)->size(), 2);
  EXPECT_EQ((*heldout)->Problem(1).answer, "b");
  EXPECT_EQ(&(*heldout)->task(), &training);

  class NoHeldOut : public ExactTask {
   public:
    NoHeldOut() : ExactTask({"x"}) {}
    uint64_t heldout_size() const override { return 0; }
  } empty;
  auto nothing = EvalSet::Create(c, empty);
  EXPECT_EQ(nothing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(nothing.status().message().find("task.heldout_size"), std::string::npos)
      << nothing.status();
}

}  // namespace
}  // namespace rhythm::learner

// The engine's online summaries against the full-map reference, its log-probs against the
// training forward, and its sampling, stopping and error paths.
#include "common/rollout/engine.h"

#include <cmath>
#include <map>
#include <set>
#include <thread>

#include "ATen/ATen.h"
#include "ATen/CPUGeneratorImpl.h"
#include "gtest/gtest.h"

namespace rhythm::common::rollout {
namespace {

using model::Architecture;
using model::ModelConfig;
using model::Transformer;

ModelConfig Shape(Architecture arch, int64_t layers, int64_t heads, int64_t kv_heads) {
  ModelConfig c;
  c.architecture = arch;
  c.vocab_size = 37;
  c.hidden_size = 8 * heads;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = 8;
  c.intermediate_size = 40;
  c.max_position_embeddings = 128;
  c.qkv_bias = arch == Architecture::kQwen2;
  c.qk_norm = arch == Architecture::kQwen3;
  c.tie_word_embeddings = arch != Architecture::kLlama;
  c.initializer_range = 0.3;  // peaky attention, so heads differ
  return c;
}

std::vector<std::vector<int32_t>> RaggedPrompts() {
  return {{1, 2, 3}, {4, 8, 15, 16, 23, 4, 2}, {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 30}};
}

void ExpectSummariesMatchReference(const Transformer& m, const GenerationOptions& o,
                                   const std::string& what) {
  absl::StatusOr<std::vector<GeneratedSample>> out = GenerationEngine(m).Generate(RaggedPrompts(), o);
  ASSERT_TRUE(out.ok()) << out.status();
  int compared = 0, defined = 0, undefined = 0;
  for (const GeneratedSample& s : *out) {
    ASSERT_TRUE(s.summary.has_value());
    absl::StatusOr<AttentionSummary> ref =
        ReferenceSummary(m, s.prompt_ids, s.response_ids, o.tap);
    ASSERT_TRUE(ref.ok()) << ref.status();
    EXPECT_EQ(s.summary->tap_layers, ref->tap_layers) << what;
    EXPECT_EQ(s.summary->local_heads, ref->local_heads) << what;
    EXPECT_EQ(s.summary->global_heads, ref->global_heads) << what;
    ASSERT_EQ(s.summary->waad.size(), s.response_ids.size());
    for (size_t h = 0; h < ref->head_distance.size(); ++h) {
      EXPECT_NEAR(s.summary->head_distance[h], ref->head_distance[h], 1e-4) << what;
    }
    for (size_t j = 0; j < s.response_ids.size(); ++j) {
      EXPECT_NEAR(s.summary->waad[j], ref->waad[j], 1e-4) << what << " token " << j;
      if (std::isnan(ref->fai[j])) {
        EXPECT_TRUE(std::isnan(s.summary->fai[j])) << what << " token " << j;
        ++undefined;
      } else {
        EXPECT_NEAR(s.summary->fai[j], ref->fai[j], 1e-4) << what << " token " << j;
        ++defined;
      }
      ++compared;
    }
  }
  EXPECT_GT(compared, 30) << what;
  EXPECT_GT(defined, 5) << what;
  EXPECT_GT(undefined, 5) << what;
}

struct Case {
  std::string name;
  ModelConfig config;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class SummaryVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(SummaryVsReference, SampledWithSmallBandAndRaggedStops) {
  auto m = *Transformer::RandomInit(GetParam().config, 11);
  GenerationOptions o;
  o.slots = 4;  // 6 samples through 4 slots: two slots are refilled mid-batch
  o.max_new_tokens = 24;
  o.samples_per_prompt = 2;
  o.seed = 5;
  o.stop_token_ids = {5, 6};  // random models hit these: ragged response lengths
  o.tap.window = 3;
  o.tap.band_lo = 2;
  o.tap.band_hi = 6;
  o.tap.head_quantile = 0.3;
  ExpectSummariesMatchReference(*m, o, GetParam().name + " sampled");
  o.slots = 0;
  ExpectSummariesMatchReference(*m, o, GetParam().name + " sampled, one slot per sample");
  o.slots = 2;
  o.continuous = false;
  ExpectSummariesMatchReference(*m, o, GetParam().name + " sampled, static batches of 2");
  o.continuous = true;
  m->UseDecodeKernels(false);
  ExpectSummariesMatchReference(*m, o, GetParam().name + " sampled, generic decode ops");
}

TEST_P(SummaryVsReference, GreedyWithPaperDefaults) {
  auto m = *Transformer::RandomInit(GetParam().config, 12);
  GenerationOptions o;
  o.sampling.temperature = 0;
  o.max_new_tokens = 40;
  o.slots = 2;
  ExpectSummariesMatchReference(*m, o, GetParam().name + " greedy");
}

TEST_P(SummaryVsReference, LogprobsAndEntropyMatchTheTrainingForward) {
  auto m = *Transformer::RandomInit(GetParam().config, 13);
  GenerationOptions o;
  o.max_new_tokens = 16;
  o.samples_per_prompt = 2;
  o.seed = 9;
  o.taps = false;
  o.slots = 3;
  o.stop_token_ids = {5};
  std::vector<GeneratedSample> out = *GenerationEngine(*m).Generate(RaggedPrompts(), o);
  for (const GeneratedSample& s : out) {
    std::vector<int64_t> ids(s.prompt_ids.begin(), s.prompt_ids.end());
    ids.insert(ids.end(), s.response_ids.begin(), s.response_ids.end());
    const int64_t n = static_cast<int64_t>(ids.size()), p = s.prompt_ids.size();
    const at::Tensor logp = at::log_softmax(
        m->Forward(at::tensor(ids, at::kLong).unsqueeze(0), at::ones({1, n}))->logits[0], -1);
    for (size_t j = 0; j < s.response_ids.size(); ++j) {
      const at::Tensor row = logp[p + j - 1];
      EXPECT_NEAR(s.logprobs[j], row[s.response_ids[j]].item<double>(), 1e-4);
      EXPECT_NEAR(s.entropy[j], -(row.exp() * row).sum().item<double>(), 1e-4);
    }
  }
}

// The learner's path: one right-padded batch forward with the tapped layers' maps, each
// sequence's summary through SummaryFromMaps, against the one-sequence reference.
TEST_P(SummaryVsReference, FromABatchForwardsMapsWithRightPadding) {
  auto m = *Transformer::RandomInit(GetParam().config, 14);
  GenerationOptions o;
  o.max_new_tokens = 24;
  o.samples_per_prompt = 2;
  o.seed = 3;
  o.taps = false;
  o.stop_token_ids = {5, 6};
  o.tap.window = 3;
  o.tap.band_lo = 2;
  o.tap.band_hi = 6;
  const std::vector<GeneratedSample> out = *GenerationEngine(*m).Generate(RaggedPrompts(), o);
  const TapOptions tap = *ResolveTapOptions(o.tap, GetParam().config.num_layers);
  int64_t len = 0;
  for (const GeneratedSample& s : out) {
    len = std::max<int64_t>(len, s.prompt_ids.size() + s.response_ids.size());
  }
  const int64_t b = static_cast<int64_t>(out.size());
  at::Tensor ids = at::zeros({b, len}, at::kLong), mask = at::zeros({b, len});
  for (int64_t i = 0; i < b; ++i) {
    std::vector<int64_t> seq(out[i].prompt_ids.begin(), out[i].prompt_ids.end());
    seq.insert(seq.end(), out[i].response_ids.begin(), out[i].response_ids.end());
    ids[i].narrow(0, 0, seq.size()).copy_(at::tensor(seq, at::kLong));
    mask[i].narrow(0, 0, seq.size()).fill_(1);
  }
  const model::ForwardOutput fwd = *m->Forward(ids, mask, tap.layers);
  int defined = 0, ragged = 0;
  for (int64_t i = 0; i < b; ++i) {
    const GeneratedSample& s = out[i];
    std::vector<at::Tensor> maps;
    for (const at::Tensor& a : fwd.attention) maps.push_back(a[i]);
    const int64_t p = s.prompt_ids.size(), n = s.response_ids.size();
    ragged += p + n < len;
    absl::StatusOr<AttentionSummary> got = SummaryFromMaps(tap, maps, p, n);
    ASSERT_TRUE(got.ok()) << got.status();
    const AttentionSummary ref = *ReferenceSummary(*m, s.prompt_ids, s.response_ids, o.tap);
    EXPECT_EQ(got->local_heads, ref.local_heads);
    EXPECT_EQ(got->global_heads, ref.global_heads);
    for (int64_t j = 0; j < n; ++j) {
      EXPECT_NEAR(got->waad[j], ref.waad[j], 1e-4) << "sequence " << i << " token " << j;
      ASSERT_EQ(std::isnan(got->fai[j]), std::isnan(ref.fai[j])) << "token " << j;
      if (!std::isnan(ref.fai[j])) {
        EXPECT_NEAR(got->fai[j], ref.fai[j], 1e-4) << "sequence " << i << " token " << j;
        ++defined;
      }
    }
  }
  EXPECT_GT(defined, 5);
  EXPECT_GT(ragged, 0);  // some sequences were right-padded
  // A map count or shape that does not fit is named, not read out of bounds.
  std::vector<at::Tensor> short_maps;
  for (const at::Tensor& a : fwd.attention) short_maps.push_back(a[0].narrow(1, 0, 2));
  EXPECT_EQ(SummaryFromMaps(tap, short_maps, 3, 5).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SummaryFromMaps(tap, {}, 3, 5).status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SummaryVsReference,
    ::testing::Values(Case{"qwen2_gqa", Shape(Architecture::kQwen2, 4, 4, 2)},
                      Case{"llama_gqa4", Shape(Architecture::kLlama, 3, 8, 2)},
                      Case{"qwen3_mha", Shape(Architecture::kQwen3, 6, 2, 2)}),
    [](const auto& info) { return info.param.name; });

TEST(Engine, SameSeedSameTokensAndPromptMajorOrder) {
  auto m = *Transformer::RandomInit(Shape(Architecture::kQwen2, 2, 4, 2), 1);
  GenerationOptions o;
  o.samples_per_prompt = 3;
  o.max_new_tokens = 12;
  o.seed = 77;
  o.taps = false;
  auto a = *GenerationEngine(*m).Generate(RaggedPrompts(), o);
  auto b = *GenerationEngine(*m).Generate(RaggedPrompts(), o);
  o.seed = 78;
  auto c = *GenerationEngine(*m).Generate(RaggedPrompts(), o);
  ASSERT_EQ(a.size(), 9u);
  bool any_difference = false;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].response_ids, b[i].response_ids);
    EXPECT_EQ(a[i].prompt_index, static_cast<int64_t>(i / 3));
    EXPECT_EQ(a[i].sample_index, static_cast<int64_t>(i % 3));
    any_difference = any_difference || a[i].response_ids != c[i].response_ids;
  }
  EXPECT_TRUE(any_difference);
}

// Each call samples from its own generator: two engines generating at the same time, on the
// same model, each reproduce the tokens they produce alone, and neither draws from nor reseeds
// the default generator (the shared-default-generator bug reseeded it on every CUDA call).
TEST(Engine, ConcurrentEnginesReproduceTheirOwnSequences) {
  auto m = *Transformer::RandomInit(Shape(Architecture::kQwen2, 2, 4, 2), 3);
  GenerationOptions o;
  o.samples_per_prompt = 2;
  o.max_new_tokens = 16;
  o.taps = false;
  auto run = [&](uint64_t seed) {
    GenerationOptions mine = o;
    mine.seed = seed;
    absl::StatusOr<std::vector<GeneratedSample>> out =
        GenerationEngine(*m).Generate(RaggedPrompts(), mine);
    std::vector<std::vector<int32_t>> ids;
    if (!out.ok()) return ids;
    for (const GeneratedSample& s : *out) ids.push_back(s.response_ids);
    return ids;
  };
  const auto alone_a = run(11), alone_b = run(12);
  ASSERT_EQ(alone_a.size(), 6u);
  ASSERT_NE(alone_a, alone_b);  // different seeds: the comparison below can fail

  at::Generator shared = at::globalContext().defaultGenerator(at::kCPU);
  shared.set_current_seed(5);
  constexpr int kRounds = 6;
  std::vector<std::vector<std::vector<int32_t>>> got_a(kRounds), got_b(kRounds);
  {
    std::thread ta([&] {
      for (int r = 0; r < kRounds; ++r) got_a[r] = run(11);
    });
    std::thread tb([&] {
      for (int r = 0; r < kRounds; ++r) got_b[r] = run(12);
    });
    ta.join();
    tb.join();
  }
  for (int r = 0; r < kRounds; ++r) {
    EXPECT_EQ(got_a[r], alone_a) << "round " << r;
    EXPECT_EQ(got_b[r], alone_b) << "round " << r;
  }
  // The default generator was neither reseeded nor advanced.
  EXPECT_EQ(shared.current_seed(), 5u);
  const at::Tensor after = at::rand({8});
  shared.set_current_seed(5);
  EXPECT_TRUE(at::equal(after, at::rand({8})));
}

TEST(Engine, NewGeneratorIsSeededAndSharedWithNothing) {
  at::Generator a = NewGenerator(at::kCPU, 42), b = NewGenerator(at::kCPU, 42);
  EXPECT_EQ(a.current_seed(), 42u);
  const at::Tensor first = at::rand({16}, a);
  EXPECT_TRUE(at::equal(first, at::rand({16}, b)));          // same seed, same sequence
  EXPECT_FALSE(at::equal(first, at::rand({16}, a)));         // a advanced, b is its own
  EXPECT_FALSE(at::equal(first, at::rand({16}, NewGenerator(at::kCPU, 43))));
}

TEST(Engine, GreedyEqualsTopK1AndBatchingDoesNotChangeGreedyOutput) {
  auto m = *Transformer::RandomInit(Shape(Architecture::kLlama, 2, 4, 2), 2);
  GenerationOptions greedy;
  greedy.sampling.temperature = 0;
  greedy.max_new_tokens = 10;
  GenerationOptions top1 = greedy;
  top1.sampling.temperature = 0.7;
  top1.sampling.top_k = 1;
  auto a = *GenerationEngine(*m).Generate(RaggedPrompts(), greedy);
  auto b = *GenerationEngine(*m).Generate(RaggedPrompts(), top1);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].response_ids, b[i].response_ids);
    EXPECT_NEAR(b[i].logprobs[0], 0.0, 1e-6) << "top-1 leaves a point mass";
    // Alone, without the other (padded) prompts, the same tokens come out.
    auto alone = *GenerationEngine(*m).Generate({RaggedPrompts()[i]}, greedy);
    EXPECT_EQ(alone[0].response_ids, a[i].response_ids) << "prompt " << i;
  }
}

TEST(Engine, FinishReasons) {
  auto m = *Transformer::RandomInit(Shape(Architecture::kQwen2, 2, 4, 2), 3);
  GenerationOptions o;
  o.sampling.temperature = 0;
  o.max_new_tokens = 8;
  o.taps = false;
  auto free = *GenerationEngine(*m).Generate({{1, 2, 3}}, o);
  ASSERT_EQ(free[0].response_ids.size(), 8u);
  EXPECT_EQ(free[0].finish, FinishReason::kLength);
  const int32_t third = free[0].response_ids[2];
  o.stop_token_ids = {third};
  auto eos = *GenerationEngine(*m).Generate({{1, 2, 3}}, o);
  const auto first_hit = std::find(free[0].response_ids.begin(), free[0].response_ids.end(), third);
  EXPECT_EQ(eos[0].finish, FinishReason::kEos);
  EXPECT_EQ(eos[0].response_ids,
            std::vector<int32_t>(free[0].response_ids.begin(), first_hit + 1))
      << "stops right after the first EOS, which is kept";
  o.stop_token_ids.clear();
  o.decode = [](const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t id : ids) s += static_cast<char>('A' + id);
    return s;
  };
  o.stop_strings = {std::string(1, static_cast<char>('A' + free[0].response_ids[1])) +
                    std::string(1, static_cast<char>('A' + free[0].response_ids[2]))};
  auto stop = *GenerationEngine(*m).Generate({{1, 2, 3}}, o);
  EXPECT_EQ(stop[0].finish, FinishReason::kStopString);
  EXPECT_LE(stop[0].response_ids.size(), 3u);
}

TEST(Engine, BadInputsAreNamed) {
  auto m = *Transformer::RandomInit(Shape(Architecture::kQwen2, 2, 4, 2), 4);
  GenerationEngine e(*m);
  GenerationOptions o;
  auto msg = [&](const std::vector<std::vector<int32_t>>& p, const GenerationOptions& opt) {
    return std::string(e.Generate(p, opt).status().message());
  };
  EXPECT_NE(msg({{1}, {}}, o).find("prompt 1 is empty"), std::string::npos);
  EXPECT_NE(msg({{1, 99}}, o).find("prompt 0 token 1 = 99 is outside the vocabulary [0, 37)"),
            std::string::npos);
  GenerationOptions bad = o;
  bad.tap.layers = {0, 7};
  EXPECT_NE(msg({{1}}, bad).find("tap layer 7 is outside the model's layers [0, 2)"),
            std::string::npos);
  bad = o;
  bad.max_new_tokens = 200;
  EXPECT_NE(msg({{1}}, bad).find("exceeds max_position_embeddings 128"), std::string::npos);
  bad = o;
  bad.stop_strings = {"x"};
  EXPECT_NE(msg({{1}}, bad).find("need a decode function"), std::string::npos);
}

TEST(TapLayers, PaperDefaults) {
  EXPECT_EQ(DefaultTapLayers(36), (std::vector<int64_t>{12, 15, 18, 21, 24}));
  EXPECT_EQ(DefaultTapLayers(28), (std::vector<int64_t>{9, 11, 14, 16, 18}));
  EXPECT_EQ(DefaultTapLayers(4), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(DefaultTapLayers(1), (std::vector<int64_t>{0}));
}

TEST(Sampler, TopKAndTopPKeepTheRightTokensAndRenormalise) {
  // probs 0.5, 0.3, 0.15, 0.05
  const at::Tensor logits = at::log(at::tensor({0.5, 0.3, 0.15, 0.05})).to(at::kFloat).unsqueeze(0)
                                .expand({4000, 4}).contiguous();
  at::Generator gen = at::detail::createCPUGenerator(1);
  SamplingOptions top_p;
  top_p.top_p = 0.7;  // keeps {0, 1}: the mass before token 2 is already 0.8
  SampledTokens s = SampleNext(logits, top_p, gen);
  EXPECT_LE(s.ids.max().item<int64_t>(), 1);
  const double frac0 = (s.ids == 0).to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(frac0, 0.5 / 0.8, 0.03);
  EXPECT_NEAR(s.logprobs[0].item<double>(),
              std::log((s.ids[0].item<int64_t>() == 0 ? 0.5 : 0.3) / 0.8), 1e-5);
  const double h = -(0.625 * std::log(0.625) + 0.375 * std::log(0.375));
  EXPECT_NEAR(s.entropy[0].item<double>(), h, 1e-5);

  SamplingOptions top_k;
  top_k.top_k = 3;
  s = SampleNext(logits, top_k, gen);
  EXPECT_LE(s.ids.max().item<int64_t>(), 2);
  EXPECT_GT((s.ids == 2).sum().item<int64_t>(), 0);

  SamplingOptions hot;
  hot.temperature = 2.0;  // flatter: token 3 gets sqrt-proportional mass
  s = SampleNext(logits, hot, gen);
  const double z = std::sqrt(0.5) + std::sqrt(0.3) + std::sqrt(0.15) + std::sqrt(0.05);
  EXPECT_NEAR((s.ids == 3).to(at::kDouble).mean().item<double>(), std::sqrt(0.05) / z, 0.03);
}

// Greedy samples do not depend on what shares their batch: continuous, static and one slot per
// sample give the same tokens, and continuous batching needs fewer decode steps than static
// batching with the same number of slots when lengths are ragged.
TEST(Engine, ContinuousBatchingChangesNoSampleAndSavesSteps) {
  auto m = *Transformer::RandomInit(Shape(Architecture::kQwen2, 2, 4, 2), 21);
  GenerationOptions o;
  o.sampling.temperature = 0;
  o.max_new_tokens = 30;
  o.samples_per_prompt = 1;
  o.stop_token_ids = {3, 7, 11};
  o.taps = false;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 12; ++i) prompts.push_back({1 + i, 2 * i % 37, 30 - i});
  GenerationStats all_stats, cont_stats, static_stats;
  auto all = *GenerationEngine(*m).Generate(prompts, o, &all_stats);
  o.slots = 3;
  auto cont = *GenerationEngine(*m).Generate(prompts, o, &cont_stats);
  o.continuous = false;
  auto stat = *GenerationEngine(*m).Generate(prompts, o, &static_stats);
  std::set<size_t> lengths;
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(cont[i].response_ids, all[i].response_ids) << "prompt " << i;
    EXPECT_EQ(stat[i].response_ids, all[i].response_ids) << "prompt " << i;
    lengths.insert(all[i].response_ids.size());
  }
  ASSERT_GT(lengths.size(), 2u) << "the workload must be ragged for the comparison to mean anything";
  EXPECT_EQ(cont_stats.slots, 3);
  EXPECT_EQ(static_stats.prefills, 1) << "every prompt once";
  EXPECT_LT(cont_stats.decode_steps, static_stats.decode_steps);
  EXPECT_EQ(cont_stats.new_tokens, static_stats.new_tokens);
}

TEST(Accumulator, StateIsLinearNotQuadraticInLength) {
  TapOptions t = *ResolveTapOptions({}, 36);
  SummaryAccumulator a(t, 1, 32, 1000), b(t, 1, 32, 2000);
  const double ratio = static_cast<double>(b.StateBytes()) / a.StateBytes();
  EXPECT_LT(ratio, 2.2);
  EXPECT_GT(ratio, 1.8);
}

}  // namespace
}  // namespace rhythm::common::rollout

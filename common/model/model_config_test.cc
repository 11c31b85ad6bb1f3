#include "common/model/model_config.h"

#include "gtest/gtest.h"

namespace rhythm::common::model {
namespace {

// Abridged from the published config.json files of Qwen2.5-0.5B, Qwen3-0.6B and Llama-3.2-1B.
constexpr char kQwen25[] = R"({"architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu",
  "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": 32768,
  "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "use_sliding_window": false, "vocab_size": 151936,
  "bos_token_id": 151643, "eos_token_id": 151643, "rope_scaling": null})";
constexpr char kQwen3[] = R"({"architectures": ["Qwen3ForCausalLM"], "attention_bias": false,
  "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024, "intermediate_size": 3072,
  "max_position_embeddings": 40960, "num_attention_heads": 16, "num_hidden_layers": 28,
  "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_theta": 1000000,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "vocab_size": 151936,
  "eos_token_id": 151645})";
constexpr char kLlama32[] = R"({"architectures": ["LlamaForCausalLM"], "attention_bias": false,
  "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 8192, "mlp_bias": false,
  "max_position_embeddings": 131072, "num_attention_heads": 32, "num_hidden_layers": 16,
  "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "tie_word_embeddings": true, "vocab_size": 128256, "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009]})";

TEST(ModelConfig, ParsesTheThreeFamilies) {
  ModelConfig q = *ParseHfConfig(kQwen25, "qwen2.5/config.json");
  EXPECT_EQ(q.architecture, Architecture::kQwen2);
  EXPECT_EQ(q.head_dim, 64);
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_FALSE(q.o_bias);
  EXPECT_FALSE(q.qk_norm);
  EXPECT_EQ(q.kv_groups(), 7);
  EXPECT_EQ(q.torch_dtype, "bfloat16");

  ModelConfig q3 = *ParseHfConfig(kQwen3, "qwen3/config.json");
  EXPECT_EQ(q3.head_dim, 128) << "explicit head_dim, not hidden / heads = 64";
  EXPECT_TRUE(q3.qk_norm);
  EXPECT_FALSE(q3.qkv_bias);

  ModelConfig l = *ParseHfConfig(kLlama32, "llama/config.json");
  EXPECT_EQ(l.architecture, Architecture::kLlama);
  EXPECT_DOUBLE_EQ(l.rope_scaling.factor, 32.0);
  EXPECT_EQ(l.eos_token_id, 128001) << "first of the list";
  EXPECT_DOUBLE_EQ(l.rms_norm_eps, 1e-5);
}

TEST(ModelConfig, RoundTripsThroughConfigJson) {
  for (const char* text : {kQwen25, kQwen3, kLlama32}) {
    ModelConfig a = *ParseHfConfig(text, "a");
    ModelConfig b = *ParseHfConfig(ToHfConfigJson(a), "b");
    EXPECT_EQ(ToHfConfigJson(a), ToHfConfigJson(b));
    EXPECT_EQ(b.head_dim, a.head_dim);
    EXPECT_EQ(b.qkv_bias, a.qkv_bias);
    EXPECT_EQ(b.qk_norm, a.qk_norm);
    EXPECT_DOUBLE_EQ(b.rope_scaling.factor, a.rope_scaling.factor);
  }
}

TEST(ModelConfig, UnsupportedValuesNameFileFieldAndValue) {
  struct Case {
    std::string edit_from, edit_to, want;
  } cases[] = {
      {"Qwen2ForCausalLM", "MixtralForCausalLM",
       "cfg.json: architectures: 'MixtralForCausalLM' is not supported"},
      {"\"silu\"", "\"gelu\"", "cfg.json: hidden_act: \"gelu\" is not supported"},
      {"\"use_sliding_window\": false", "\"use_sliding_window\": true",
       "use_sliding_window: true is not supported"},
      {"\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3",
       "num_key_value_heads: 3 does not divide num_attention_heads = 14"},
      {"\"hidden_size\": 896", "\"hidden_size\": \"big\"",
       "hidden_size: expected an integer, got \"big\""},
      {"\"vocab_size\": 151936", "\"vocab_size\": 0", "vocab_size: 0 must be positive"},
      {"\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4}",
       "rope_scaling: {\"factor\":4,\"type\":\"yarn\"} is not supported"},
      // Issue 17's start-up aborts: a non-object rope_scaling threw inside nlohmann::json,
      // 1e9 layers ended in std::bad_alloc while the model was built.
      {"\"rope_scaling\": null", "\"rope_scaling\": 5",
       "cfg.json: rope_scaling: 5 is not supported"},
      {"\"rope_scaling\": null", "\"rope_scaling\": [1, 2]",
       "rope_scaling: [1,2] is not supported"},
      {"\"num_hidden_layers\": 24", "\"num_hidden_layers\": 1000000000",
       "cfg.json: num_hidden_layers: 1000000000 exceeds the largest supported value, 4096"},
      {"\"vocab_size\": 151936", "\"vocab_size\": 9000000000000",
       "vocab_size: 9000000000000 exceeds"},
      {"\"intermediate_size\": 4864", "\"intermediate_size\": 100000000",
       "intermediate_size: 100000000 exceeds"},
  };
  for (const Case& c : cases) {
    std::string text = kQwen25;
    const size_t at = text.find(c.edit_from);
    ASSERT_NE(at, std::string::npos) << c.edit_from;
    text.replace(at, c.edit_from.size(), c.edit_to);
    absl::StatusOr<ModelConfig> r = ParseHfConfig(text, "cfg.json");
    ASSERT_FALSE(r.ok()) << c.edit_to;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.want), std::string::npos) << r.status();
  }
  EXPECT_NE(ParseHfConfig("{}", "x.json").status().message().find("x.json: architectures"),
            std::string::npos);
  EXPECT_NE(ParseHfConfig("not json", "x.json").status().message().find("not a JSON object"),
            std::string::npos);
}

// Found while fuzzing (fuzz/fuzz_hf_config): the error message quoting a rope_scaling or
// hidden_act nested 100,000 deep recursed in nlohmann's dump() and overflowed the stack
// (SIGSEGV). Nesting is now bounded at parse time (common/json_limits.h).
TEST(ModelConfig, DeepNestingIsAnErrorNotAStackOverflow) {
  auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  auto parse = [](const std::string& from, const std::string& to) {
    std::string text = kQwen25;
    text.replace(text.find(from), from.size(), to);
    return ParseHfConfig(text, "cfg.json").status();
  };
  for (const absl::Status& s :
       {parse("\"rope_scaling\": null", "\"rope_scaling\": " + nested(100000)),
        parse("\"silu\"", nested(100000)), parse("\"silu\"", nested(65))}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message(), "cfg.json: nests deeper than 64 levels");
  }
  // 64 levels below the document are read, and refused for what they are.
  EXPECT_NE(parse("\"silu\"", nested(64)).message().find("cfg.json: hidden_act: [[[["),
            std::string::npos);
}

}  // namespace
}  // namespace rhythm::common::model

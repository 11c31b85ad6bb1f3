// The shape of a Llama / Qwen2 / Qwen3 decoder, read from and written to Hugging Face's
// config.json. No torch here: parsing and validating a config is cheap and testable alone.
//
// Supported: architectures LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM with
// hidden_act "silu", rope_scaling null or {"rope_type": "llama3", ...}, no sliding window, no MLP
// bias. Anything else is INVALID_ARGUMENT naming the file, the field and the value, so a user
// learns at load time (not from wrong logits) that a checkpoint is outside what rhythm runs.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::common::model {

enum class Architecture { kLlama, kQwen2, kQwen3 };

struct RopeScaling {
  // "llama3" frequency scaling (Llama 3.1+); disabled when factor == 0.
  double factor = 0;
  double low_freq_factor = 1;
  double high_freq_factor = 4;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Architecture architecture = Architecture::kQwen2;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_heads unless config.json says otherwise (Qwen3)
  int64_t intermediate_size = 0;
  int64_t max_position_embeddings = 2048;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  // Bias on q/k/v projections (Qwen2 always; Llama/Qwen3 when attention_bias).
  bool qkv_bias = false;
  // Bias on the output projection (Llama/Qwen3 attention_bias).
  bool o_bias = false;
  // Per-head RMSNorm of q and k before RoPE (Qwen3).
  bool qk_norm = false;
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  // "float32" or "bfloat16" (config.json's torch_dtype); what rhythm writes back.
  std::string torch_dtype = "float32";
  double initializer_range = 0.02;

  // Query heads per key/value head.
  int64_t kv_groups() const { return num_heads / num_kv_heads; }
};

// Parses config.json text. `source` names the file in errors.
absl::StatusOr<ModelConfig> ParseHfConfig(absl::string_view json_text, absl::string_view source);

// Checks internal consistency (divisibility, positive sizes). Used by both constructors.
absl::Status ValidateModelConfig(const ModelConfig& config, absl::string_view source);

// config.json text for `config` (loadable by Hugging Face transformers and by ParseHfConfig).
std::string ToHfConfigJson(const ModelConfig& config);

// The built-in tiny Qwen2-style model (qkv bias, tied embeddings) from rhythm's config.
ModelConfig FromTinyConfig(const v1::TinyModelConfig& tiny, int64_t vocab_size,
                           int64_t bos_token_id, int64_t eos_token_id);

const char* ArchitectureName(Architecture a);

}  // namespace rhythm::common::model

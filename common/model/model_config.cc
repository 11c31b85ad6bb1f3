#include "common/model/model_config.h"

#include <cmath>
#include <iterator>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace rhythm::common::model {
namespace {

using nlohmann::json;

absl::Status FieldError(absl::string_view source, absl::string_view field,
                        absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, ": ", problem));
}

absl::StatusOr<int64_t> GetInt(const json& j, const char* field, absl::string_view source,
                               std::optional<int64_t> fallback = std::nullopt) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    return FieldError(source, field, "missing");
  }
  if (!it->is_number_integer()) {
    return FieldError(source, field, absl::StrCat("expected an integer, got ", it->dump()));
  }
  return it->get<int64_t>();
}

absl::StatusOr<double> GetDouble(const json& j, const char* field, absl::string_view source,
                                 double fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) {
    return FieldError(source, field, absl::StrCat("expected a number, got ", it->dump()));
  }
  return it->get<double>();
}

absl::StatusOr<bool> GetBool(const json& j, const char* field, absl::string_view source,
                             bool fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return FieldError(source, field, absl::StrCat("expected true or false, got ", it->dump()));
  }
  return it->get<bool>();
}

// eos_token_id may be an int or a list (Llama 3 instruct): the first one stops generation.
absl::StatusOr<int64_t> GetTokenId(const json& j, const char* field, absl::string_view source) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return -1;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) {
    return (*it)[0].get<int64_t>();
  }
  return FieldError(source, field, absl::StrCat("expected a token id, got ", it->dump()));
}

}  // namespace

const char* ArchitectureName(Architecture a) {
  switch (a) {
    case Architecture::kLlama:
      return "LlamaForCausalLM";
    case Architecture::kQwen2:
      return "Qwen2ForCausalLM";
    case Architecture::kQwen3:
      return "Qwen3ForCausalLM";
  }
  return "?";
}

absl::Status ValidateModelConfig(const ModelConfig& c, absl::string_view source) {
  const std::pair<const char*, int64_t> positive[] = {
      {"vocab_size", c.vocab_size},         {"hidden_size", c.hidden_size},
      {"num_hidden_layers", c.num_layers},  {"num_attention_heads", c.num_heads},
      {"num_key_value_heads", c.num_kv_heads}, {"head_dim", c.head_dim},
      {"intermediate_size", c.intermediate_size},
      {"max_position_embeddings", c.max_position_embeddings}};
  for (const auto& [field, value] : positive) {
    if (value <= 0) return FieldError(source, field, absl::StrCat(value, " must be positive"));
  }
  // Upper bounds, checked before anything is allocated from them (1e9 layers would otherwise
  // end in a std::bad_alloc while the model is built, outside any status). Each is far above
  // every published model (the largest: 256k vocabulary, hidden 16384, 126 layers, 128 heads,
  // head_dim 256, intermediate 53248, 10M positions).
  const std::pair<const char*, int64_t> bounded[] = {
      {"vocab_size", 1 << 24},        {"hidden_size", 1 << 17},
      {"num_hidden_layers", 4096},    {"num_attention_heads", 4096},
      {"num_key_value_heads", 4096},  {"head_dim", 1 << 14},
      {"intermediate_size", 1 << 20}, {"max_position_embeddings", int64_t{1} << 30}};
  const int64_t values[] = {
      c.vocab_size,   c.hidden_size, c.num_layers,        c.num_heads,
      c.num_kv_heads, c.head_dim,    c.intermediate_size, c.max_position_embeddings};
  for (size_t i = 0; i < std::size(bounded); ++i) {
    if (values[i] > bounded[i].second) {
      return FieldError(
          source, bounded[i].first,
          absl::StrCat(values[i], " exceeds the largest supported value, ", bounded[i].second));
    }
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return FieldError(source, "num_key_value_heads",
                      absl::StrCat(c.num_kv_heads, " does not divide num_attention_heads = ",
                                   c.num_heads));
  }
  if (c.head_dim % 2 != 0) {
    return FieldError(source, "head_dim", absl::StrCat(c.head_dim, " must be even (rotary)"));
  }
  if (!(c.rope_theta > 0)) return FieldError(source, "rope_theta", "must be positive");
  if (!(c.rms_norm_eps > 0)) return FieldError(source, "rms_norm_eps", "must be positive");
  if (c.torch_dtype != "float32" && c.torch_dtype != "bfloat16") {
    return FieldError(source, "torch_dtype",
                      absl::StrCat("'", c.torch_dtype, "' is not supported (float32, bfloat16)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseHfConfig(absl::string_view text, absl::string_view source) {
  bool too_deep = false;
  json j = ParseJsonBounded(text, &too_deep);
  if (too_deep) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": nests deeper than ", kMaxJsonDepth, " levels"));
  }
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  ModelConfig c;
  auto arch = j.find("architectures");
  if (arch == j.end() || !arch->is_array() || arch->empty() || !(*arch)[0].is_string()) {
    return FieldError(source, "architectures", "missing (expected e.g. [\"Qwen2ForCausalLM\"])");
  }
  const std::string name = (*arch)[0].get<std::string>();
  if (name == "LlamaForCausalLM") {
    c.architecture = Architecture::kLlama;
  } else if (name == "Qwen2ForCausalLM") {
    c.architecture = Architecture::kQwen2;
  } else if (name == "Qwen3ForCausalLM") {
    c.architecture = Architecture::kQwen3;
  } else {
    return FieldError(source, "architectures",
                      absl::StrCat("'", name,
                                   "' is not supported (LlamaForCausalLM, Qwen2ForCausalLM, "
                                   "Qwen3ForCausalLM)"));
  }
  RHYTHM_ASSIGN_OR_RETURN(c.vocab_size, GetInt(j, "vocab_size", source));
  RHYTHM_ASSIGN_OR_RETURN(c.hidden_size, GetInt(j, "hidden_size", source));
  RHYTHM_ASSIGN_OR_RETURN(c.num_layers, GetInt(j, "num_hidden_layers", source));
  RHYTHM_ASSIGN_OR_RETURN(c.num_heads, GetInt(j, "num_attention_heads", source));
  RHYTHM_ASSIGN_OR_RETURN(c.num_kv_heads, GetInt(j, "num_key_value_heads", source, c.num_heads));
  RHYTHM_ASSIGN_OR_RETURN(c.intermediate_size, GetInt(j, "intermediate_size", source));
  if (c.num_heads <= 0) return FieldError(source, "num_attention_heads", "must be positive");
  RHYTHM_ASSIGN_OR_RETURN(c.head_dim,
                          GetInt(j, "head_dim", source, c.hidden_size / c.num_heads));
  RHYTHM_ASSIGN_OR_RETURN(c.max_position_embeddings,
                          GetInt(j, "max_position_embeddings", source, 2048));
  RHYTHM_ASSIGN_OR_RETURN(c.rope_theta, GetDouble(j, "rope_theta", source, 10000.0));
  RHYTHM_ASSIGN_OR_RETURN(c.rms_norm_eps, GetDouble(j, "rms_norm_eps", source, 1e-6));
  RHYTHM_ASSIGN_OR_RETURN(c.initializer_range,
                          GetDouble(j, "initializer_range", source, 0.02));
  RHYTHM_ASSIGN_OR_RETURN(c.tie_word_embeddings,
                          GetBool(j, "tie_word_embeddings", source, false));
  RHYTHM_ASSIGN_OR_RETURN(const bool attention_bias, GetBool(j, "attention_bias", source, false));
  RHYTHM_ASSIGN_OR_RETURN(const bool mlp_bias, GetBool(j, "mlp_bias", source, false));
  RHYTHM_ASSIGN_OR_RETURN(const bool sliding, GetBool(j, "use_sliding_window", source, false));
  RHYTHM_ASSIGN_OR_RETURN(c.bos_token_id, GetTokenId(j, "bos_token_id", source));
  RHYTHM_ASSIGN_OR_RETURN(c.eos_token_id, GetTokenId(j, "eos_token_id", source));
  if (mlp_bias) return FieldError(source, "mlp_bias", "true is not supported");
  if (sliding) return FieldError(source, "use_sliding_window", "true is not supported");
  if (auto act = j.find("hidden_act"); act != j.end() && *act != "silu") {
    return FieldError(source, "hidden_act",
                      absl::StrCat(act->dump(), " is not supported (only \"silu\")"));
  }
  if (auto dt = j.find("torch_dtype"); dt != j.end() && dt->is_string()) {
    const std::string d = dt->get<std::string>();
    // float16 checkpoints load fine (weights are converted); rhythm writes them back as fp32.
    c.torch_dtype = d == "bfloat16" ? "bfloat16" : "float32";
  }
  c.qkv_bias = c.architecture == Architecture::kQwen2 || attention_bias;
  c.o_bias = c.architecture != Architecture::kQwen2 && attention_bias;
  c.qk_norm = c.architecture == Architecture::kQwen3;
  if (auto rs = j.find("rope_scaling"); rs != j.end() && !rs->is_null()) {
    // A non-object (5, "x", [..]) is checked before value(), which throws on one.
    const json type = !rs->is_object()            ? json()
                      : rs->contains("rope_type") ? (*rs)["rope_type"]
                                                  : rs->value("type", json());
    if (!rs->is_object() || type != "llama3") {
      return FieldError(source, "rope_scaling",
                        absl::StrCat(rs->dump(), " is not supported (null or rope_type llama3)"));
    }
    RHYTHM_ASSIGN_OR_RETURN(c.rope_scaling.factor, GetDouble(*rs, "factor", source, 8.0));
    RHYTHM_ASSIGN_OR_RETURN(c.rope_scaling.low_freq_factor,
                            GetDouble(*rs, "low_freq_factor", source, 1.0));
    RHYTHM_ASSIGN_OR_RETURN(c.rope_scaling.high_freq_factor,
                            GetDouble(*rs, "high_freq_factor", source, 4.0));
    RHYTHM_ASSIGN_OR_RETURN(c.rope_scaling.original_max_position_embeddings,
                            GetInt(*rs, "original_max_position_embeddings", source, 8192));
  }
  RHYTHM_RETURN_IF_ERROR(ValidateModelConfig(c, source));
  return c;
}

std::string ToHfConfigJson(const ModelConfig& c) {
  json j;
  j["architectures"] = {ArchitectureName(c.architecture)};
  j["model_type"] = c.architecture == Architecture::kLlama   ? "llama"
                    : c.architecture == Architecture::kQwen2 ? "qwen2"
                                                             : "qwen3";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["intermediate_size"] = c.intermediate_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rope_theta"] = c.rope_theta;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["initializer_range"] = c.initializer_range;
  j["torch_dtype"] = c.torch_dtype;
  j["use_cache"] = true;
  if (c.architecture != Architecture::kQwen2) j["attention_bias"] = c.o_bias;
  if (c.architecture == Architecture::kQwen2) j["use_sliding_window"] = false;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  if (c.rope_scaling.factor > 0) {
    j["rope_scaling"] = {
        {"rope_type", "llama3"},
        {"factor", c.rope_scaling.factor},
        {"low_freq_factor", c.rope_scaling.low_freq_factor},
        {"high_freq_factor", c.rope_scaling.high_freq_factor},
        {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  return j.dump(2) + "\n";
}

ModelConfig FromTinyConfig(const v1::TinyModelConfig& tiny, int64_t vocab_size,
                           int64_t bos_token_id, int64_t eos_token_id) {
  ModelConfig c;
  c.architecture = Architecture::kQwen2;
  c.vocab_size = vocab_size;
  c.hidden_size = tiny.hidden_size();
  c.num_layers = tiny.num_layers();
  c.num_heads = tiny.num_heads();
  c.num_kv_heads = tiny.num_kv_heads();
  c.head_dim = tiny.hidden_size() / tiny.num_heads();
  c.intermediate_size = tiny.intermediate_size();
  c.max_position_embeddings = tiny.max_seq_len();
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = true;
  c.qkv_bias = true;
  c.bos_token_id = bos_token_id;
  c.eos_token_id = eos_token_id;
  return c;
}

}  // namespace rhythm::common::model

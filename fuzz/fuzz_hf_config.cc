// fuzz_hf_config: Hugging Face config.json (common/model/model_config.h).
//
// Feeds: the input bytes as config.json text to ParseHfConfig.
// Asserts: no crash, abort, sanitizer report or hang (libFuzzer -timeout); a rejection is an
// absl::Status with code INVALID_ARGUMENT whose message names the file; an accepted config
// passes ValidateModelConfig, has finite rope_theta / rms_norm_eps, and round-trips:
// ParseHfConfig(ToHfConfigJson(c)) is accepted and writes back the same text.
// Seeds: fuzz/corpus/hf_config/ (the tiny model's config.json, Qwen3- and Llama-3-style ones).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/model/model_config.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using rhythm::common::model::ModelConfig;
  using rhythm::common::model::ParseHfConfig;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ModelConfig> c = ParseHfConfig(text, "fuzz/config.json");
  if (!c.ok()) {
    FUZZ_CHECK(c.status().code() == absl::StatusCode::kInvalidArgument, c.status().ToString());
    FUZZ_CHECK(absl::StartsWith(c.status().message(), "fuzz/config.json: "), c.status().ToString());
    return 0;
  }
  FUZZ_CHECK(rhythm::common::model::ValidateModelConfig(*c, "fuzz/config.json").ok(),
             "accepted config fails ValidateModelConfig");
  FUZZ_CHECK(
      std::isfinite(c->rope_theta) && std::isfinite(c->rms_norm_eps),
      absl::StrCat("non-finite rope_theta ", c->rope_theta, " / rms_norm_eps ", c->rms_norm_eps));
  const std::string written = rhythm::common::model::ToHfConfigJson(*c);
  absl::StatusOr<ModelConfig> again = ParseHfConfig(written, "fuzz/written.json");
  FUZZ_CHECK(again.ok(), absl::StrCat(again.status().ToString(), " for\n", written));
  const std::string rewritten = rhythm::common::model::ToHfConfigJson(*again);
  FUZZ_CHECK(rewritten == written, absl::StrCat("round trip differs:\n", written, "\n", rewritten));
  return 0;
}

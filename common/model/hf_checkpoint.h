// Hugging Face model directories in and out: config.json + safetensors (single or sharded) +
// tokenizer files. What users bring (Qwen2.5, Qwen3, Llama 3) and what rhythm gives back.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/model/transformer.h"

namespace rhythm::common::model {

// Reads <dir>/config.json and the weights, converting them to `dtype` on `device`. Errors name
// the file, the field or the tensor (see ParseHfConfig, ReadCheckpointTensors, FromTensors).
absl::StatusOr<std::unique_ptr<Transformer>> LoadHfModel(const std::string& dir,
                                                         at::ScalarType dtype = at::kFloat,
                                                         at::Device device = at::kCPU);

// Reads only <dir>/config.json.
absl::StatusOr<ModelConfig> LoadHfConfig(const std::string& dir);

struct ExportOptions {
  // Tokenizer and generation files (tokenizer.json, tokenizer_config.json,
  // special_tokens_map.json, vocab.json, merges.txt, generation_config.json,
  // rhythm_tokenizer.json) present here are copied through unchanged.
  std::string tokenizer_source_dir;
  // Called with the staging directory to add files (e.g. a tokenizer's Save).
  std::function<absl::Status(const std::string& dir)> write_extra_files;
  // Replace an existing non-empty `dir`; otherwise that is FAILED_PRECONDITION.
  bool overwrite = false;
  int64_t max_shard_bytes = int64_t{2} << 30;
};

// Writes a loadable Hugging Face directory. Atomic: everything is written and fsync'd into a
// staging directory beside `dir`, which is then renamed into place.
absl::Status ExportHfModel(const Transformer& model, const std::string& dir,
                           const ExportOptions& options = {});

}  // namespace rhythm::common::model

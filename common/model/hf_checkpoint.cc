#include "common/model/hf_checkpoint.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace rhythm::common::model {
namespace fs = std::filesystem;

absl::StatusOr<ModelConfig> LoadHfConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  std::stringstream text;
  text << in.rdbuf();
  return ParseHfConfig(text.str(), path);
}

absl::StatusOr<std::unique_ptr<Transformer>> LoadHfModel(const std::string& dir,
                                                         at::ScalarType dtype,
                                                         at::Device device) {
  RHYTHM_ASSIGN_OR_RETURN(ModelConfig config, LoadHfConfig(dir));
  RHYTHM_ASSIGN_OR_RETURN(CheckpointTensors tensors, ReadCheckpointTensors(dir));
  return Transformer::FromTensors(config, tensors, dtype, device);
}

absl::Status ExportHfModel(const Transformer& model, const std::string& dir,
                           const ExportOptions& options) {
  std::error_code ec;
  const fs::path target(dir);
  if (fs::exists(target) && !fs::is_empty(target) && !options.overwrite) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, ": exists and is not empty (export refuses to overwrite)"));
  }
  const fs::path staging = target.string() + ".staging";
  fs::remove_all(staging, ec);
  if (!fs::create_directories(staging, ec) && ec) {
    return absl::InternalError(absl::StrCat(staging.string(), ": ", ec.message()));
  }
  ModelConfig config = model.config();
  config.torch_dtype = model.dtype() == at::kBFloat16 ? "bfloat16" : "float32";
  {
    std::ofstream out(staging / "config.json");
    out << ToHfConfigJson(config);
    if (!out) return absl::InternalError(absl::StrCat(staging.string(), ": cannot write config"));
  }
  RHYTHM_RETURN_IF_ERROR(WriteCheckpointTensors(staging.string(), model.NamedParameters(),
                                                options.max_shard_bytes));
  if (!options.tokenizer_source_dir.empty()) {
    for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                             "vocab.json", "merges.txt", "generation_config.json",
                             "rhythm_tokenizer.json"}) {
      const fs::path from = fs::path(options.tokenizer_source_dir) / name;
      if (!fs::exists(from)) continue;
      fs::copy_file(from, staging / name, fs::copy_options::overwrite_existing, ec);
      if (ec) return absl::InternalError(absl::StrCat(from.string(), ": ", ec.message()));
    }
  }
  if (options.write_extra_files) RHYTHM_RETURN_IF_ERROR(options.write_extra_files(staging));
  const fs::path old = target.string() + ".old";
  fs::remove_all(old, ec);
  if (fs::exists(target)) fs::rename(target, old, ec);
  fs::rename(staging, target, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot move export into place: ",
                                                  ec.message()));
  fs::remove_all(old, ec);
  return absl::OkStatus();
}

}  // namespace rhythm::common::model

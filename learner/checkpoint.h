// Learner checkpoints on disk, written atomically:
//   <run_dir>/checkpoints/ckpt-<version, 8 digits>-<rollout-log position, 12 digits>/
//       model/                  a Hugging Face directory (config.json, safetensors, tokenizer)
//       optimizer.safetensors   AdamW moments by "<param>.exp_avg(_sq)"; with a bf16 model
//                               the fp32 masters by "<param>.master"
//       state.pb                rhythm.v1.LearnerCheckpoint (version, cursor, leases, seen
//                               rollout ids, queued rollouts, rollout-log position)
//   <run_dir>/checkpoints/LATEST    the name of the newest complete checkpoint
// Everything is written into ckpt-….tmp, fsync'd, renamed into place, and only then is LATEST
// replaced (write + fsync + rename), so a crash at any point leaves the previous checkpoint
// intact. The oldest checkpoints beyond `keep` are deleted. Not thread-safe; the trainer thread
// owns it.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/model/adamw.h"
#include "common/model/transformer.h"
#include "rhythm/v1/checkpoint.pb.h"

namespace rhythm::learner {

// optimizer.safetensors: the fp32 master of parameter P (a bf16 run's) is "P" + kMasterSuffix.
using common::model::kMasterSuffix;

struct CheckpointContents {
  v1::LearnerCheckpoint state;
  common::model::TensorMap optimizer;
};

// Writes a checkpoint; `write_tokenizer` adds the tokenizer files to the model directory.
// Returns the checkpoint directory.
absl::StatusOr<std::string> WriteCheckpoint(
    const std::string& run_dir, const common::model::Transformer& model,
    const CheckpointContents& contents,
    const std::function<absl::Status(const std::string&)>& write_tokenizer, int keep = 2);

struct LoadedCheckpoint {
  std::string dir;  // the checkpoint directory (its model/ is a Hugging Face directory)
  std::unique_ptr<common::model::Transformer> model;
  CheckpointContents contents;
};

// Loads the checkpoint LATEST names. NOT_FOUND only when there is no LATEST; a LATEST whose
// checkpoint cannot be read is DATA_LOSS naming the file (never silently a fresh start). The
// model is converted to `dtype` (the run's model.dtype) on `device`. When `dtype` is not fp32
// and the checkpoint has no masters (an fp32 run's), its weights read in fp32 become them.
absl::StatusOr<LoadedCheckpoint> LoadLatestCheckpoint(const std::string& run_dir,
                                                      at::ScalarType dtype = at::kFloat,
                                                      at::Device device = at::kCPU);

}  // namespace rhythm::learner

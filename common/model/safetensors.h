// safetensors files, read and written by us (https://github.com/huggingface/safetensors format):
//   8 bytes   little-endian u64 N, the header length
//   N bytes   JSON: {"<name>": {"dtype": "F32"|"BF16"|"F16", "shape": [...],
//                               "data_offsets": [begin, end]}, ..., "__metadata__": {...}}
//   rest      raw little-endian tensor data; offsets are relative to the start of this section
// and Hugging Face checkpoint directories: one `model.safetensors`, or shards listed by
// `model.safetensors.index.json` ({"metadata": {...}, "weight_map": {name: file}}).
//
// Every inconsistency is an error naming the file and, where there is one, the tensor: a
// truncated file, a header length past the end, invalid JSON, an unsupported dtype, offsets that
// disagree with the shape, overlap, or point past the data. Stateless; thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"

namespace rhythm::common::model {

using TensorMap = std::map<std::string, at::Tensor>;

// Reads every tensor of one file into CPU tensors of the stored dtype.
absl::StatusOr<TensorMap> ReadSafetensors(const std::string& path);

// Writes `tensors` (any device; float32, bfloat16 or float16) in name order, header padded to a
// multiple of 8 bytes, and fsyncs the file.
absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                              const std::map<std::string, std::string>& metadata = {});

struct CheckpointTensors {
  TensorMap tensors;
  // The file each tensor came from (for error messages).
  std::map<std::string, std::string> file_of;
};

// Reads model.safetensors, or every shard of model.safetensors.index.json, from `dir`. A tensor
// the index maps to a shard that does not hold it, or one stored twice, is an error.
absl::StatusOr<CheckpointTensors> ReadCheckpointTensors(const std::string& dir);

// Writes `tensors` to `dir` as model.safetensors, or, when they exceed `max_shard_bytes`, as
// model-0000i-of-0000n.safetensors shards plus model.safetensors.index.json.
absl::Status WriteCheckpointTensors(const std::string& dir, const TensorMap& tensors,
                                    int64_t max_shard_bytes = int64_t{2} << 30);

}  // namespace rhythm::common::model

// The model a config names, with its tokenizer, loaded one way for every binary (the actor, the
// learner, `rhythm sft`/`eval`, `rhythm init-model`): an HF directory with the tokenizer saved
// in it, or, with no directory, a fresh tiny model (model.tiny's shape) on the default character
// tokenizer, initialised from a seed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/model/transformer.h"
#include "common/tokenizer/tokenizer.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::common::model {

struct ModelAndTokenizer {
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

// model.dtype (or the setting `key` names, e.g. actor.dtype) as a tensor type: fp32 (and
// unspecified) kFloat, bf16 kBFloat16. fp16 is INVALID_ARGUMENT "model.dtype = DTYPE_FP16: not
// supported (fp32, bf16)": its 5-bit exponent needs loss scaling, which the trainer does not do.
absl::StatusOr<at::ScalarType> ModelDType(v1::DType dtype,
                                          absl::string_view key = "model.dtype");

// `dir` non-empty: LoadHfModel(dir) and LoadTokenizer(dir), whose errors name the file. Empty:
// Transformer::RandomInit of FromTinyConfig(tiny) on CharTokenizer::CreateDefault(), from `seed`
// (INVALID_ARGUMENT for a shape that cannot be built). The model's parameters and compute are
// in `dtype` (model.dtype, ModelDType's errors): a checkpoint in another dtype is converted
// (fp32 to bf16 rounds to nearest), and a fresh bf16 model is the fp32 one's rounding. The
// learner trains a bf16 model through fp32 master weights (common/model/mixed_precision.h).
absl::StatusOr<ModelAndTokenizer> LoadModelAndTokenizer(const std::string& dir,
                                                        const v1::TinyModelConfig& tiny,
                                                        uint64_t seed,
                                                        at::Device device = at::kCPU,
                                                        v1::DType dtype = v1::DTYPE_FP32);

}  // namespace rhythm::common::model

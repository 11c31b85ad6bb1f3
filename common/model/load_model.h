// The model a config names, with its tokenizer, loaded one way for every binary (the actor, the
// learner, `rhythm sft`/`eval`, `rhythm init-model`): an HF directory with the tokenizer saved
// in it, or, with no directory, a fresh tiny model (model.tiny's shape) on the default character
// tokenizer, initialised from a seed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/model/transformer.h"
#include "common/tokenizer/tokenizer.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::common::model {

struct ModelAndTokenizer {
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

// `dir` non-empty: LoadHfModel(dir) and LoadTokenizer(dir), whose errors name the file. Empty:
// Transformer::RandomInit of FromTinyConfig(tiny) on CharTokenizer::CreateDefault(), from `seed`
// (INVALID_ARGUMENT for a shape that cannot be built).
absl::StatusOr<ModelAndTokenizer> LoadModelAndTokenizer(const std::string& dir,
                                                        const v1::TinyModelConfig& tiny,
                                                        uint64_t seed,
                                                        at::Device device = at::kCPU);

}  // namespace rhythm::common::model

#include "common/model/load_model.h"

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "common/model/hf_checkpoint.h"
#include "common/model/model_config.h"
#include "common/status.h"
#include "common/tokenizer/char_tokenizer.h"

namespace rhythm::common::model {

absl::StatusOr<at::ScalarType> ModelDType(v1::DType dtype, absl::string_view key) {
  switch (dtype) {
    case v1::DTYPE_UNSPECIFIED:
    case v1::DTYPE_FP32:
      return at::kFloat;
    case v1::DTYPE_BF16:
      return at::kBFloat16;
    default:
      return absl::InvalidArgumentError(absl::StrCat(key, " = ", v1::DType_Name(dtype),
                                                     ": not supported (fp32, bf16)"));
  }
}

absl::StatusOr<ModelAndTokenizer> LoadModelAndTokenizer(const std::string& dir,
                                                        const v1::TinyModelConfig& tiny,
                                                        uint64_t seed, at::Device device,
                                                        v1::DType dtype) {
  RHYTHM_ASSIGN_OR_RETURN(const at::ScalarType type, ModelDType(dtype));
  ModelAndTokenizer out;
  if (!dir.empty()) {
    RHYTHM_ASSIGN_OR_RETURN(out.model, LoadHfModel(dir, type, device));
    RHYTHM_ASSIGN_OR_RETURN(out.tokenizer, LoadTokenizer(dir));
    return out;
  }
  std::unique_ptr<CharTokenizer> chars = CharTokenizer::CreateDefault();
  RHYTHM_ASSIGN_OR_RETURN(
      out.model, Transformer::RandomInit(FromTinyConfig(tiny, chars->vocab_size(),
                                                        CharTokenizer::kBosId, chars->eos_id()),
                                         seed, at::kFloat, device));
  if (type != at::kFloat) {
    // Initialised in fp32 and rounded, so a bf16 run starts from the fp32 run's weights.
    RHYTHM_ASSIGN_OR_RETURN(std::unique_ptr<Transformer> rounded,
                            Transformer::RandomInit(out.model->config(), seed, type, device));
    at::NoGradGuard no_grad;
    const TensorMap src = out.model->NamedParameters();
    for (auto& [name, t] : rounded->NamedParameters()) t.copy_(src.at(name));
    out.model = std::move(rounded);
  }
  out.tokenizer = std::move(chars);
  return out;
}

}  // namespace rhythm::common::model

#include "common/model/load_model.h"

#include "common/model/hf_checkpoint.h"
#include "common/model/model_config.h"
#include "common/status.h"
#include "common/tokenizer/char_tokenizer.h"

namespace rhythm::common::model {

absl::StatusOr<ModelAndTokenizer> LoadModelAndTokenizer(const std::string& dir,
                                                        const v1::TinyModelConfig& tiny,
                                                        uint64_t seed, at::Device device) {
  ModelAndTokenizer out;
  if (!dir.empty()) {
    RHYTHM_ASSIGN_OR_RETURN(out.model, LoadHfModel(dir, at::kFloat, device));
    RHYTHM_ASSIGN_OR_RETURN(out.tokenizer, LoadTokenizer(dir));
    return out;
  }
  std::unique_ptr<CharTokenizer> chars = CharTokenizer::CreateDefault();
  RHYTHM_ASSIGN_OR_RETURN(
      out.model, Transformer::RandomInit(FromTinyConfig(tiny, chars->vocab_size(),
                                                        CharTokenizer::kBosId, chars->eos_id()),
                                         seed, at::kFloat, device));
  out.tokenizer = std::move(chars);
  return out;
}

}  // namespace rhythm::common::model

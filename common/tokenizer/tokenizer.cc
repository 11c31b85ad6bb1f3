#include "common/tokenizer/tokenizer.h"

#include "absl/strings/str_cat.h"
#include "common/tokenizer/char_tokenizer.h"
#include "common/tokenizer/file_util.h"
#include "common/tokenizer/hf_bpe_tokenizer.h"

namespace rhythm::common {

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& dir) {
  if (tokenizer_internal::FileExists(
          tokenizer_internal::JoinPath(dir, HfBpeTokenizer::kFileName))) {
    auto hf = HfBpeTokenizer::Load(dir);
    if (!hf.ok()) return hf.status();
    return std::unique_ptr<Tokenizer>(*std::move(hf));
  }
  if (tokenizer_internal::FileExists(tokenizer_internal::JoinPath(dir, CharTokenizer::kFileName))) {
    auto chars = CharTokenizer::Load(dir);
    if (!chars.ok()) return chars.status();
    return std::unique_ptr<Tokenizer>(*std::move(chars));
  }
  return absl::NotFoundError(
      absl::StrCat(dir, ": no ", HfBpeTokenizer::kFileName, " or ", CharTokenizer::kFileName));
}

}  // namespace rhythm::common

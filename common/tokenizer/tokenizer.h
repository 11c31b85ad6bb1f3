// Tokenizers: text <-> token ids for the models rhythm trains.
//
// Two implementations sit behind one interface:
//   CharTokenizer   (char_tokenizer.h)   one id per character, for rhythm's built-in arithmetic
//                                        tasks and the tiny models trained from scratch.
//                                        Files: <dir>/rhythm_tokenizer.json.
//   HfBpeTokenizer  (hf_bpe_tokenizer.h) a Hugging Face `tokenizer.json` byte-level BPE, as
//                                        shipped with Qwen2/2.5/3 and Llama 3, giving exactly
//                                        the ids of HF `tokenizers`. Files: <dir>/tokenizer.json
//                                        and, if present, <dir>/tokenizer_config.json.
//
//   text --Encode--> ids --(model)--> ids --Decode--> text
//
// Both take and return UTF-8. Encode never adds special tokens (BOS, chat markers): callers
// that want them write them into the text ("<|im_start|>user\n...") or append the ids; special
// tokens written literally in the text are encoded as their single id.
//
// Thread-safety: every implementation is immutable after construction (an internal cache, where
// there is one, is synchronized), so const methods may be called from any thread concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rhythm::common {

// The files of a Hugging Face tokenizer that say how a chat is written (chat_template.h reads
// them): tokenizer_config.json ("chat_template", "bos_token") and, as recent transformers
// versions save it, chat_template.jinja. A `*_source` names its file in error messages (the
// path when loaded from a directory), also when the file is absent.
struct ChatTemplateFiles {
  std::optional<std::string> config_json;  // std::nullopt: no tokenizer_config.json
  std::string config_json_source;
  std::optional<std::string> chat_template_jinja;  // std::nullopt: no chat_template.jinja
  std::string chat_template_jinja_source;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`, no special tokens added (like HF `add_special_tokens=False`).
  // INVALID_ARGUMENT, naming the byte offset, when `text` is not valid UTF-8.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const = 0;

  // Text of `ids` (special tokens are not skipped: they decode to their literal text).
  // INVALID_ARGUMENT naming the position and the id when an id is out of range. Never fails on
  // an in-range sequence: byte sequences that are not valid UTF-8 (a multi-byte character cut
  // between two ids) become U+FFFD, as in HF `decode`.
  virtual absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const = 0;

  // Ids are in [0, vocab_size). For HF files: the largest id of the vocab and added tokens + 1
  // (HF `len(tokenizer)`, which can be smaller than the model's embedding table).
  virtual int32_t vocab_size() const = 0;
  // The end-of-sequence id generation stops at.
  virtual int32_t eos_id() const = 0;
  // The id used to pad batches (never produced by Encode of ordinary text).
  virtual int32_t pad_id() const = 0;

  // Id of a token string (special or regular, in the tokenizer's own spelling, e.g. "Ġthe" for a
  // byte-level vocab), or std::nullopt when there is none.
  virtual std::optional<int32_t> TokenId(absl::string_view token) const = 0;

  // Writes the files that reload this tokenizer (with LoadTokenizer) into `dir`, creating `dir`
  // if needed and overwriting files of the same name. FAILED_PRECONDITION when a file cannot be
  // written.
  virtual absl::Status Save(const std::string& dir) const = 0;

  // The files the model's chat template is read from; std::nullopt for a tokenizer that has
  // none (CharTokenizer).
  virtual std::optional<ChatTemplateFiles> chat_template_files() const { return std::nullopt; }
};

// Loads <dir>/tokenizer.json (HF byte-level BPE, see hf_bpe_tokenizer.h) or, when there is none,
// <dir>/rhythm_tokenizer.json (character-level, see char_tokenizer.h).
// NOT_FOUND when neither file exists; INVALID_ARGUMENT naming the file and the field when the
// file is malformed or uses a feature that is not supported.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& dir);

}  // namespace rhythm::common

// CharTokenizer: one token per Unicode character, for rhythm's built-in tasks (countdown and
// multi-digit arithmetic prompts and answers) and the small models trained from scratch on them.
//
// Ids:
//   0 <pad>   1 <bos>   2 <eos>   3 <unk>   then one id per alphabet character, in order.
// The default alphabet (101 ids in all) is, in this order:
//   0-9, then  + - * / = ( ) , . : space newline,  then a-z, then A-Z, then the other printable
//   ASCII characters in code order (! " # $ % & ' ; < > ? @ [ \ ] ^ _ ` { | } ~), then tab.
// Ids of the default alphabet never change: checkpoints trained with it stay valid.
//
// Encode: a special token written literally ("<eos>", "<pad>", "<bos>", "<unk>") is its special
// id; any other character in the alphabet is its id; any other character is <unk>.
// Decode: special tokens decode to their literal text ("<eos>"), <unk> to U+FFFD ("�"). Hence
// Encode(Decode(ids)) == ids for every in-range id sequence (U+FFFD is never in an alphabet),
// and Decode(Encode(text)) == text whenever every character of `text` is in the alphabet.
//
// File format, <dir>/rhythm_tokenizer.json (written by Save, read by Load / LoadTokenizer):
//   {"type": "rhythm_char", "version": 1,
//    "special_tokens": ["<pad>", "<bos>", "<eos>", "<unk>"],
//    "alphabet": ["0", "1", ..., "\n", "\t"]}
// "special_tokens" must be exactly that list; "alphabet" lists single characters, ids 4, 5, ...
//
// Thread-safety: immutable after construction; all const methods are safe from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tokenizer/tokenizer.h"

namespace rhythm::common {

class CharTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kPadId = 0;
  static constexpr int32_t kBosId = 1;
  static constexpr int32_t kEosId = 2;
  static constexpr int32_t kUnkId = 3;
  static constexpr int32_t kNumSpecial = 4;
  static constexpr char kFileName[] = "rhythm_tokenizer.json";

  // The default alphabet described above, as UTF-8 (one character per id, from id 4).
  static absl::string_view DefaultAlphabet();

  // The tokenizer with the default alphabet.
  static std::unique_ptr<CharTokenizer> CreateDefault();

  // A tokenizer whose ids 4, 5, ... are the characters of `alphabet` (UTF-8), in order.
  // INVALID_ARGUMENT if `alphabet` is empty, not valid UTF-8, repeats a character or contains
  // U+FFFD (reserved for decoding <unk>).
  static absl::StatusOr<std::unique_ptr<CharTokenizer>> Create(absl::string_view alphabet);

  // Reads <dir>/rhythm_tokenizer.json. NOT_FOUND if it does not exist; INVALID_ARGUMENT naming
  // the file and the field if it is malformed.
  static absl::StatusOr<std::unique_ptr<CharTokenizer>> Load(const std::string& dir);

  // Parses the contents of a rhythm_tokenizer.json; `source` names it in error messages.
  static absl::StatusOr<std::unique_ptr<CharTokenizer>> FromJson(absl::string_view json,
                                                                 absl::string_view source);

  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override;
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const override;
  int32_t vocab_size() const override { return kNumSpecial + static_cast<int32_t>(chars_.size()); }
  int32_t eos_id() const override { return kEosId; }
  int32_t pad_id() const override { return kPadId; }
  int32_t bos_id() const { return kBosId; }
  int32_t unk_id() const { return kUnkId; }
  std::optional<int32_t> TokenId(absl::string_view token) const override;
  // Writes <dir>/rhythm_tokenizer.json.
  absl::Status Save(const std::string& dir) const override;

  // The file contents Save writes.
  std::string ToJson() const;

 private:
  // `chars` are distinct UTF-8 characters (validated by the factories).
  explicit CharTokenizer(std::vector<std::string> chars);

  std::vector<std::string> chars_;                    // chars_[i] is the text of id kNumSpecial + i
  std::array<int32_t, 128> ascii_ids_;                // -1 where the ASCII character has no id
  absl::flat_hash_map<char32_t, int32_t> other_ids_;  // non-ASCII characters
};

}  // namespace rhythm::common

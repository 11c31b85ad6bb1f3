// UTF-8 and Unicode helpers shared by the tokenizers (internal to rhythm_tokenizer; tests use
// them too). Strings are UTF-8 bytes in std::string / absl::string_view.
//
// Thread-safe: all functions are stateless (ICU's NFC instance is a process-wide singleton that
// ICU documents as thread-safe).
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rhythm::common::tokenizer_internal {

inline constexpr size_t kValidUtf8 = static_cast<size_t>(-1);

// Byte offset of the first byte that does not start a valid UTF-8 sequence (overlong forms,
// surrogates, code points above U+10FFFF and truncated sequences are invalid), or kValidUtf8.
size_t FindInvalidUtf8(absl::string_view text);

// INVALID_ARGUMENT "<what> is not valid UTF-8 at byte N (0x..)" unless `text` is valid UTF-8.
absl::Status CheckUtf8(absl::string_view text, absl::string_view what);

// Decodes the code point starting at text[pos] of *valid* UTF-8; sets *length to its byte
// length (1..4).
char32_t DecodeUtf8At(absl::string_view text, size_t pos, int* length);

// Appends the UTF-8 form of `cp` (which must be a Unicode scalar value).
void AppendUtf8(char32_t cp, std::string* out);

// `bytes` as valid UTF-8: each maximal invalid subpart becomes one U+FFFD (the "substitution of
// maximal subparts" practice of Unicode §3.9, which is what Rust's String::from_utf8_lossy and
// WHATWG's TextDecoder do, so decoding matches HF tokenizers byte for byte).
std::string Utf8Lossy(absl::string_view bytes);

// Unicode White_Space (Rust's char::is_whitespace, Oniguruma's \s).
bool IsWhiteSpace(char32_t cp);

// A regex word character: Alphabetic, a mark, a decimal digit, a connector punctuation or
// Join_Control (Rust regex-syntax's is_word_character, which HF uses for single_word).
bool IsWordChar(char32_t cp);

// Unicode Normalization Form C of valid UTF-8 `text`, with ICU. ASCII text is returned as is
// without calling ICU. INTERNAL if ICU fails (out of memory).
absl::StatusOr<std::string> NfcNormalize(absl::string_view text);

}  // namespace rhythm::common::tokenizer_internal

// HfBpeTokenizer: a Hugging Face `tokenizer.json` byte-level BPE (Qwen2/2.5/3, Llama 3, GPT-2
// style), giving exactly the ids of HF `tokenizers` (Rust) with add_special_tokens=False.
//
// Encode pipeline (the order of HF's TokenizerImpl::encode):
//
//   text ─► added tokens with normalized=false, matched in the raw text (leftmost-longest,
//   │        honouring single_word / lstrip / rstrip) ─────────────────────────────► their ids
//   └─► each piece between them ─► normalizer (NFC, if the file has one)
//        └─► added tokens with normalized=true, matched in the normalized piece ──► their ids
//             └─► each piece between them ─► pre_tokenizer: every Split regex in turn
//                  (behavior Isolated), then ByteLevel (GPT-2 regex too if use_regex)
//                  └─► each word: bytes ─► byte-level symbols ─► BPE merges by rank ───► ids
//
// Decode maps each id to its token, turns byte-level characters back into bytes (a token with a
// character outside the byte-level alphabet, e.g. an added token with a space, contributes its
// raw UTF-8), then repairs invalid UTF-8 with U+FFFD as Rust's from_utf8_lossy does. Nothing
// is skipped: special tokens decode to their text. This is HF `tokenizers`' decode; the extra
// clean-up that Python transformers applies when tokenizer_config.json sets
// clean_up_tokenization_spaces (Llama 3 does, Qwen does not) is not done.
//
// What is supported (anything else is INVALID_ARGUMENT at load, naming the file and the field,
// rather than silently different ids):
//   model          BPE; "merges" as "a b" strings or ["a", "b"] pairs; ignore_merges;
//                  unk_token / fuse_unk; no dropout, byte_fallback, continuing_subword_prefix,
//                  end_of_word_suffix.
//   normalizer     null, NFC, or a Sequence of NFC (ICU).
//   pre_tokenizer  Split (Regex or String pattern, behavior Isolated, invert false) and
//                  ByteLevel (add_prefix_space false; last), alone or in a Sequence.
//   decoder        ByteLevel.
//   post_processor ignored (Encode adds no special tokens).
//   added_tokens   all flags; leftmost-longest matching like HF's Aho-Corasick.
// Regexes run on PCRE2 (UTF + UCP). HF compiles them with Oniguruma, whose \s is Unicode
// White_Space; PCRE2's \s also matches U+180E, so \s / \S are rewritten to \p{White_Space} /
// \P{White_Space}. Unicode property tables are PCRE2's (Unicode 14): letters added in
// Unicode 15+ may split differently from a newer HF build.
// Like HF, with no unk_token a character whose byte-level symbol is missing from the vocab is
// dropped (real byte-level vocabs have all 256 symbols, so this only matters for toy files).
//
// eos_id / pad_id come from <dir>/tokenizer_config.json "eos_token" / "pad_token" (a string or
// {"content": ...}). Without a config or an eos_token, eos is the first of <|endoftext|>,
// <|end_of_text|>, </s> that is a token; pad defaults to eos.
//
// Thread-safety: immutable after construction except for a per-word merge cache, which is
// sharded and mutex-guarded; all const methods are safe from any thread concurrently.
// Memory: ~45 MB for Qwen3's 151k-token vocab, including the file's text kept for Save (~85 MB
// at peak while parsing).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tokenizer/tokenizer.h"

namespace rhythm::common {

// The contents of the files an HfBpeTokenizer is built from.
struct HfTokenizerFiles {
  std::string tokenizer_json;                            // tokenizer.json, required
  std::string tokenizer_json_source = "tokenizer.json";  // its name in error messages
  std::optional<std::string> config_json;                // tokenizer_config.json, if there is one
  std::string config_json_source = "tokenizer_config.json";
  std::optional<std::string> chat_template_jinja;  // chat_template.jinja, if there is one
  std::string chat_template_jinja_source = "chat_template.jinja";
};

class HfBpeTokenizer final : public Tokenizer {
 public:
  static constexpr char kFileName[] = "tokenizer.json";
  static constexpr char kConfigFileName[] = "tokenizer_config.json";
  static constexpr char kChatTemplateFileName[] = "chat_template.jinja";

  // Reads <dir>/tokenizer.json and, if present, <dir>/tokenizer_config.json and
  // <dir>/chat_template.jinja (kept for chat_template_files() and Save). NOT_FOUND if
  // tokenizer.json does not exist; INVALID_ARGUMENT "<path>: <field>: <problem>" if a file is
  // malformed or uses an unsupported feature (see above). Takes ~0.5 s for Qwen3's 11 MB file.
  static absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> Load(const std::string& dir);

  // Same, from file contents (kept, moved, for Save).
  static absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> FromFiles(HfTokenizerFiles files);

  ~HfBpeTokenizer() override;

  // INVALID_ARGUMENT if `text` is not valid UTF-8; INTERNAL if PCRE2 or ICU fail (they do not
  // on valid input within their resource limits).
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override;
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const override;
  int32_t vocab_size() const override;
  int32_t eos_id() const override;
  int32_t pad_id() const override;
  std::optional<int32_t> TokenId(absl::string_view token) const override;
  // Writes the tokenizer.json (and tokenizer_config.json and chat_template.jinja, where they
  // were loaded) it was built from, byte for byte.
  absl::Status Save(const std::string& dir) const override;
  // The tokenizer_config.json and chat_template.jinja it was built from (either may be absent).
  std::optional<ChatTemplateFiles> chat_template_files() const override;

  // The token string of `id` as the file spells it ("Ġthe", "<|im_end|>"), or std::nullopt.
  std::optional<std::string> IdToToken(int32_t id) const;
  // Whether `id` is an added token marked "special" in the file.
  bool IsSpecial(int32_t id) const;

  struct Model;  // the parsed tokenizer (defined in the .cc)

 private:
  explicit HfBpeTokenizer(std::unique_ptr<Model> model);

  std::unique_ptr<Model> model_;
};

}  // namespace rhythm::common

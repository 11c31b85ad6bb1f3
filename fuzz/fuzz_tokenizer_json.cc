// fuzz_tokenizer_json: Hugging Face tokenizer.json (common/tokenizer/hf_bpe_tokenizer.h).
//
// Feeds: the input bytes as tokenizer.json to HfBpeTokenizer::FromFiles (no
// tokenizer_config.json), and as rhythm_tokenizer.json to CharTokenizer::FromJson (rhythm's
// own character tokenizer file), and as a chat template and a tokenizer_config.json to
// ChatTemplateFromFiles (common/tokenizer/chat_template.h); an accepted tokenizer then encodes a
// few fixed texts and the last 64 bytes of the input, and decodes the ids, plus ids out of range.
// Asserts: no crash, abort, sanitizer report or hang; a rejection is INVALID_ARGUMENT naming
// the file; Encode of valid UTF-8 succeeds with ids that are tokens (IdToToken), the same ids
// a second time (the merge cache changes nothing); Encode of invalid UTF-8 is
// INVALID_ARGUMENT; Decode of the ids succeeds and is valid UTF-8; Decode of an out-of-range id
// is an error. A CharTokenizer also round-trips: FromJson(ToJson()) writes the same text, and
// Encode(Decode(ids)) == ids (its documented invariant). A chat template is recognised or
// refused with INVALID_ARGUMENT naming its file.
// Seeds: fuzz/corpus/tokenizer_json/ (the tiny BPE of hf_bpe_tokenizer_test.cc, a GPT-2-style
// variant, the first 400 tokens of Qwen3's tokenizer.json with their merges and added tokens,
// and the rhythm_tokenizer.json of runs/warm-countdown3).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/tokenizer/char_tokenizer.h"
#include "common/tokenizer/chat_template.h"
#include "common/tokenizer/hf_bpe_tokenizer.h"
#include "fuzz/fuzz_check.h"

namespace {

bool ValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    uint32_t cp = len == 1 ? c : c & (0x7f >> len);
    for (size_t k = 1; k < len; ++k) {
      const unsigned char d = s[i + k];
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

const char* const kTexts[] = {"Hello, world! 123\n\tabc  ab\r\n",
                              "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80",
                              "<|end|><|im_start|>user\n2+2=<|im_end|><eos><unk>", ""};

void FuzzCharTokenizer(const std::string& input) {
  using rhythm::common::CharTokenizer;
  auto tok = CharTokenizer::FromJson(input, "fuzz/rhythm_tokenizer.json");
  if (!tok.ok()) {
    FUZZ_CHECK(tok.status().code() == absl::StatusCode::kInvalidArgument, tok.status().ToString());
    FUZZ_CHECK(absl::StartsWith(tok.status().message(), "fuzz/rhythm_tokenizer.json"),
               tok.status().ToString());
    return;
  }
  const CharTokenizer& t = **tok;
  const std::string json = t.ToJson();
  auto again = CharTokenizer::FromJson(json, "fuzz/written.json");
  FUZZ_CHECK(again.ok(), again.status().ToString());
  FUZZ_CHECK((*again)->ToJson() == json, "ToJson does not round-trip");
  for (const char* text : kTexts) {
    auto ids = t.Encode(text);
    FUZZ_CHECK(ids.ok(), ids.status().ToString());
    for (int32_t id : *ids) FUZZ_CHECK(id >= 0 && id < t.vocab_size(), "id out of range");
    auto decoded = t.Decode(*ids);
    FUZZ_CHECK(decoded.ok(), decoded.status().ToString());
    auto re = t.Encode(*decoded);
    FUZZ_CHECK(re.ok() && *re == *ids, "Encode(Decode(ids)) != ids");
  }
  FUZZ_CHECK(!t.Decode({t.vocab_size()}).ok(), "Decode(vocab_size) succeeded");
}

void FuzzChatTemplate(const std::string& input) {
  for (bool as_jinja : {true, false}) {
    rhythm::common::ChatTemplateFiles files;
    files.config_json_source = "fuzz/tokenizer_config.json";
    files.chat_template_jinja_source = "fuzz/chat_template.jinja";
    if (as_jinja) {
      files.config_json = R"({"bos_token": "<|begin_of_text|>"})";
      files.chat_template_jinja = input;
    } else {
      files.config_json = input;
    }
    auto t = rhythm::common::ChatTemplateFromFiles(files);
    if (t.ok()) continue;
    FUZZ_CHECK(t.status().code() == absl::StatusCode::kInvalidArgument, t.status().ToString());
    FUZZ_CHECK(absl::StartsWith(t.status().message(), "fuzz/"), t.status().ToString());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using rhythm::common::HfBpeTokenizer;
  const std::string input(reinterpret_cast<const char*>(data), size);
  FuzzCharTokenizer(input);
  FuzzChatTemplate(input);
  rhythm::common::HfTokenizerFiles files;
  files.tokenizer_json = input;
  files.tokenizer_json_source = "fuzz/tokenizer.json";
  auto tok = HfBpeTokenizer::FromFiles(std::move(files));
  if (!tok.ok()) {
    FUZZ_CHECK(tok.status().code() == absl::StatusCode::kInvalidArgument, tok.status().ToString());
    FUZZ_CHECK(absl::StartsWith(tok.status().message(), "fuzz/tokenizer.json"),
               tok.status().ToString());
    return 0;
  }
  const HfBpeTokenizer& t = **tok;
  const int32_t vocab = t.vocab_size();
  const std::string texts[] = {kTexts[0], kTexts[1], kTexts[2], kTexts[3],
                               input.substr(input.size() > 64 ? input.size() - 64 : 0)};
  for (const std::string& text : texts) {
    auto ids = t.Encode(text);
    if (!ValidUtf8(text)) {
      FUZZ_CHECK(!ids.ok() && ids.status().code() == absl::StatusCode::kInvalidArgument,
                 "invalid UTF-8 was encoded");
      continue;
    }
    FUZZ_CHECK(ids.ok(), ids.status().ToString());
    for (int32_t id : *ids) {
      FUZZ_CHECK(id >= 0 && id < vocab && t.IdToToken(id).has_value(),
                 absl::StrCat("Encode gave id ", id, ", vocab_size ", vocab));
    }
    auto again = t.Encode(text);
    FUZZ_CHECK(again.ok() && *again == *ids, "a second Encode gave other ids");
    auto decoded = t.Decode(*ids);
    FUZZ_CHECK(decoded.ok(), decoded.status().ToString());
    FUZZ_CHECK(ValidUtf8(*decoded), "Decode gave invalid UTF-8");
  }
  FUZZ_CHECK(!t.Decode({-1}).ok(), "Decode(-1) succeeded");
  FUZZ_CHECK(!t.Decode({vocab}).ok(), "Decode(vocab_size) succeeded");
  return 0;
}

#include "common/tokenizer/char_tokenizer.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/json_limits.h"
#include "common/status.h"
#include "common/tokenizer/file_util.h"
#include "common/tokenizer/unicode.h"
#include "nlohmann/json.hpp"

namespace rhythm::common {
namespace {

using nlohmann::json;
using tokenizer_internal::DecodeUtf8At;

constexpr absl::string_view kType = "rhythm_char";
constexpr int kVersion = 1;
constexpr absl::string_view kSpecial[CharTokenizer::kNumSpecial] = {"<pad>", "<bos>", "<eos>",
                                                                    "<unk>"};
constexpr absl::string_view kUnkText = "\xEF\xBF\xBD";  // U+FFFD

// See the header: ids 4.. of the default alphabet. Append only; never reorder.
constexpr absl::string_view kDefaultAlphabet =
    "0123456789"
    "+-*/=(),.: \n"
    "abcdefghijklmnopqrstuvwxyz"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "!\"#$%&';<>?@[\\]^_`{|}~"
    "\t";

absl::Status FileError(absl::string_view source, absl::string_view field,
                       absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, ": ", problem));
}

// Splits `alphabet` into characters, checking the rules of Create. `what` prefixes errors.
absl::StatusOr<std::vector<std::string>> SplitAlphabet(absl::string_view alphabet) {
  RHYTHM_RETURN_IF_ERROR(tokenizer_internal::CheckUtf8(alphabet, "alphabet"));
  if (alphabet.empty()) return absl::InvalidArgumentError("alphabet is empty");
  std::vector<std::string> chars;
  absl::flat_hash_set<char32_t> seen;
  size_t pos = 0;
  while (pos < alphabet.size()) {
    int len;
    const char32_t cp = DecodeUtf8At(alphabet, pos, &len);
    std::string c(alphabet.substr(pos, len));
    if (cp == 0xFFFD) {
      return absl::InvalidArgumentError(absl::StrCat(
          "alphabet[", chars.size(), "] is U+FFFD, which is reserved for decoding <unk>"));
    }
    if (!seen.insert(cp).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("alphabet[%d] = U+%04X repeats an earlier character", chars.size(),
                          static_cast<uint32_t>(cp)));
    }
    chars.push_back(std::move(c));
    pos += len;
  }
  return chars;
}

}  // namespace

constexpr char CharTokenizer::kFileName[];

absl::string_view CharTokenizer::DefaultAlphabet() { return kDefaultAlphabet; }

std::unique_ptr<CharTokenizer> CharTokenizer::CreateDefault() {
  std::vector<std::string> chars;
  for (char c : kDefaultAlphabet) chars.emplace_back(1, c);
  return std::unique_ptr<CharTokenizer>(new CharTokenizer(std::move(chars)));
}

absl::StatusOr<std::unique_ptr<CharTokenizer>> CharTokenizer::Create(absl::string_view alphabet) {
  RHYTHM_ASSIGN_OR_RETURN(std::vector<std::string> chars, SplitAlphabet(alphabet));
  return std::unique_ptr<CharTokenizer>(new CharTokenizer(std::move(chars)));
}

CharTokenizer::CharTokenizer(std::vector<std::string> chars) : chars_(std::move(chars)) {
  ascii_ids_.fill(-1);
  for (size_t i = 0; i < chars_.size(); ++i) {
    const int32_t id = kNumSpecial + static_cast<int32_t>(i);
    int len;
    const char32_t cp = DecodeUtf8At(chars_[i], 0, &len);
    if (cp < 128) {
      ascii_ids_[cp] = id;
    } else {
      other_ids_[cp] = id;
    }
  }
}

absl::StatusOr<std::unique_ptr<CharTokenizer>> CharTokenizer::Load(const std::string& dir) {
  const std::string path = tokenizer_internal::JoinPath(dir, kFileName);
  RHYTHM_ASSIGN_OR_RETURN(std::string contents, tokenizer_internal::ReadFileToString(path));
  return FromJson(contents, path);
}

absl::StatusOr<std::unique_ptr<CharTokenizer>> CharTokenizer::FromJson(absl::string_view text,
                                                                       absl::string_view source) {
  bool too_deep = false;
  json doc = ParseJsonBounded(text, &too_deep);
  if (too_deep) {
    return FileError(source, "(document)",
                     absl::StrCat("nests deeper than ", kMaxJsonDepth, " levels"));
  }
  if (doc.is_discarded()) return FileError(source, "(document)", "not valid JSON");
  if (!doc.is_object()) return FileError(source, "(document)", "expected a JSON object");
  auto type = doc.find("type");
  if (type == doc.end()) return FileError(source, "type", "missing");
  if (!type->is_string() || type->get<std::string>() != kType) {
    return FileError(source, "type", absl::StrCat("expected \"", kType, "\", got ", type->dump()));
  }
  auto version = doc.find("version");
  if (version == doc.end()) return FileError(source, "version", "missing");
  if (!version->is_number_integer() || version->get<int64_t>() != kVersion) {
    return FileError(source, "version",
                     absl::StrCat("expected ", kVersion, ", got ", version->dump()));
  }
  auto special = doc.find("special_tokens");
  if (special == doc.end()) return FileError(source, "special_tokens", "missing");
  bool special_ok = special->is_array() && special->size() == kNumSpecial;
  for (int i = 0; special_ok && i < kNumSpecial; ++i) {
    special_ok = (*special)[i].is_string() && (*special)[i].get<std::string>() == kSpecial[i];
  }
  if (!special_ok) {
    return FileError(source, "special_tokens",
                     absl::StrCat("expected [\"<pad>\", \"<bos>\", \"<eos>\", \"<unk>\"], got ",
                                  special->dump()));
  }
  auto alphabet = doc.find("alphabet");
  if (alphabet == doc.end()) return FileError(source, "alphabet", "missing");
  if (!alphabet->is_array()) {
    return FileError(source, "alphabet", "expected an array of one-character strings");
  }
  std::string joined;
  for (size_t i = 0; i < alphabet->size(); ++i) {
    const json& entry = (*alphabet)[i];
    const std::string field = absl::StrCat("alphabet[", i, "]");
    if (!entry.is_string()) {
      return FileError(source, field, absl::StrCat("expected a string, got ", entry.dump()));
    }
    const std::string& c = entry.get_ref<const std::string&>();
    int len = 0;
    if (!c.empty()) DecodeUtf8At(c, 0, &len);
    if (c.empty() || static_cast<size_t>(len) != c.size()) {
      return FileError(source, field,
                       absl::StrCat("expected exactly one character, got ", entry.dump()));
    }
    joined += c;
  }
  auto chars = SplitAlphabet(joined);
  if (!chars.ok()) return FileError(source, "alphabet", chars.status().message());
  return std::unique_ptr<CharTokenizer>(new CharTokenizer(*std::move(chars)));
}

absl::StatusOr<std::vector<int32_t>> CharTokenizer::Encode(absl::string_view text) const {
  RHYTHM_RETURN_IF_ERROR(tokenizer_internal::CheckUtf8(text, "text"));
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const unsigned char b = static_cast<unsigned char>(text[pos]);
    if (b == '<') {
      int32_t special_id = -1;
      for (int32_t s = 0; s < kNumSpecial; ++s) {
        if (text.substr(pos, kSpecial[s].size()) == kSpecial[s]) {
          special_id = s;
          break;
        }
      }
      if (special_id >= 0) {
        ids.push_back(special_id);
        pos += kSpecial[special_id].size();
        continue;
      }
    }
    if (b < 0x80) {
      const int32_t id = ascii_ids_[b];
      ids.push_back(id >= 0 ? id : kUnkId);
      ++pos;
      continue;
    }
    int len;
    const char32_t cp = DecodeUtf8At(text, pos, &len);
    auto it = other_ids_.find(cp);
    ids.push_back(it != other_ids_.end() ? it->second : kUnkId);
    pos += len;
  }
  return ids;
}

absl::StatusOr<std::string> CharTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Decode: ids[", i, "] = ", id, " is out of range [0, ", vocab_size(), ")"));
    }
    if (id == kUnkId) {
      text.append(kUnkText.data(), kUnkText.size());
    } else if (id < kNumSpecial) {
      text.append(kSpecial[id].data(), kSpecial[id].size());
    } else {
      text += chars_[id - kNumSpecial];
    }
  }
  return text;
}

std::optional<int32_t> CharTokenizer::TokenId(absl::string_view token) const {
  for (int32_t s = 0; s < kNumSpecial; ++s) {
    if (token == kSpecial[s]) return s;
  }
  if (token.empty() ||
      tokenizer_internal::FindInvalidUtf8(token) != tokenizer_internal::kValidUtf8) {
    return std::nullopt;
  }
  int len;
  const char32_t cp = DecodeUtf8At(token, 0, &len);
  if (static_cast<size_t>(len) != token.size()) return std::nullopt;
  if (cp < 128) {
    if (ascii_ids_[cp] >= 0) return ascii_ids_[cp];
    return std::nullopt;
  }
  auto it = other_ids_.find(cp);
  if (it == other_ids_.end()) return std::nullopt;
  return it->second;
}

std::string CharTokenizer::ToJson() const {
  json doc = json::object();
  doc["type"] = kType;
  doc["version"] = kVersion;
  doc["special_tokens"] = json::array();
  for (absl::string_view s : kSpecial) doc["special_tokens"].push_back(std::string(s));
  doc["alphabet"] = chars_;
  return doc.dump(1) + "\n";
}

absl::Status CharTokenizer::Save(const std::string& dir) const {
  return tokenizer_internal::WriteFileAtomically(dir, kFileName, ToJson());
}

}  // namespace rhythm::common

#include "common/tokenizer/hf_bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <limits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/json_limits.h"
#include "common/status.h"
#include "common/tokenizer/file_util.h"
#include "common/tokenizer/unicode.h"
#include "nlohmann/json.hpp"

namespace rhythm::common {
namespace {

using nlohmann::json;
namespace ti = tokenizer_internal;

// The pattern HF's ByteLevel pre-tokenizer applies when use_regex is true (GPT-2's).
constexpr absl::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Words longer than this are not cached (they rarely repeat; HF uses the same bound).
constexpr size_t kMaxCachedWordBytes = 256;

// ---------------------------------------------------------------------------------------------
// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes are
// shifted to U+0100.. in byte order, so every byte is one visible character.

struct ByteLevelTable {
  std::array<std::string, 256> byte_to_utf8;
  absl::flat_hash_map<char32_t, uint8_t> char_to_byte;

  ByteLevelTable() {
    int shifted = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t cp = printable ? static_cast<char32_t>(b) : 256 + shifted++;
      ti::AppendUtf8(cp, &byte_to_utf8[b]);
      char_to_byte[cp] = static_cast<uint8_t>(b);
    }
  }
};

const ByteLevelTable& ByteLevel() {
  static const ByteLevelTable* table = new ByteLevelTable();
  return *table;
}

std::string ByteLevelEncode(absl::string_view bytes) {
  const ByteLevelTable& t = ByteLevel();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += t.byte_to_utf8[static_cast<uint8_t>(c)];
  return out;
}

// HF's ByteLevel decoder, one token: its characters as bytes if all are byte-level characters,
// otherwise the token's own UTF-8.
std::string ByteLevelDecodeToken(absl::string_view token) {
  const ByteLevelTable& t = ByteLevel();
  std::string out;
  out.reserve(token.size());
  if (ti::FindInvalidUtf8(token) != ti::kValidUtf8) return std::string(token);
  size_t pos = 0;
  while (pos < token.size()) {
    int len;
    const char32_t cp = ti::DecodeUtf8At(token, pos, &len);
    auto it = t.char_to_byte.find(cp);
    if (it == t.char_to_byte.end()) return std::string(token);
    out.push_back(static_cast<char>(it->second));
    pos += len;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// PCRE2 handles.

struct CodeDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};
using CodePtr = std::unique_ptr<pcre2_code, CodeDeleter>;
using MatchDataPtr = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

std::string Pcre2Message(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  if (n < 0) return absl::StrCat("PCRE2 error ", code);
  return std::string(reinterpret_cast<const char*>(buffer), n);
}

// Oniguruma (HF) -> PCRE2: \s and \S become Unicode White_Space, which is what Oniguruma means
// by them (PCRE2's UCP \s also matches U+180E). Everything else is passed through: the
// constructs HF tokenizer files use ((?i:..), \p{..}, (?!..), classes) mean the same in both.
std::string TranslateRegex(absl::string_view p) {
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char n = p[++i];
      if (n == 's') {
        out += "\\p{White_Space}";
      } else if (n == 'S') {
        out += "\\P{White_Space}";
      } else {
        out += c;
        out += n;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a leading ] is literal
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // [:alpha:]
      const size_t end = p.find(":]", i + 2);
      if (end != absl::string_view::npos) {
        out.append(p.data() + i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Errors.

class FileError {
 public:
  explicit FileError(std::string source) : source_(std::move(source)) {}
  absl::Status operator()(absl::string_view field, absl::string_view problem) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", field, ": ", problem));
  }
  const std::string& source() const { return source_; }

 private:
  std::string source_;
};

std::string Quote(absl::string_view s) { return json(std::string(s)).dump(); }

absl::StatusOr<bool> OptionalBool(const json& obj, const char* key, bool default_value,
                                  const FileError& err, const std::string& field) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return default_value;
  if (!it->is_boolean()) {
    return err(absl::StrCat(field, ".", key),
               absl::StrCat("expected true or false, got ", it->dump()));
  }
  return it->get<bool>();
}

// The "type" of a component object, or an error naming `field`.
absl::StatusOr<std::string> TypeOf(const json& obj, const FileError& err,
                                   const std::string& field) {
  if (!obj.is_object()) return err(field, absl::StrCat("expected an object, got ", obj.dump()));
  auto it = obj.find("type");
  if (it == obj.end()) return err(absl::StrCat(field, ".type"), "missing");
  if (!it->is_string()) {
    return err(absl::StrCat(field, ".type"), absl::StrCat("expected a string, got ", it->dump()));
  }
  return it->get<std::string>();
}

// ---------------------------------------------------------------------------------------------
// Added tokens.

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// Leftmost-longest matching over a set of added tokens, like HF's Aho-Corasick automaton with
// MatchKind::LeftmostLongest. Files have tens to a few hundred added tokens that share few first
// bytes, so candidates are bucketed by first byte and tried longest first.
class AddedMatcher {
 public:
  void Add(int index, const AddedToken& token) {
    auto& bucket = by_first_byte_[static_cast<uint8_t>(token.content[0])];
    bucket.push_back({index, token.content});
    std::stable_sort(bucket.begin(), bucket.end(), [](const Entry& a, const Entry& b) {
      return a.content.size() > b.content.size();
    });
    empty_ = false;
  }
  bool empty() const { return empty_; }

  // Finds the leftmost (then longest) token occurring at or after `from`.
  bool Find(absl::string_view text, size_t from, size_t* start, int* index) const {
    for (size_t p = from; p < text.size(); ++p) {
      const auto& bucket = by_first_byte_[static_cast<uint8_t>(text[p])];
      for (const Entry& e : bucket) {
        if (text.size() - p >= e.content.size() &&
            text.compare(p, e.content.size(), e.content) == 0) {
          *start = p;
          *index = e.index;
          return true;
        }
      }
    }
    return false;
  }

 private:
  struct Entry {
    int index;
    std::string content;
  };
  std::array<std::vector<Entry>, 256> by_first_byte_;
  bool empty_ = true;
};

bool EndsWithWordChar(absl::string_view s) {
  if (s.empty()) return false;
  size_t pos = s.size() - 1;
  while (pos > 0 && (static_cast<uint8_t>(s[pos]) & 0xC0) == 0x80) --pos;
  int len;
  return ti::IsWordChar(ti::DecodeUtf8At(s, pos, &len));
}

bool StartsWithWordChar(absl::string_view s) {
  if (s.empty()) return false;
  int len;
  return ti::IsWordChar(ti::DecodeUtf8At(s, 0, &len));
}

// Byte length of the whitespace that `s` starts with.
size_t LeadingWhiteSpace(absl::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    int len;
    if (!ti::IsWhiteSpace(ti::DecodeUtf8At(s, pos, &len))) break;
    pos += len;
  }
  return pos;
}

// Offset just past the last non-whitespace character of `s`, or 0.
size_t EndOfLastNonWhiteSpace(absl::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t pos = end - 1;
    while (pos > 0 && (static_cast<uint8_t>(s[pos]) & 0xC0) == 0x80) --pos;
    int len;
    if (!ti::IsWhiteSpace(ti::DecodeUtf8At(s, pos, &len))) return end;
    end = pos;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// The per-word merge cache.

class WordCache {
 public:
  bool Lookup(absl::string_view word, std::vector<int32_t>* out) const {
    const Shard& shard = shards_[ShardOf(word)];
    absl::ReaderMutexLock lock(&shard.mu);
    auto it = shard.map.find(word);
    if (it == shard.map.end()) return false;
    out->insert(out->end(), it->second.begin(), it->second.end());
    return true;
  }

  // Like HF's cache, stops growing when full rather than evicting.
  void Insert(absl::string_view word, const int32_t* ids, size_t n) const {
    Shard& shard = shards_[ShardOf(word)];
    absl::MutexLock lock(&shard.mu);
    if (shard.map.size() >= kMaxEntriesPerShard) return;
    shard.map.try_emplace(word, ids, ids + n);
  }

 private:
  static constexpr size_t kShards = 16;
  static constexpr size_t kMaxEntriesPerShard = 8192;
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> map ABSL_GUARDED_BY(mu);
  };
  static size_t ShardOf(absl::string_view word) {
    return absl::Hash<absl::string_view>()(word) % kShards;
  }
  mutable std::array<Shard, kShards> shards_;
};

struct Merge {
  int32_t rank;
  int32_t new_id;
};

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct SplitStep {
  std::string field;    // where it came from, for error messages
  std::string pattern;  // as compiled
  CodePtr code;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

struct HfBpeTokenizer::Model {
  HfTokenizerFiles files;

  bool nfc = false;
  std::vector<SplitStep> splits;

  absl::flat_hash_map<std::string, int32_t> vocab;  // model.vocab, byte-level spelling
  absl::flat_hash_map<uint64_t, Merge> merges;      // (left id, right id) -> rank, merged id
  std::array<int32_t, 256> byte_ids;                // id of each byte's symbol, or -1
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool ignore_merges = false;

  std::vector<AddedToken> added;
  absl::flat_hash_map<std::string, int32_t> added_ids;
  AddedMatcher raw_matcher;         // added tokens with normalized=false
  AddedMatcher normalized_matcher;  // added tokens with normalized=true

  int32_t vocab_size = 0;
  std::vector<std::string> id_tokens;  // "" where no token has the id
  std::vector<std::string> id_bytes;   // what each id decodes to, before UTF-8 repair
  std::vector<uint8_t> id_flags;       // kExists | kSpecial
  static constexpr uint8_t kExists = 1, kSpecial = 2;

  int32_t eos = -1;
  int32_t pad = -1;

  WordCache cache;

  std::optional<int32_t> Lookup(absl::string_view token) const {
    if (auto it = added_ids.find(token); it != added_ids.end()) return it->second;
    if (auto it = vocab.find(token); it != vocab.end()) return it->second;
    return std::nullopt;
  }

  // Appends the ids of a normalized piece that holds no added token.
  absl::Status PreTokenizeAndMerge(absl::string_view piece, size_t step,
                                   std::vector<MatchDataPtr>& match_data,
                                   std::vector<int32_t>* ids) const;
  void MergeWord(absl::string_view word, std::vector<int32_t>* ids) const;
  void Bpe(absl::string_view word, std::vector<int32_t>* ids) const;
};

namespace {

// Splits `s` around the added tokens `matcher` finds, exactly as HF's
// AddedVocabulary::find_matches: tokens are appended to `ids`, the text between them is passed
// to `on_text` (in order, non-empty pieces only).
template <typename OnText>
absl::Status SplitOnAddedTokens(const AddedMatcher& matcher, const std::vector<AddedToken>& added,
                                absl::string_view s, std::vector<int32_t>* ids, OnText&& on_text) {
  if (matcher.empty()) return s.empty() ? absl::OkStatus() : on_text(s);
  size_t start_offset = 0;
  size_t search = 0;
  size_t match_start;
  int index;
  while (search < s.size() && matcher.Find(s, search, &match_start, &index)) {
    const AddedToken& token = added[index];
    size_t start = match_start;
    size_t stop = match_start + token.content.size();
    search = stop;  // the automaton resumes after the match, used or not
    if (token.single_word) {
      const bool start_space = start == 0 || !EndsWithWordChar(s.substr(0, start));
      const bool stop_space = stop == s.size() || !StartsWithWordChar(s.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) {
      start = std::max(EndOfLastNonWhiteSpace(s.substr(0, start)), start_offset);
    }
    if (token.rstrip) stop += LeadingWhiteSpace(s.substr(stop));
    if (start_offset < start) {
      RHYTHM_RETURN_IF_ERROR(on_text(s.substr(start_offset, start - start_offset)));
    }
    ids->push_back(token.id);
    start_offset = stop;
  }
  if (start_offset < s.size()) RHYTHM_RETURN_IF_ERROR(on_text(s.substr(start_offset)));
  return absl::OkStatus();
}

}  // namespace

absl::Status HfBpeTokenizer::Model::PreTokenizeAndMerge(absl::string_view piece, size_t step,
                                                        std::vector<MatchDataPtr>& match_data,
                                                        std::vector<int32_t>* ids) const {
  if (piece.empty()) return absl::OkStatus();
  if (step == splits.size()) {
    Bpe(piece, ids);
    return absl::OkStatus();
  }
  const pcre2_code* code = splits[step].code.get();
  pcre2_match_data* md = match_data[step].get();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
  size_t prev = 0;
  size_t offset = 0;
  while (offset <= piece.size()) {
    const int rc =
        pcre2_match(code, subject, piece.size(), offset, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return absl::InternalError(
          absl::StrCat(splits[step].field, ": regex match failed: ", Pcre2Message(rc)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(md);
    const size_t start = ovector[0];
    const size_t end = ovector[1];
    if (prev < start) {
      RHYTHM_RETURN_IF_ERROR(
          PreTokenizeAndMerge(piece.substr(prev, start - prev), step + 1, match_data, ids));
    }
    RHYTHM_RETURN_IF_ERROR(
        PreTokenizeAndMerge(piece.substr(start, end - start), step + 1, match_data, ids));
    prev = end;
    if (end > start) {
      offset = end;
    } else {  // an empty match splits here; search again one character on (Oniguruma's rule)
      if (end >= piece.size()) break;
      int len;
      ti::DecodeUtf8At(piece, end, &len);
      offset = end + len;
    }
  }
  if (prev < piece.size()) {
    RHYTHM_RETURN_IF_ERROR(PreTokenizeAndMerge(piece.substr(prev), step + 1, match_data, ids));
  }
  return absl::OkStatus();
}

void HfBpeTokenizer::Model::Bpe(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.size() == 1) {
    const int32_t id = byte_ids[static_cast<uint8_t>(word[0])];
    if (id >= 0) {
      ids->push_back(id);
    } else if (unk_id >= 0) {
      ids->push_back(unk_id);
    }
    return;
  }
  if (ignore_merges) {
    auto it = vocab.find(ByteLevelEncode(word));
    if (it != vocab.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable && cache.Lookup(word, ids)) return;
  const size_t first = ids->size();
  MergeWord(word, ids);
  if (cacheable) cache.Insert(word, ids->data() + first, ids->size() - first);
}

// HF's Word::merge_all: repeatedly merge the adjacent pair of lowest rank (leftmost first),
// with a heap of candidate pairs whose stale entries are skipped when popped.
void HfBpeTokenizer::Model::MergeWord(absl::string_view word, std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    int32_t len;  // bytes; 0 once merged into the symbol on its left
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&symbols](int32_t id, int32_t len) {
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1, len});
    if (index > 0) symbols[index - 1].next = index;
  };
  int32_t pending_unk_len = 0;  // HF's handling of characters missing from the vocab
  for (char c : word) {
    const int32_t id = byte_ids[static_cast<uint8_t>(c)];
    if (id >= 0) {
      if (pending_unk_len > 0) add(unk_id, pending_unk_len);
      pending_unk_len = 0;
      add(id, 1);
    } else if (unk_id >= 0) {
      if (pending_unk_len > 0 && !fuse_unk) {
        add(unk_id, pending_unk_len);
        pending_unk_len = 0;
      }
      ++pending_unk_len;
    }
  }
  if (pending_unk_len > 0) add(unk_id, pending_unk_len);
  if (symbols.empty()) return;

  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
  };
  // std::push_heap builds a max-heap: "less" means merged later (higher rank, then further
  // right).
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::vector<Candidate> heap;
  heap.reserve(symbols.size());
  auto find = [this](int32_t a, int32_t b) -> const Merge* {
    auto it = merges.find(PairKey(a, b));
    return it == merges.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const Merge* m = find(symbols[i].id, symbols[i + 1].id)) {
      heap.push_back({m->rank, static_cast<int32_t>(i), m->new_id});
    }
  }
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& current = symbols[top.pos];
    if (current.len == 0 || current.next < 0) continue;
    const int32_t next_pos = current.next;
    const Symbol right = symbols[next_pos];
    const Merge* m = find(current.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // stale entry
    current.id = top.new_id;
    current.len += right.len;
    current.next = right.next;
    symbols[next_pos].len = 0;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (current.prev >= 0) {
      if (const Merge* left = find(symbols[current.prev].id, current.id)) {
        heap.push_back({left->rank, current.prev, left->new_id});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
    if (current.next >= 0) {
      if (const Merge* next = find(current.id, symbols[current.next].id)) {
        heap.push_back({next->rank, top.pos, next->new_id});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

// ---------------------------------------------------------------------------------------------
// Loading.

namespace {

absl::Status ParseModel(const json& doc, const FileError& err, HfBpeTokenizer::Model* m) {
  auto model_it = doc.find("model");
  if (model_it == doc.end() || model_it->is_null()) return err("model", "missing");
  const json& model = *model_it;
  if (!model.is_object()) return err("model", absl::StrCat("expected an object"));
  if (auto type = model.find("type"); type != model.end()) {
    if (!type->is_string() || type->get<std::string>() != "BPE") {
      return err("model.type", absl::StrCat(type->dump(), " is not supported (only \"BPE\")"));
    }
  }
  if (auto dropout = model.find("dropout"); dropout != model.end() && !dropout->is_null()) {
    if (!dropout->is_number() || dropout->get<double>() != 0.0) {
      return err("model.dropout", absl::StrCat(dropout->dump(), " is not supported (only null)"));
    }
  }
  RHYTHM_ASSIGN_OR_RETURN(const bool byte_fallback,
                          OptionalBool(model, "byte_fallback", false, err, "model"));
  if (byte_fallback) return err("model.byte_fallback", "true is not supported (only false)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() &&
        !(it->is_string() && it->get<std::string>().empty())) {
      return err(absl::StrCat("model.", key),
                 absl::StrCat(it->dump(), " is not supported (only null or \"\")"));
    }
  }
  RHYTHM_ASSIGN_OR_RETURN(m->fuse_unk, OptionalBool(model, "fuse_unk", false, err, "model"));
  RHYTHM_ASSIGN_OR_RETURN(m->ignore_merges,
                          OptionalBool(model, "ignore_merges", false, err, "model"));

  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end()) return err("model.vocab", "missing");
  if (!vocab_it->is_object()) {
    return err("model.vocab", "expected an object of token -> id");
  }
  m->vocab.reserve(vocab_it->size());
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    const json& v = it.value();
    if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
        v.get<int64_t>() >= std::numeric_limits<int32_t>::max()) {
      return err(absl::StrCat("model.vocab[", Quote(it.key()), "]"),
                 absl::StrCat("expected an id in [0, 2^31 - 1), got ", v.dump()));
    }
    m->vocab.emplace(it.key(), static_cast<int32_t>(v.get<int64_t>()));
  }

  if (auto unk = model.find("unk_token"); unk != model.end() && !unk->is_null()) {
    if (!unk->is_string()) return err("model.unk_token", "expected a string or null");
    auto id = m->vocab.find(unk->get<std::string>());
    if (id == m->vocab.end()) {
      return err("model.unk_token", absl::StrCat(unk->dump(), " is not in model.vocab"));
    }
    m->unk_id = id->second;
  }

  auto merges_it = model.find("merges");
  if (merges_it == model.end()) return err("model.merges", "missing");
  if (!merges_it->is_array()) {
    return err("model.merges", "expected an array of \"a b\" strings or [\"a\", \"b\"] pairs");
  }
  m->merges.reserve(merges_it->size());
  std::string left, right;
  for (size_t i = 0; i < merges_it->size(); ++i) {
    const json& entry = (*merges_it)[i];
    const std::string field = absl::StrCat("model.merges[", i, "]");
    if (entry.is_string()) {  // "a b", split at the first space like HF's splitn(2, ' ')
      const std::string& s = entry.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos) {
        return err(field, absl::StrCat(entry.dump(), ": expected two tokens separated by a space"));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {
      left = entry[0].get<std::string>();
      right = entry[1].get<std::string>();
    } else {
      return err(field, absl::StrCat("expected \"a b\" or [\"a\", \"b\"], got ", entry.dump()));
    }
    auto a = m->vocab.find(left);
    if (a == m->vocab.end()) {
      return err(field, absl::StrCat(entry.dump(), ": ", Quote(left), " is not in model.vocab"));
    }
    auto b = m->vocab.find(right);
    if (b == m->vocab.end()) {
      return err(field, absl::StrCat(entry.dump(), ": ", Quote(right), " is not in model.vocab"));
    }
    auto merged = m->vocab.find(left + right);
    if (merged == m->vocab.end()) {
      return err(field, absl::StrCat(entry.dump(), ": the merged token ", Quote(left + right),
                                     " is not in model.vocab"));
    }
    // A repeated pair keeps its last rank, as in HF (which collects into a hash map).
    m->merges.insert_or_assign(PairKey(a->second, b->second),
                               Merge{static_cast<int32_t>(i), merged->second});
  }
  return absl::OkStatus();
}

absl::Status ParseAddedTokens(const json& doc, const FileError& err, HfBpeTokenizer::Model* m) {
  auto it = doc.find("added_tokens");
  if (it == doc.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return err("added_tokens", "expected an array");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& t = (*it)[i];
    const std::string field = absl::StrCat("added_tokens[", i, "]");
    if (!t.is_object()) return err(field, "expected an object");
    AddedToken token;
    auto id = t.find("id");
    if (id == t.end() || !id->is_number_integer() || id->get<int64_t>() < 0 ||
        id->get<int64_t>() >= std::numeric_limits<int32_t>::max()) {
      return err(absl::StrCat(field, ".id"), "expected an id in [0, 2^31 - 1)");
    }
    token.id = static_cast<int32_t>(id->get<int64_t>());
    auto content = t.find("content");
    if (content == t.end() || !content->is_string() || content->get<std::string>().empty()) {
      return err(absl::StrCat(field, ".content"), "expected a non-empty string");
    }
    token.content = content->get<std::string>();
    if (ti::FindInvalidUtf8(token.content) != ti::kValidUtf8) {
      return err(absl::StrCat(field, ".content"), "not valid UTF-8");
    }
    RHYTHM_ASSIGN_OR_RETURN(token.special, OptionalBool(t, "special", false, err, field));
    RHYTHM_ASSIGN_OR_RETURN(token.single_word, OptionalBool(t, "single_word", false, err, field));
    RHYTHM_ASSIGN_OR_RETURN(token.lstrip, OptionalBool(t, "lstrip", false, err, field));
    RHYTHM_ASSIGN_OR_RETURN(token.rstrip, OptionalBool(t, "rstrip", false, err, field));
    RHYTHM_ASSIGN_OR_RETURN(token.normalized,
                            OptionalBool(t, "normalized", !token.special, err, field));
    if (m->added_ids.contains(token.content)) {
      return err(absl::StrCat(field, ".content"),
                 absl::StrCat(Quote(token.content), " is listed twice"));
    }
    m->added_ids.emplace(token.content, token.id);
    m->added.push_back(std::move(token));
  }
  for (size_t i = 0; i < m->added.size(); ++i) {
    (m->added[i].normalized ? m->normalized_matcher : m->raw_matcher)
        .Add(static_cast<int>(i), m->added[i]);
  }
  return absl::OkStatus();
}

absl::Status ParseNormalizer(const json& doc, const FileError& err, HfBpeTokenizer::Model* m) {
  auto it = doc.find("normalizer");
  if (it == doc.end() || it->is_null()) return absl::OkStatus();
  RHYTHM_ASSIGN_OR_RETURN(const std::string type, TypeOf(*it, err, "normalizer"));
  if (type == "NFC") {
    m->nfc = true;
    return absl::OkStatus();
  }
  if (type == "Sequence") {
    auto list = it->find("normalizers");
    if (list == it->end() || !list->is_array()) {
      return err("normalizer.normalizers", "expected an array");
    }
    for (size_t i = 0; i < list->size(); ++i) {
      const std::string field = absl::StrCat("normalizer.normalizers[", i, "]");
      RHYTHM_ASSIGN_OR_RETURN(const std::string sub, TypeOf((*list)[i], err, field));
      if (sub != "NFC") {
        return err(absl::StrCat(field, ".type"),
                   absl::StrCat(Quote(sub), " is not supported (only NFC)"));
      }
      m->nfc = true;
    }
    return absl::OkStatus();
  }
  return err("normalizer.type",
             absl::StrCat(Quote(type), " is not supported (only NFC or a Sequence of NFC)"));
}

absl::Status AddSplit(const FileError& err, const std::string& field, absl::string_view pattern,
                      bool literal, HfBpeTokenizer::Model* m) {
  SplitStep step;
  step.field = field;
  step.pattern = literal ? std::string(pattern) : TranslateRegex(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  const uint32_t options = literal ? (PCRE2_UTF | PCRE2_LITERAL) : (PCRE2_UTF | PCRE2_UCP);
  step.code.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(step.pattern.data()),
                                step.pattern.size(), options, &error_code, &error_offset, nullptr));
  if (step.code == nullptr) {
    return err(field, absl::StrCat("PCRE2 cannot compile ", Quote(step.pattern), " at offset ",
                                   error_offset, ": ", Pcre2Message(error_code)));
  }
  // JIT is a speed-up only; the interpreter gives the same matches if it is unavailable.
  pcre2_jit_compile(step.code.get(), PCRE2_JIT_COMPLETE);
  m->splits.push_back(std::move(step));
  return absl::OkStatus();
}

absl::Status ParsePreTokenizer(const json& p, const FileError& err, const std::string& field,
                               bool* byte_level_seen, HfBpeTokenizer::Model* m) {
  RHYTHM_ASSIGN_OR_RETURN(const std::string type, TypeOf(p, err, field));
  if (type == "Sequence") {
    auto list = p.find("pretokenizers");
    if (list == p.end() || !list->is_array()) {
      return err(absl::StrCat(field, ".pretokenizers"), "expected an array");
    }
    for (size_t i = 0; i < list->size(); ++i) {
      RHYTHM_RETURN_IF_ERROR(ParsePreTokenizer(
          (*list)[i], err, absl::StrCat(field, ".pretokenizers[", i, "]"), byte_level_seen, m));
    }
    return absl::OkStatus();
  }
  if (*byte_level_seen) {
    return err(field, absl::StrCat(Quote(type), " after ByteLevel is not supported"));
  }
  if (type == "Split") {
    auto behavior = p.find("behavior");
    if (behavior == p.end() || !behavior->is_string() ||
        behavior->get<std::string>() != "Isolated") {
      return err(absl::StrCat(field, ".behavior"),
                 absl::StrCat(behavior == p.end() ? "missing" : behavior->dump(),
                              " is not supported (only \"Isolated\")"));
    }
    RHYTHM_ASSIGN_OR_RETURN(const bool invert, OptionalBool(p, "invert", false, err, field));
    if (invert) return err(absl::StrCat(field, ".invert"), "true is not supported");
    auto pattern = p.find("pattern");
    if (pattern == p.end() || !pattern->is_object()) {
      return err(absl::StrCat(field, ".pattern"), "expected {\"Regex\": ...} or {\"String\": ...}");
    }
    if (auto regex = pattern->find("Regex"); regex != pattern->end() && regex->is_string()) {
      return AddSplit(err, absl::StrCat(field, ".pattern.Regex"),
                      regex->get_ref<const std::string&>(), /*literal=*/false, m);
    }
    if (auto literal = pattern->find("String");
        literal != pattern->end() && literal->is_string() && !literal->get<std::string>().empty()) {
      return AddSplit(err, absl::StrCat(field, ".pattern.String"),
                      literal->get_ref<const std::string&>(), /*literal=*/true, m);
    }
    return err(absl::StrCat(field, ".pattern"),
               absl::StrCat("expected {\"Regex\": \"...\"} or {\"String\": \"...\"}, got ",
                            pattern->dump()));
  }
  if (type == "ByteLevel") {
    RHYTHM_ASSIGN_OR_RETURN(const bool prefix,
                            OptionalBool(p, "add_prefix_space", true, err, field));
    if (prefix) {
      return err(absl::StrCat(field, ".add_prefix_space"),
                 "true (or missing) is not supported (only false)");
    }
    RHYTHM_ASSIGN_OR_RETURN(const bool use_regex, OptionalBool(p, "use_regex", true, err, field));
    if (use_regex) {
      RHYTHM_RETURN_IF_ERROR(AddSplit(err, absl::StrCat(field, " (GPT-2 regex)"), kGpt2Pattern,
                                      /*literal=*/false, m));
    }
    *byte_level_seen = true;
    return absl::OkStatus();
  }
  return err(absl::StrCat(field, ".type"),
             absl::StrCat(Quote(type), " is not supported (only Split, ByteLevel, Sequence)"));
}

absl::Status ParseDecoder(const json& doc, const FileError& err) {
  auto it = doc.find("decoder");
  if (it == doc.end() || it->is_null()) {
    return err("decoder", "missing (only ByteLevel is supported)");
  }
  RHYTHM_ASSIGN_OR_RETURN(const std::string type, TypeOf(*it, err, "decoder"));
  if (type != "ByteLevel") {
    return err("decoder.type", absl::StrCat(Quote(type), " is not supported (only ByteLevel)"));
  }
  return absl::OkStatus();
}

// The token named by a tokenizer_config.json entry ("<|im_end|>" or {"content": "<|im_end|>"}),
// std::nullopt when absent or null.
absl::StatusOr<std::optional<std::string>> ConfigToken(const json& config, const char* key,
                                                       const FileError& err) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  return err(key, absl::StrCat("expected a string or {\"content\": ...}, got ", it->dump()));
}

absl::Status ResolveEosPad(const HfTokenizerFiles& files, const FileError& tokenizer_err,
                           HfBpeTokenizer::Model* m) {
  std::optional<std::string> eos, pad;
  const FileError err(files.config_json_source);
  if (files.config_json.has_value()) {
    bool too_deep = false;
    json config = ParseJsonBounded(*files.config_json, &too_deep);
    if (too_deep) {
      return err("(document)", absl::StrCat("nests deeper than ", kMaxJsonDepth, " levels"));
    }
    if (config.is_discarded()) return err("(document)", "not valid JSON");
    if (!config.is_object()) return err("(document)", "expected a JSON object");
    RHYTHM_ASSIGN_OR_RETURN(eos, ConfigToken(config, "eos_token", err));
    RHYTHM_ASSIGN_OR_RETURN(pad, ConfigToken(config, "pad_token", err));
  }
  if (eos.has_value()) {
    auto id = m->Lookup(*eos);
    if (!id) return err("eos_token", absl::StrCat(Quote(*eos), " is not a token"));
    m->eos = *id;
  } else {
    for (const char* candidate : {"<|endoftext|>", "<|end_of_text|>", "</s>"}) {
      if (auto id = m->Lookup(candidate)) {
        m->eos = *id;
        break;
      }
    }
    if (m->eos < 0) {
      return tokenizer_err("(eos)",
                           "no tokenizer_config.json eos_token, and none of <|endoftext|>, "
                           "<|end_of_text|>, </s> is a token");
    }
  }
  if (pad.has_value()) {
    auto id = m->Lookup(*pad);
    if (!id) return err("pad_token", absl::StrCat(Quote(*pad), " is not a token"));
    m->pad = *id;
  } else {
    m->pad = m->eos;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> HfBpeTokenizer::Load(const std::string& dir) {
  HfTokenizerFiles files;
  files.tokenizer_json_source = ti::JoinPath(dir, kFileName);
  RHYTHM_ASSIGN_OR_RETURN(files.tokenizer_json, ti::ReadFileToString(files.tokenizer_json_source));
  files.config_json_source = ti::JoinPath(dir, kConfigFileName);
  if (ti::FileExists(files.config_json_source)) {
    RHYTHM_ASSIGN_OR_RETURN(files.config_json, ti::ReadFileToString(files.config_json_source));
  }
  files.chat_template_jinja_source = ti::JoinPath(dir, kChatTemplateFileName);
  if (ti::FileExists(files.chat_template_jinja_source)) {
    RHYTHM_ASSIGN_OR_RETURN(files.chat_template_jinja,
                            ti::ReadFileToString(files.chat_template_jinja_source));
  }
  return FromFiles(std::move(files));
}

absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> HfBpeTokenizer::FromFiles(HfTokenizerFiles files) {
  auto m = std::make_unique<Model>();
  const FileError err(files.tokenizer_json_source);
  {
    bool too_deep = false;
    const json doc = ParseJsonBounded(files.tokenizer_json, &too_deep);
    if (too_deep) {
      return err("(document)", absl::StrCat("nests deeper than ", kMaxJsonDepth, " levels"));
    }
    if (doc.is_discarded()) return err("(document)", "not valid JSON");
    if (!doc.is_object()) return err("(document)", "expected a JSON object");
    RHYTHM_RETURN_IF_ERROR(ParseModel(doc, err, m.get()));
    RHYTHM_RETURN_IF_ERROR(ParseAddedTokens(doc, err, m.get()));
    RHYTHM_RETURN_IF_ERROR(ParseNormalizer(doc, err, m.get()));
    auto pre = doc.find("pre_tokenizer");
    bool byte_level = false;
    if (pre != doc.end() && !pre->is_null()) {
      RHYTHM_RETURN_IF_ERROR(ParsePreTokenizer(*pre, err, "pre_tokenizer", &byte_level, m.get()));
    }
    if (!byte_level) {
      return err("pre_tokenizer", "has no ByteLevel step (only byte-level BPE is supported)");
    }
    RHYTHM_RETURN_IF_ERROR(ParseDecoder(doc, err));
  }

  const ByteLevelTable& table = ByteLevel();
  for (int b = 0; b < 256; ++b) {
    auto it = m->vocab.find(table.byte_to_utf8[b]);
    m->byte_ids[b] = it == m->vocab.end() ? -1 : it->second;
  }

  int32_t max_id = -1;
  for (const auto& [token, id] : m->vocab) max_id = std::max(max_id, id);
  for (const AddedToken& t : m->added) max_id = std::max(max_id, t.id);
  if (max_id < 0) return err("model.vocab", "is empty");
  m->vocab_size = max_id + 1;
  m->id_tokens.assign(m->vocab_size, std::string());
  m->id_flags.assign(m->vocab_size, 0);
  for (const auto& [token, id] : m->vocab) {
    if (m->id_flags[id] & Model::kExists) {
      return err("model.vocab", absl::StrCat("id ", id, " is given to both ",
                                             Quote(m->id_tokens[id]), " and ", Quote(token)));
    }
    m->id_tokens[id] = token;
    m->id_flags[id] = Model::kExists;
  }
  for (const AddedToken& t : m->added) {  // an added token wins over a vocab entry with its id
    m->id_tokens[t.id] = t.content;
    m->id_flags[t.id] = Model::kExists | (t.special ? Model::kSpecial : 0);
  }
  m->id_bytes.resize(m->vocab_size);
  for (int32_t id = 0; id < m->vocab_size; ++id) {
    m->id_bytes[id] = ByteLevelDecodeToken(m->id_tokens[id]);
  }

  RHYTHM_RETURN_IF_ERROR(ResolveEosPad(files, err, m.get()));
  m->files = std::move(files);
  return std::unique_ptr<HfBpeTokenizer>(new HfBpeTokenizer(std::move(m)));
}

HfBpeTokenizer::HfBpeTokenizer(std::unique_ptr<Model> model) : model_(std::move(model)) {}
HfBpeTokenizer::~HfBpeTokenizer() = default;

constexpr char HfBpeTokenizer::kFileName[];
constexpr char HfBpeTokenizer::kConfigFileName[];
constexpr char HfBpeTokenizer::kChatTemplateFileName[];

// ---------------------------------------------------------------------------------------------
// Encoding and decoding.

absl::StatusOr<std::vector<int32_t>> HfBpeTokenizer::Encode(absl::string_view text) const {
  RHYTHM_RETURN_IF_ERROR(ti::CheckUtf8(text, "text"));
  const Model& m = *model_;
  std::vector<MatchDataPtr> match_data;
  match_data.reserve(m.splits.size());
  for (const SplitStep& step : m.splits) {
    match_data.emplace_back(pcre2_match_data_create_from_pattern(step.code.get(), nullptr));
    if (match_data.back() == nullptr) return absl::InternalError("PCRE2: out of memory");
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  auto pre_tokenize = [&](absl::string_view piece) {
    return m.PreTokenizeAndMerge(piece, 0, match_data, &ids);
  };
  auto normalize_and_split = [&](absl::string_view raw) -> absl::Status {
    if (!m.nfc) return SplitOnAddedTokens(m.normalized_matcher, m.added, raw, &ids, pre_tokenize);
    RHYTHM_ASSIGN_OR_RETURN(const std::string normalized, ti::NfcNormalize(raw));
    return SplitOnAddedTokens(m.normalized_matcher, m.added, normalized, &ids, pre_tokenize);
  };
  RHYTHM_RETURN_IF_ERROR(
      SplitOnAddedTokens(m.raw_matcher, m.added, text, &ids, normalize_and_split));
  return ids;
}

absl::StatusOr<std::string> HfBpeTokenizer::Decode(const std::vector<int32_t>& ids) const {
  const Model& m = *model_;
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= m.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("Decode: ids[", i, "] = ", id, " is out of range [0, ", m.vocab_size, ")"));
    }
    bytes += m.id_bytes[id];  // "" for an id no token has, which HF skips too
  }
  if (ti::FindInvalidUtf8(bytes) == ti::kValidUtf8) return bytes;
  return ti::Utf8Lossy(bytes);
}

int32_t HfBpeTokenizer::vocab_size() const { return model_->vocab_size; }
int32_t HfBpeTokenizer::eos_id() const { return model_->eos; }
int32_t HfBpeTokenizer::pad_id() const { return model_->pad; }

std::optional<int32_t> HfBpeTokenizer::TokenId(absl::string_view token) const {
  return model_->Lookup(token);
}

std::optional<std::string> HfBpeTokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= model_->vocab_size || !(model_->id_flags[id] & Model::kExists)) {
    return std::nullopt;
  }
  return model_->id_tokens[id];
}

bool HfBpeTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < model_->vocab_size && (model_->id_flags[id] & Model::kSpecial);
}

absl::Status HfBpeTokenizer::Save(const std::string& dir) const {
  RHYTHM_RETURN_IF_ERROR(ti::WriteFileAtomically(dir, kFileName, model_->files.tokenizer_json));
  if (model_->files.config_json.has_value()) {
    RHYTHM_RETURN_IF_ERROR(
        ti::WriteFileAtomically(dir, kConfigFileName, *model_->files.config_json));
  }
  if (model_->files.chat_template_jinja.has_value()) {
    RHYTHM_RETURN_IF_ERROR(ti::WriteFileAtomically(dir, kChatTemplateFileName,
                                                   *model_->files.chat_template_jinja));
  }
  return absl::OkStatus();
}

std::optional<ChatTemplateFiles> HfBpeTokenizer::chat_template_files() const {
  const HfTokenizerFiles& f = model_->files;
  return ChatTemplateFiles{f.config_json, f.config_json_source, f.chat_template_jinja,
                           f.chat_template_jinja_source};
}

}  // namespace rhythm::common

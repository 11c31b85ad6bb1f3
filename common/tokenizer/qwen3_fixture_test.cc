// HfBpeTokenizer on the real Qwen3 tokenizer.json against ids from the reference implementation
// (testdata/make_fixtures.mjs: tokenizers.js, cross-checked with a second JS encoder).
//
// The 11 MB tokenizer.json is not in the repository: testdata/fetch_qwen3_tokenizer.sh (run by
// scripts/setup.sh) caches it in $HOME/.cache/rhythm/qwen3-tokenizer; RHYTHM_QWEN3_TOKENIZER_DIR
// points elsewhere. A missing file fails these tests (it never skips them): CI runs setup first.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/tokenizer/file_util.h"
#include "common/tokenizer/hf_bpe_tokenizer.h"
#include "common/tokenizer/unicode.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace rhythm::common {
namespace {

using nlohmann::json;
using tokenizer_internal::AppendUtf8;
using tokenizer_internal::NfcNormalize;

std::string Qwen3Dir() {
  if (const char* dir = std::getenv("RHYTHM_QWEN3_TOKENIZER_DIR"); dir && *dir) return dir;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/rhythm/qwen3-tokenizer";
}

std::string TestData(const std::string& name) {
  return std::string(RHYTHM_TOKENIZER_TESTDATA_DIR) + "/" + name;
}

std::vector<json> ReadJsonl(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::vector<json> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(json::parse(line));
  }
  return lines;
}

std::string Nfc(const std::string& s) {
  auto n = NfcNormalize(s);
  EXPECT_TRUE(n.ok()) << n.status();
  return n.ok() ? *n : s;
}

std::string Preview(const std::string& s) {
  const std::string escaped = json(s).dump();
  return escaped.size() > 120 ? escaped.substr(0, 120) + "..." : escaped;
}

// What Decode(Encode(text)) gives: HF cuts the added tokens (all normalized=false in Qwen3) out
// of the raw text before NFC, so only the text between them is normalized. `added` holds their
// strings, longest first.
std::string RoundTripOf(const std::string& text, const std::vector<std::string>& added) {
  std::string out, piece;
  size_t pos = 0;
  while (pos < text.size()) {
    const std::string* match = nullptr;
    for (const std::string& a : added) {
      if (text.compare(pos, a.size(), a) == 0) {
        match = &a;
        break;
      }
    }
    if (match == nullptr) {
      piece += text[pos++];
      continue;
    }
    out += Nfc(piece) + *match;
    piece.clear();
    pos += match->size();
  }
  return out + Nfc(piece);
}

class Qwen3Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = Qwen3Dir();
    const auto start = std::chrono::steady_clock::now();
    auto tok = HfBpeTokenizer::Load(dir);
    load_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (tok.ok()) {
      tokenizer_ = tok->release();
    } else {
      *load_error_ = tok.status().ToString();
    }
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(tokenizer_, nullptr)
        << "cannot load the Qwen3 tokenizer from " << Qwen3Dir() << ": " << *load_error_
        << "\nRun common/tokenizer/testdata/fetch_qwen3_tokenizer.sh (scripts/setup.sh does) "
           "or set RHYTHM_QWEN3_TOKENIZER_DIR to a directory holding Qwen3's tokenizer.json.";
  }

  static const HfBpeTokenizer& tok() { return *tokenizer_; }

  // Qwen3's added tokens, longest first.
  static std::vector<std::string> AddedTokens() {
    std::vector<std::string> added;
    for (int32_t id = 151643; id < tok().vocab_size(); ++id) {
      added.push_back(*tok().IdToToken(id));
    }
    std::sort(added.begin(), added.end(),
              [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    return added;
  }

  static HfBpeTokenizer* tokenizer_;
  static std::string* load_error_;
  static double load_seconds_;
};

HfBpeTokenizer* Qwen3Test::tokenizer_ = nullptr;
std::string* Qwen3Test::load_error_ = new std::string();
double Qwen3Test::load_seconds_ = 0;

TEST_F(Qwen3Test, VocabularyFacts) {
  std::cout << "[qwen3] loaded in " << load_seconds_ << " s\n";
  EXPECT_EQ(tok().vocab_size(), 151669);  // 151643 BPE tokens + 26 added tokens
  EXPECT_EQ(tok().eos_id(), 151645);      // tokenizer_config.json: eos_token <|im_end|>
  EXPECT_EQ(tok().pad_id(), 151643);      // pad_token <|endoftext|>
  EXPECT_EQ(tok().TokenId("<|im_start|>"), 151644);
  EXPECT_EQ(tok().TokenId("<think>"), 151667);
  EXPECT_EQ(tok().TokenId("Hello"), 9707);
  EXPECT_EQ(tok().TokenId("Ġworld"), 1879);
  EXPECT_EQ(tok().IdToToken(198), "Ċ");
  EXPECT_TRUE(tok().IsSpecial(151644));
  EXPECT_FALSE(tok().IsSpecial(151667));  // <think> is an added token but not special
  EXPECT_FALSE(tok().IsSpecial(9707));
}

TEST_F(Qwen3Test, MatchesReferenceIdsOnTheFixtureCorpus) {
  const std::vector<json> cases = ReadJsonl(TestData("qwen3_expected.jsonl"));
  ASSERT_GT(cases.size(), 400u);
  size_t tokens = 0, matched = 0, bytes = 0;
  for (const json& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    tokens += expected.size();
    bytes += text.size();
    auto ids = tok().Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    if (*ids == expected) {
      ++matched;
      continue;
    }
    size_t at = 0;
    while (at < ids->size() && at < expected.size() && (*ids)[at] == expected[at]) ++at;
    ADD_FAILURE() << "ids differ for " << Preview(text) << " at token " << at << ": got "
                  << (at < ids->size() ? std::to_string((*ids)[at]) : "end") << ", expected "
                  << (at < expected.size() ? std::to_string(expected[at]) : "end");
  }
  std::cout << "[qwen3] fixture: " << cases.size() << " strings, " << bytes << " bytes, " << tokens
            << " tokens; " << matched << "/" << cases.size() << " exact\n";
  EXPECT_EQ(matched, cases.size());
}

TEST_F(Qwen3Test, RoundTripsTheFixtureCorpus) {
  const std::vector<std::string> added = AddedTokens();
  for (const json& c : ReadJsonl(TestData("qwen3_expected.jsonl"))) {
    const std::string text = c["text"].get<std::string>();
    auto ids = tok().Encode(text);
    ASSERT_TRUE(ids.ok());
    auto back = tok().Decode(*ids);
    ASSERT_TRUE(back.ok());
    // Encode normalizes to NFC first, so NFC text comes back byte for byte.
    EXPECT_EQ(*back, RoundTripOf(text, added)) << Preview(text);
    if (Nfc(text) == text) {
      EXPECT_EQ(*back, text);
    }
  }
}

TEST_F(Qwen3Test, DecodeMatchesReference) {
  const std::vector<json> cases = ReadJsonl(TestData("qwen3_decode_expected.jsonl"));
  ASSERT_GT(cases.size(), 100u);
  for (const json& c : cases) {
    auto text = tok().Decode(c["ids"].get<std::vector<int32_t>>());
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, c["text"].get<std::string>()) << c["ids"].dump();
  }
}

TEST_F(Qwen3Test, DecodeNamesBadIds) {
  auto bad = tok().Decode({9707, 151669});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), ::testing::HasSubstr("ids[1] = 151669"));
}

// Random valid UTF-8 from every plane (no surrogates), with added tokens mixed in. Added tokens
// are cut out of the raw text before NFC (HF's order), so the text between them comes back in
// NFC: "<think>" + U+0338 stays as is although NFC(">" + U+0338) is "≯".
TEST_F(Qwen3Test, RoundTripsRandomUtf8) {
  std::mt19937 rng(1234);
  const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x0, 0x7F},        {0x80, 0x7FF},       {0x800, 0xD7FF}, {0xE000, 0xFFFF},
      {0x10000, 0x1FFFF}, {0x20000, 0x10FFFF}, {0x300, 0x36F},  {0x1F300, 0x1FAFF}};
  const std::vector<std::string> added = {"<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>"};
  const std::vector<std::string> plain = {" ", "\n", "'s", "DON'T", "  \n"};
  for (int n = 0; n < 600; ++n) {
    std::string text, expected, piece;
    const int len = n % 50;
    for (int i = 0; i < len; ++i) {
      const unsigned r = rng() % 20;
      if (r == 0) {
        const std::string& token = added[rng() % added.size()];
        expected += Nfc(piece) + token;
        text += piece + token;
        piece.clear();
        continue;
      }
      if (r == 1) {
        piece += plain[rng() % plain.size()];
        continue;
      }
      const auto& [lo, hi] = ranges[rng() % ranges.size()];
      char32_t cp = lo + rng() % (hi - lo + 1);
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
      AppendUtf8(cp, &piece);
    }
    expected += Nfc(piece);
    text += piece;
    auto ids = tok().Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    auto back = tok().Decode(*ids);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, expected) << Preview(text);
  }
}

TEST_F(Qwen3Test, LongInputsAndThroughput) {
  // Pathological single words and whitespace runs: the merge heap and the regex must cope.
  for (const std::string& text : {std::string(200000, 'a'), std::string(100000, ' ') + "x",
                                  std::string(50000, '\n'), std::string(100000, '7')}) {
    auto ids = tok().Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_TRUE(*tok().Decode(*ids) == text) << text.size() << " bytes of " << Preview(text);
  }

  // Throughput on ~2 MB: the fixture corpus repeated (words seen before: cache hits), and
  // random words (mostly cache misses).
  std::string corpus;
  for (const json& c : ReadJsonl(TestData("qwen3_expected.jsonl"))) {
    corpus += c["text"].get<std::string>();
    corpus += "\n";
  }
  std::string repeated;
  while (repeated.size() < (2u << 20)) repeated += corpus;
  std::mt19937 rng(99);
  std::string fresh;
  while (fresh.size() < (1u << 20)) {
    const int len = 2 + rng() % 12;
    fresh += ' ';
    for (int i = 0; i < len; ++i) fresh += static_cast<char>('a' + rng() % 26);
  }
  for (const auto& [name, text] :
       {std::pair<const char*, const std::string&>{"corpus", repeated}, {"random words", fresh}}) {
    const auto start = std::chrono::steady_clock::now();
    auto ids = tok().Encode(text);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(ids.ok());
    const double mb_per_s = text.size() / 1e6 / seconds;
    std::cout << "[qwen3] encode " << name << ": " << text.size() / 1e6 << " MB, " << ids->size()
              << " tokens, " << mb_per_s << " MB/s\n";
    EXPECT_GT(mb_per_s, 0.2);  // a floor that only catches pathological slowness
    // EXPECT_TRUE, not EXPECT_EQ: gtest's diff of two megabyte strings is quadratic.
    EXPECT_TRUE(*tok().Decode(*ids) == RoundTripOf(text, AddedTokens())) << name;
  }
}

TEST_F(Qwen3Test, SavesAndReloads) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("rhythm_qwen3_save_" + std::to_string(::getpid())))
          .string();
  ASSERT_TRUE(tok().Save(dir).ok());
  auto original = tokenizer_internal::ReadFileToString(Qwen3Dir() + "/tokenizer.json");
  auto saved = tokenizer_internal::ReadFileToString(dir + "/tokenizer.json");
  ASSERT_TRUE(original.ok() && saved.ok());
  EXPECT_TRUE(*original == *saved);
  EXPECT_TRUE(std::filesystem::exists(dir + "/tokenizer_config.json"));
  auto reloaded = LoadTokenizer(dir);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  const std::string text = "<|im_start|>user\nDON'T panic: 12345 + 678 = ?<|im_end|>";
  EXPECT_EQ(*(*reloaded)->Encode(text), *tok().Encode(text));
  EXPECT_EQ((*reloaded)->eos_id(), tok().eos_id());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace rhythm::common

// HfBpeTokenizer on small tokenizer.json files written here, whose ids are worked out by hand
// (and, for random words, by a brute-force BPE), so the merge logic and the file checks are
// tested without the 11 MB Qwen3 file (qwen3_fixture_test.cc covers that one).
#include "common/tokenizer/hf_bpe_tokenizer.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace rhythm::common {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// The Split pattern of Qwen2/2.5/3's tokenizer.json.
constexpr char kQwenPattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// A tiny byte-level BPE. "Ġ" is the byte-level spelling of a space, "Ċ" of "\n", "Ã" "©" of
// the two bytes of "é" (C3 A9). Merges are listed in rank order, in both accepted forms.
json TinyJson() {
  json j = json::parse(R"({
    "version": "1.0",
    "truncation": null,
    "padding": null,
    "added_tokens": [
      {"id": 10, "content": "<|end|>", "single_word": false, "lstrip": false, "rstrip": false,
       "normalized": false, "special": true}
    ],
    "normalizer": {"type": "NFC"},
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": ""}, "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
    ]},
    "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
                       "use_regex": false},
    "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
                "use_regex": false},
    "model": {
      "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
      "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
      "ignore_merges": false,
      "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "bc": 5, "abc": 6, "Ġa": 7, "Ġab": 8,
                "cc": 9, "Ã": 11, "©": 12, "Ã©": 13, "Ċ": 14},
      "merges": ["a b", "b c", ["ab", "c"], ["Ġ", "a"], "Ġa b", "c c", "Ã ©"]
    }
  })");
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = kQwenPattern;
  return j;
}

const char kTinyConfig[] = R"({"eos_token": "<|end|>", "pad_token": null})";

absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> Build(
    const json& j, std::optional<std::string> config = std::string(kTinyConfig)) {
  HfTokenizerFiles files;
  files.tokenizer_json = j.dump();
  files.tokenizer_json_source = "tiny/tokenizer.json";
  files.config_json = std::move(config);
  files.config_json_source = "tiny/tokenizer_config.json";
  return HfBpeTokenizer::FromFiles(std::move(files));
}

std::unique_ptr<HfBpeTokenizer> MustBuild(const json& j) {
  auto tok = Build(j);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

std::vector<int32_t> Ids(const Tokenizer& tok, absl::string_view text) {
  auto ids = tok.Encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path dir = std::filesystem::path(base ? base : "/tmp") /
                              ("rhythm_bpe_test_" + std::to_string(::getpid())) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(HfBpeTiny, MergesByRankNotLeftToRight) {
  auto tok = MustBuild(TinyJson());
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Ids(*tok, "abc"), ElementsAre(6));      // a b c -> ab c -> abc
  EXPECT_THAT(Ids(*tok, "bcab"), ElementsAre(5, 4));  // (a b) rank 0 first, then (b c)
  // " ab": (a b) has rank 0, (Ġ a) rank 3, so Ġ + ab, never Ġa + b or Ġab.
  EXPECT_THAT(Ids(*tok, " ab"), ElementsAre(3, 4));
  EXPECT_THAT(Ids(*tok, " a"), ElementsAre(7));
  EXPECT_THAT(Ids(*tok, "ccc"), ElementsAre(9, 2));  // leftmost of equal ranks first
  EXPECT_THAT(Ids(*tok, "cccc"), ElementsAre(9, 9));
  EXPECT_THAT(Ids(*tok, "cccccab"), ElementsAre(9, 9, 2, 4));
}

TEST(HfBpeTiny, PreTokenizesWithTheSplitRegex) {
  auto tok = MustBuild(TinyJson());
  ASSERT_NE(tok, nullptr);
  // "a", " ", " b": \s+(?!\S) leaves the last space to the word after it.
  EXPECT_THAT(Ids(*tok, "a  b"), ElementsAre(0, 3, 3, 1));
  EXPECT_THAT(Ids(*tok, "a\nb"), ElementsAre(0, 14, 1));
  EXPECT_THAT(Ids(*tok, "ab ab"), ElementsAre(4, 3, 4));  // " ab" is one word: Ġ + ab
  EXPECT_THAT(Ids(*tok, ""), IsEmpty());
}

TEST(HfBpeTiny, AddedTokensAreMatchedBeforeEverythingElse) {
  auto tok = MustBuild(TinyJson());
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Ids(*tok, "ab<|end|>c"), ElementsAre(4, 10, 2));
  EXPECT_THAT(Ids(*tok, "<|end|><|end|>"), ElementsAre(10, 10));
  EXPECT_THAT(Ids(*tok, " <|end|> "), ElementsAre(3, 10, 3));
  EXPECT_EQ(*tok->Decode({4, 10, 2}), "ab<|end|>c");
}

TEST(HfBpeTiny, NormalizesToNfc) {
  auto tok = MustBuild(TinyJson());
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Ids(*tok, "e\xCC\x81"), ElementsAre(13));  // e + U+0301 -> é -> Ã©
  EXPECT_THAT(Ids(*tok, "\xC3\xA9"), ElementsAre(13));
  json j = TinyJson();
  j["normalizer"] = nullptr;
  auto raw = MustBuild(j);
  ASSERT_NE(raw, nullptr);
  // Without NFC, neither "e" nor the bytes of U+0301 have a symbol: HF drops them.
  EXPECT_THAT(Ids(*raw, "e\xCC\x81"), IsEmpty());
  j["normalizer"] = json::parse(R"({"type": "Sequence", "normalizers": [{"type": "NFC"}]})");
  auto seq = MustBuild(j);
  ASSERT_NE(seq, nullptr);
  EXPECT_THAT(Ids(*seq, "e\xCC\x81"), ElementsAre(13));
}

TEST(HfBpeTiny, NormalizedAddedTokensMatchAfterNfc) {
  json j = TinyJson();
  j["added_tokens"].push_back(
      {{"id", 17}, {"content", "\xC3\xA9"}, {"special", false}, {"normalized", true}});
  auto tok = MustBuild(j);
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Ids(*tok, "e\xCC\x81"), ElementsAre(17));
  EXPECT_THAT(Ids(*tok,
                  "ab\xC3\xA9"
                  "c"),
              ElementsAre(4, 17, 2));
  // normalized=false: matched in the raw text only, so decomposed input does not match.
  j["added_tokens"][1]["normalized"] = false;
  auto raw = MustBuild(j);
  ASSERT_NE(raw, nullptr);
  EXPECT_THAT(Ids(*raw, "e\xCC\x81"), ElementsAre(13));
  EXPECT_THAT(Ids(*raw, "\xC3\xA9"), ElementsAre(17));
}

TEST(HfBpeTiny, AddedTokenStripAndSingleWordFlags) {
  json j = TinyJson();
  j["added_tokens"].push_back({{"id", 18},
                               {"content", "<m>"},
                               {"special", true},
                               {"lstrip", true},
                               {"rstrip", true},
                               {"normalized", false}});
  j["added_tokens"].push_back({{"id", 19},
                               {"content", "ab"},
                               {"special", false},
                               {"single_word", true},
                               {"normalized", false}});
  auto tok = MustBuild(j);
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(Ids(*tok, "c  <m>  c"), ElementsAre(2, 18, 2));  // spaces around <m> absorbed
  EXPECT_THAT(Ids(*tok, "ab"), ElementsAre(19));
  EXPECT_THAT(Ids(*tok, "c ab"), ElementsAre(2, 3, 19));
  EXPECT_THAT(Ids(*tok, "cab"), ElementsAre(2, 4));  // inside a word: not the added token
  EXPECT_THAT(Ids(*tok, "abc"), ElementsAre(6));

  j["added_tokens"][1]["lstrip"] = false;
  j["added_tokens"][1]["rstrip"] = false;
  auto plain = MustBuild(j);
  ASSERT_NE(plain, nullptr);
  EXPECT_THAT(Ids(*plain, "c  <m>  c"), ElementsAre(2, 3, 3, 18, 3, 3, 2));
}

TEST(HfBpeTiny, IgnoreMergesTakesWholeWordsFromTheVocab) {
  json j = TinyJson();
  j["model"]["vocab"]["bca"] = 15;
  auto merged = MustBuild(j);
  ASSERT_NE(merged, nullptr);
  EXPECT_THAT(Ids(*merged, "bca"), ElementsAre(5, 0));
  j["model"]["ignore_merges"] = true;
  auto whole = MustBuild(j);
  ASSERT_NE(whole, nullptr);
  EXPECT_THAT(Ids(*whole, "bca"), ElementsAre(15));
  EXPECT_THAT(Ids(*whole, "bcab"), ElementsAre(5, 4));
}

TEST(HfBpeTiny, UnknownSymbolsUseUnkTokenOrAreDropped) {
  json j = TinyJson();
  EXPECT_THAT(Ids(*MustBuild(j), "add"), ElementsAre(0));  // HF drops them with no unk_token
  j["model"]["vocab"]["<unk>"] = 16;
  j["model"]["unk_token"] = "<unk>";
  EXPECT_THAT(Ids(*MustBuild(j), "add"), ElementsAre(0, 16, 16));
  EXPECT_THAT(Ids(*MustBuild(j), "d"), ElementsAre(16));
  j["model"]["fuse_unk"] = true;
  EXPECT_THAT(Ids(*MustBuild(j), "addab"), ElementsAre(0, 16, 4));
}

TEST(HfBpeTiny, GptStyleByteLevelRegex) {
  json j = TinyJson();
  j["pre_tokenizer"] = json::parse(
      R"({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
          "use_regex": true})");
  auto tok = MustBuild(j);
  ASSERT_NE(tok, nullptr);
  // GPT-2 words "ab", " ab", " ", " c"; " ab" is Ġ + ab since (a b) outranks (Ġ a).
  EXPECT_THAT(Ids(*tok, "ab ab  c"), ElementsAre(4, 3, 4, 3, 3, 2));
}

TEST(HfBpeTiny, DecodesAndRepairsUtf8) {
  auto tok = MustBuild(TinyJson());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(*tok->Decode({6, 3, 4}), "abc ab");
  EXPECT_EQ(*tok->Decode({11, 12}), "\xC3\xA9");
  EXPECT_EQ(*tok->Decode({11}), "\xEF\xBF\xBD");  // half a character
  EXPECT_EQ(*tok->Decode({11, 0}),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(*tok->Decode({}), "");
  auto bad = tok->Decode({0, 1, 99});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("ids[2] = 99"));
  EXPECT_THAT(tok->Decode({-5}).status().message(), HasSubstr("ids[0] = -5"));
}

TEST(HfBpeTiny, VocabularyQueries) {
  auto tok = MustBuild(TinyJson());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 15);
  EXPECT_EQ(tok->eos_id(), 10);
  EXPECT_EQ(tok->pad_id(), 10);  // pad_token null: eos
  EXPECT_EQ(tok->TokenId("Ġab"), 8);
  EXPECT_EQ(tok->TokenId("<|end|>"), 10);
  EXPECT_EQ(tok->TokenId("zz"), std::nullopt);
  EXPECT_EQ(tok->IdToToken(8), "Ġab");
  EXPECT_EQ(tok->IdToToken(15), std::nullopt);
  EXPECT_TRUE(tok->IsSpecial(10));
  EXPECT_FALSE(tok->IsSpecial(4));

  auto pad = Build(TinyJson(), R"({"eos_token": {"content": "<|end|>"}, "pad_token": "c"})");
  ASSERT_TRUE(pad.ok()) << pad.status();
  EXPECT_EQ((*pad)->eos_id(), 10);
  EXPECT_EQ((*pad)->pad_id(), 2);

  json j = TinyJson();
  j["added_tokens"][0]["content"] = "<|endoftext|>";
  auto fallback = Build(j, std::nullopt);  // no config: eos is <|endoftext|>
  ASSERT_TRUE(fallback.ok()) << fallback.status();
  EXPECT_EQ((*fallback)->eos_id(), 10);
}

TEST(HfBpeTiny, RoundTripsRandomText) {
  auto tok = MustBuild(TinyJson());
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> pieces = {"a", "b", "c", " ", "\n", "<|end|>", "\xC3\xA9"};
  std::mt19937 rng(3);
  for (int n = 0; n < 300; ++n) {
    std::string text;
    const int len = n % 40;
    for (int i = 0; i < len; ++i) text += pieces[rng() % pieces.size()];
    auto ids = tok->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*tok->Decode(*ids), text);
  }
}

// The slow, obvious BPE: repeatedly merge the adjacent pair of lowest rank, leftmost first.
std::vector<std::string> BruteForceBpe(
    const std::string& word, const std::map<std::pair<std::string, std::string>, int>& ranks) {
  std::vector<std::string> symbols;
  for (char c : word) symbols.emplace_back(1, c);
  while (true) {
    int best = std::numeric_limits<int>::max();
    size_t at = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = ranks.find({symbols[i], symbols[i + 1]});
      if (it != ranks.end() && it->second < best) {
        best = it->second;
        at = i;
      }
    }
    if (best == std::numeric_limits<int>::max()) return symbols;
    symbols[at] += symbols[at + 1];
    symbols.erase(symbols.begin() + at + 1);
  }
}

TEST(HfBpeTiny, MatchesBruteForceBpeOnRandomMerges) {
  std::mt19937 rng(2024);
  for (int trial = 0; trial < 5; ++trial) {
    std::vector<std::string> tokens = {"a", "b", "c", "d"};
    json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"d", 3}, {"<|endoftext|>", 4}};
    json merges = json::array();
    std::map<std::pair<std::string, std::string>, int> ranks;
    while (merges.size() < 80) {
      const std::string x = tokens[rng() % tokens.size()];  // copies: tokens grows below
      const std::string y = tokens[rng() % tokens.size()];
      if (x.size() + y.size() > 8 || ranks.count({x, y})) continue;
      const std::string xy = x + y;
      if (!vocab.contains(xy)) {
        const int id = static_cast<int>(vocab.size());
        vocab[xy] = id;
        tokens.push_back(xy);
      } else if (rng() % 4 != 0) {
        continue;  // sometimes a second pair spelling an existing token
      }
      ranks[{x, y}] = static_cast<int>(merges.size());
      merges.push_back(x + " " + y);
    }
    json j = TinyJson();
    j["added_tokens"] = json::array();
    j["model"]["vocab"] = vocab;
    j["model"]["merges"] = merges;
    auto tok = Build(j, std::nullopt);
    ASSERT_TRUE(tok.ok()) << tok.status();
    for (int w = 0; w < 300; ++w) {
      std::string word;
      const int len = 1 + static_cast<int>(rng() % 40);
      for (int i = 0; i < len; ++i) word += static_cast<char>('a' + rng() % 4);
      std::vector<int32_t> expected;
      for (const std::string& s : BruteForceBpe(word, ranks))
        expected.push_back(vocab[s].get<int32_t>());
      // Twice: the second answer comes from the word cache.
      EXPECT_EQ(Ids(**tok, word), expected) << word;
      EXPECT_EQ(Ids(**tok, word), expected) << word;
    }
  }
}

TEST(HfBpeTiny, ConcurrentEncodesAgree) {
  auto tok = MustBuild(TinyJson());
  ASSERT_NE(tok, nullptr);
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> expected;
  std::mt19937 rng(5);
  for (int i = 0; i < 200; ++i) {
    std::string text;
    for (int k = 0; k < 30; ++k) text += "abc \n"[rng() % 5];
    texts.push_back(text);
    expected.push_back(Ids(*tok, text));
  }
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          auto ids = tok->Encode(texts[(i + t * 7) % texts.size()]);
          if (!ids.ok() || *ids != expected[(i + t * 7) % texts.size()]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

TEST(HfBpeTiny, SavesTheFilesItWasLoadedFrom) {
  const std::string dir = TempDir("tiny_load");
  const std::string tokenizer_json = TinyJson().dump(2);
  std::ofstream(dir + "/tokenizer.json") << tokenizer_json;
  std::ofstream(dir + "/tokenizer_config.json") << kTinyConfig;
  auto tok = LoadTokenizer(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT(*(*tok)->Encode(" ab<|end|>"), ElementsAre(3, 4, 10));
  const std::string out = TempDir("tiny_save");
  ASSERT_TRUE((*tok)->Save(out).ok());
  EXPECT_EQ(ReadAll(out + "/tokenizer.json"), tokenizer_json);
  EXPECT_EQ(ReadAll(out + "/tokenizer_config.json"), kTinyConfig);
  auto again = LoadTokenizer(out);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->eos_id(), 10);
}

TEST(HfBpeTiny, KeepsAndSavesTheChatTemplateFiles) {
  const std::string dir = TempDir("tiny_chat_load");
  std::ofstream(dir + "/tokenizer.json") << TinyJson().dump();
  std::ofstream(dir + "/tokenizer_config.json") << kTinyConfig;
  std::ofstream(dir + "/chat_template.jinja") << "{{ messages }}";
  auto tok = LoadTokenizer(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::optional<ChatTemplateFiles> files = (*tok)->chat_template_files();
  ASSERT_TRUE(files.has_value());
  EXPECT_EQ(files->config_json, std::optional<std::string>(kTinyConfig));
  EXPECT_EQ(files->config_json_source, dir + "/tokenizer_config.json");
  EXPECT_EQ(files->chat_template_jinja, std::optional<std::string>("{{ messages }}"));
  EXPECT_EQ(files->chat_template_jinja_source, dir + "/chat_template.jinja");
  const std::string out = TempDir("tiny_chat_save");
  ASSERT_TRUE((*tok)->Save(out).ok());
  EXPECT_EQ(ReadAll(out + "/chat_template.jinja"), "{{ messages }}");

  // Without the files: absent, but the sources still name where they were looked for.
  const std::string bare = TempDir("tiny_chat_bare");
  json with_eos = TinyJson();  // no config: eos must be a well-known token
  with_eos["added_tokens"].push_back({{"id", 15}, {"content", "<|endoftext|>"},
                                      {"single_word", false}, {"lstrip", false},
                                      {"rstrip", false}, {"normalized", false},
                                      {"special", true}});
  std::ofstream(bare + "/tokenizer.json") << with_eos.dump();
  auto plain = LoadTokenizer(bare);
  ASSERT_TRUE(plain.ok()) << plain.status();
  files = (*plain)->chat_template_files();
  ASSERT_TRUE(files.has_value());
  EXPECT_FALSE(files->config_json.has_value());
  EXPECT_FALSE(files->chat_template_jinja.has_value());
  EXPECT_EQ(files->config_json_source, bare + "/tokenizer_config.json");
}

TEST(HfBpeTiny, InvalidUtf8TextIsRejected) {
  auto tok = MustBuild(TinyJson());
  ASSERT_NE(tok, nullptr);
  auto ids = tok->Encode("ab\xE2\x82");
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ids.status().message(), HasSubstr("byte 2"));
}

// ---- Malformed files: INVALID_ARGUMENT naming the file and the field ---------------------------

struct BadCase {
  const char* name;
  std::function<void(json&)> edit;
  const char* expected;  // substring of the message, after "tiny/tokenizer.json: "
};

TEST(HfBpeMalformed, NamesTheFileAndTheField) {
  const std::vector<BadCase> cases = {
      {"no model", [](json& j) { j.erase("model"); }, "model: missing"},
      {"WordPiece", [](json& j) { j["model"]["type"] = "WordPiece"; },
       "model.type: \"WordPiece\" is not supported"},
      {"Unigram", [](json& j) { j["model"]["type"] = "Unigram"; }, "model.type: \"Unigram\""},
      {"no vocab", [](json& j) { j["model"].erase("vocab"); }, "model.vocab: missing"},
      {"vocab list", [](json& j) { j["model"]["vocab"] = json::array(); }, "model.vocab: expected"},
      {"negative id", [](json& j) { j["model"]["vocab"]["a"] = -1; }, "model.vocab[\"a\"]"},
      {"duplicate id", [](json& j) { j["model"]["vocab"]["zz"] = 1; }, "model.vocab: id 1"},
      {"no merges", [](json& j) { j["model"].erase("merges"); }, "model.merges: missing"},
      {"merges object", [](json& j) { j["model"]["merges"] = json::object(); },
       "model.merges: expected"},
      {"merge no space", [](json& j) { j["model"]["merges"][1] = "bc"; },
       "model.merges[1]: \"bc\": expected two tokens"},
      {"merge number", [](json& j) { j["model"]["merges"][0] = 7; }, "model.merges[0]: expected"},
      {"merge triple",
       [](json& j) {
         j["model"]["merges"][2] = {"a", "b", "c"};
       },
       "model.merges[2]: expected"},
      {"merge unknown", [](json& j) { j["model"]["merges"][1] = "b x"; },
       "model.merges[1]: \"b x\": \"x\" is not in model.vocab"},
      {"merge result", [](json& j) { j["model"]["merges"][1] = "c a"; },
       "model.merges[1]: \"c a\": the merged token \"ca\" is not in model.vocab"},
      {"dropout", [](json& j) { j["model"]["dropout"] = 0.1; }, "model.dropout"},
      {"byte_fallback", [](json& j) { j["model"]["byte_fallback"] = true; }, "model.byte_fallback"},
      {"prefix", [](json& j) { j["model"]["continuing_subword_prefix"] = "##"; },
       "model.continuing_subword_prefix"},
      {"unk missing", [](json& j) { j["model"]["unk_token"] = "<unk>"; },
       "model.unk_token: \"<unk>\" is not in model.vocab"},
      {"added no id", [](json& j) { j["added_tokens"][0].erase("id"); }, "added_tokens[0].id"},
      {"added empty", [](json& j) { j["added_tokens"][0]["content"] = ""; },
       "added_tokens[0].content"},
      {"added flag", [](json& j) { j["added_tokens"][0]["lstrip"] = "yes"; },
       "added_tokens[0].lstrip: expected true or false"},
      {"NFD",
       [](json& j) {
         j["normalizer"] = {{"type", "NFD"}};
       },
       "normalizer.type: \"NFD\" is not supported"},
      {"lowercase in sequence",
       [](json& j) {
         j["normalizer"] = json::parse(
             R"({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]})");
       },
       "normalizer.normalizers[1].type: \"Lowercase\""},
      {"whitespace pre",
       [](json& j) {
         j["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Whitespace"}};
       },
       "pre_tokenizer.pretokenizers[0].type: \"Whitespace\" is not supported"},
      {"bad regex",
       [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(a"; },
       "pre_tokenizer.pretokenizers[0].pattern.Regex: PCRE2 cannot compile"},
      {"behavior", [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; },
       "pre_tokenizer.pretokenizers[0].behavior"},
      {"invert", [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["invert"] = true; },
       "pre_tokenizer.pretokenizers[0].invert"},
      {"prefix space",
       [](json& j) { j["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true; },
       "pre_tokenizer.pretokenizers[1].add_prefix_space"},
      {"no byte level", [](json& j) { j["pre_tokenizer"]["pretokenizers"].erase(1); },
       "pre_tokenizer: has no ByteLevel step"},
      {"no pre_tokenizer", [](json& j) { j["pre_tokenizer"] = nullptr; },
       "pre_tokenizer: has no ByteLevel step"},
      {"split after byte level",
       [](json& j) {
         auto& list = j["pre_tokenizer"]["pretokenizers"];
         std::swap(list[0], list[1]);
       },
       "pre_tokenizer.pretokenizers[1]: \"Split\" after ByteLevel"},
      {"decoder",
       [](json& j) {
         j["decoder"] = {{"type", "WordPiece"}};
       },
       "decoder.type: \"WordPiece\" is not supported"},
      {"no decoder", [](json& j) { j.erase("decoder"); }, "decoder: missing"},
  };
  for (const BadCase& c : cases) {
    json j = TinyJson();
    c.edit(j);
    auto tok = Build(j);
    ASSERT_FALSE(tok.ok()) << c.name;
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(tok.status().message(),
                HasSubstr(std::string("tiny/tokenizer.json: ") + c.expected))
        << c.name;
  }
}

TEST(HfBpeMalformed, NotJsonAndBadConfig) {
  HfTokenizerFiles files;
  files.tokenizer_json = "{\"model\": ";
  files.tokenizer_json_source = "x/tokenizer.json";
  auto tok = HfBpeTokenizer::FromFiles(files);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr("x/tokenizer.json: (document): not valid JSON"));

  auto eos = Build(TinyJson(), R"({"eos_token": "<|nope|>"})");
  EXPECT_EQ(eos.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(eos.status().message(),
              HasSubstr("tiny/tokenizer_config.json: eos_token: \"<|nope|>\" is not a token"));
  auto pad = Build(TinyJson(), R"({"eos_token": "<|end|>", "pad_token": 3})");
  EXPECT_THAT(pad.status().message(), HasSubstr("tiny/tokenizer_config.json: pad_token"));
  auto config = Build(TinyJson(), "[1, 2");
  EXPECT_THAT(config.status().message(), HasSubstr("tiny/tokenizer_config.json: (document)"));
  auto no_eos = Build(TinyJson(), std::nullopt);
  EXPECT_THAT(no_eos.status().message(), HasSubstr("tiny/tokenizer.json: (eos)"));
}

// Found while fuzzing (fuzz/fuzz_tokenizer_json): quoting a value nested 100,000 deep in an
// error message ("normalizer": [[[...]]]) overflowed the stack in nlohmann's dump().
TEST(HfBpeMalformed, DeepNestingIsAnErrorNotAStackOverflow) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  std::string text = TinyJson().dump();
  const std::string nfc = R"({"type":"NFC"})";
  ASSERT_NE(text.find(nfc), std::string::npos);
  text.replace(text.find(nfc), nfc.size(), deep);
  HfTokenizerFiles files;
  files.tokenizer_json = text;
  files.tokenizer_json_source = "x/tokenizer.json";
  auto tok = HfBpeTokenizer::FromFiles(files);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(),
              HasSubstr("x/tokenizer.json: (document): nests deeper than 64 levels"));
  auto config = Build(TinyJson(), R"({"eos_token": )" + deep + "}");
  EXPECT_THAT(config.status().message(),
              HasSubstr("tiny/tokenizer_config.json: (document): nests deeper than 64 levels"));
}

TEST(HfBpeMalformed, LoadNamesThePathOnDisk) {
  const std::string dir = TempDir("bad_hf");
  json j = TinyJson();
  j["model"]["type"] = "WordPiece";
  std::ofstream(dir + "/tokenizer.json") << j.dump();
  auto tok = LoadTokenizer(dir);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr(dir + "/tokenizer.json: model.type"));
  EXPECT_EQ(HfBpeTokenizer::Load(TempDir("no_hf")).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace rhythm::common

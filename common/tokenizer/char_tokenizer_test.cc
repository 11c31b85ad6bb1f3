#include "common/tokenizer/char_tokenizer.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rhythm::common {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A fresh directory under the test's temporary directory.
std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path dir = std::filesystem::path(base ? base : "/tmp") /
                              ("rhythm_tokenizer_test_" + std::to_string(::getpid())) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

TEST(CharTokenizer, DefaultVocabularyIsFixed) {
  auto tok = CharTokenizer::CreateDefault();
  EXPECT_EQ(tok->vocab_size(), 101);
  EXPECT_EQ(tok->pad_id(), 0);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->unk_id(), 3);
  // Ids of the default alphabet must never change (trained checkpoints depend on them).
  EXPECT_EQ(tok->TokenId("0"), 4);
  EXPECT_EQ(tok->TokenId("9"), 13);
  EXPECT_EQ(tok->TokenId("+"), 14);
  EXPECT_EQ(tok->TokenId("="), 18);
  EXPECT_EQ(tok->TokenId(" "), 24);
  EXPECT_EQ(tok->TokenId("\n"), 25);
  EXPECT_EQ(tok->TokenId("a"), 26);
  EXPECT_EQ(tok->TokenId("A"), 52);
  EXPECT_EQ(tok->TokenId("!"), 78);
  EXPECT_EQ(tok->TokenId("~"), 99);
  EXPECT_EQ(tok->TokenId("\t"), 100);
  EXPECT_EQ(tok->TokenId("<eos>"), 2);
  EXPECT_EQ(tok->TokenId("ab"), std::nullopt);
  EXPECT_EQ(tok->TokenId("\xC3\xA9"), std::nullopt);
  EXPECT_EQ(tok->TokenId(""), std::nullopt);
}

TEST(CharTokenizer, EncodesArithmetic) {
  auto tok = CharTokenizer::CreateDefault();
  auto ids = tok->Encode("12+3=15");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre(5, 6, 14, 7, 18, 5, 9));
  EXPECT_EQ(*tok->Decode(*ids), "12+3=15");
}

TEST(CharTokenizer, RoundTripsEveryAlphabetString) {
  auto tok = CharTokenizer::CreateDefault();
  const std::string alphabet(CharTokenizer::DefaultAlphabet());
  std::mt19937 rng(7);
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
  for (int n = 0; n < 200; ++n) {
    std::string text;
    for (int i = 0; i < n; ++i) text += alphabet[pick(rng)];
    auto ids = tok->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    // Every character is one id unless the text happens to spell a special token.
    if (text.find('<') == std::string::npos) {
      EXPECT_EQ(ids->size(), text.size());
    }
    EXPECT_EQ(*tok->Decode(*ids), text);
  }
  const std::string countdown =
      "Using the numbers [19, 36, 55, 7], make 65.\n<answer>(55 + 36 - 19) - 7</answer>";
  EXPECT_EQ(*tok->Decode(*tok->Encode(countdown)), countdown);
}

TEST(CharTokenizer, SpecialTokensInTextAreSpecialIds) {
  auto tok = CharTokenizer::CreateDefault();
  auto ids = tok->Encode("<bos>1<eos><pad><unk><eo");
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(1, 5, 2, 0, 3, *tok->TokenId("<"), 30, 40));
  // Special tokens decode to their literal text, so Encode(Decode(ids)) == ids.
  EXPECT_EQ(*tok->Decode({1, 5, 2, 0}), "<bos>1<eos><pad>");
}

TEST(CharTokenizer, UnknownCharactersAreUnk) {
  auto tok = CharTokenizer::CreateDefault();
  auto ids = tok->Encode(
      "a\xC3\xA9"
      "b\xF0\x9F\x98\x80");  // "aéb😀"
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(26, 3, 27, 3));
  // <unk> decodes to U+FFFD, which encodes back to <unk>.
  EXPECT_EQ(*tok->Decode(*ids),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
  EXPECT_EQ(*tok->Encode(*tok->Decode(*ids)), *ids);
}

TEST(CharTokenizer, EncodeDecodeIsIdentityOnIds) {
  auto tok = CharTokenizer::CreateDefault();
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> pick(0, tok->vocab_size() - 1);
  for (int n = 0; n < 100; ++n) {
    std::vector<int32_t> ids(n);
    for (int32_t& id : ids) id = pick(rng);
    auto text = tok->Decode(ids);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(*tok->Encode(*text), ids);
  }
}

TEST(CharTokenizer, RejectsInvalidUtf8AndOutOfRangeIds) {
  auto tok = CharTokenizer::CreateDefault();
  auto bad = tok->Encode("ab\xC3");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("byte 2"));
  auto out = tok->Decode({4, 5, 101});
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("ids[2] = 101"));
  EXPECT_THAT(tok->Decode({-1}).status().message(), HasSubstr("ids[0] = -1"));
  EXPECT_EQ(*tok->Decode({}), "");
  EXPECT_TRUE(tok->Encode("")->empty());
}

TEST(CharTokenizer, CustomAlphabet) {
  auto tok = CharTokenizer::Create("01+=\xC3\xA9\xE4\xBD\xA0");  // 0 1 + = é 你
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 10);
  EXPECT_THAT(*(*tok)->Encode("10+\xE4\xBD\xA0=2"), ElementsAre(5, 4, 6, 9, 7, 3));
  EXPECT_EQ((*tok)->TokenId("\xC3\xA9"), 8);

  EXPECT_THAT(CharTokenizer::Create("").status().message(), HasSubstr("empty"));
  EXPECT_THAT(CharTokenizer::Create("abca").status().message(),
              HasSubstr("alphabet[3] = U+0061 repeats"));
  EXPECT_THAT(CharTokenizer::Create("a\xEF\xBF\xBD").status().message(), HasSubstr("U+FFFD"));
  EXPECT_EQ(CharTokenizer::Create("a\xFF").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CharTokenizer, SavesAndLoads) {
  auto tok = CharTokenizer::Create("xyz\n\t\"\\\xC3\xA9");
  ASSERT_TRUE(tok.ok());
  const std::string dir = TempDir("char_save");
  ASSERT_TRUE((*tok)->Save(dir).ok());
  auto loaded = LoadTokenizer(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->vocab_size(), (*tok)->vocab_size());
  EXPECT_EQ((*loaded)->eos_id(), 2);
  const std::string text = "zyx\n\t\"\\\xC3\xA9<eos>";
  EXPECT_EQ(*(*loaded)->Encode(text), *(*tok)->Encode(text));

  auto def = CharTokenizer::CreateDefault();
  const std::string dir2 = TempDir("char_default");
  ASSERT_TRUE(def->Save(dir2).ok());
  auto reloaded = CharTokenizer::Load(dir2);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ((*reloaded)->ToJson(), def->ToJson());
}

TEST(CharTokenizer, MalformedFilesNameTheField) {
  auto parse = [](const std::string& json) {
    return CharTokenizer::FromJson(json, "dir/rhythm_tokenizer.json").status();
  };
  const std::string special = R"("special_tokens": ["<pad>", "<bos>", "<eos>", "<unk>"])";
  EXPECT_THAT(parse("{").message(), HasSubstr("dir/rhythm_tokenizer.json: (document)"));
  EXPECT_THAT(parse(R"({"version": 1})").message(), HasSubstr("type: missing"));
  EXPECT_THAT(parse(R"({"type": "bpe", "version": 1})").message(), HasSubstr("type: expected"));
  EXPECT_THAT(parse(R"({"type": "rhythm_char", "version": 2})").message(),
              HasSubstr("version: expected 1"));
  EXPECT_THAT(
      parse(R"({"type": "rhythm_char", "version": 1, "special_tokens": ["<pad>"]})").message(),
      HasSubstr("special_tokens: expected"));
  EXPECT_THAT(parse(R"({"type": "rhythm_char", "version": 1, )" + special + "}").message(),
              HasSubstr("alphabet: missing"));
  EXPECT_THAT(
      parse(R"({"type": "rhythm_char", "version": 1, )" + special + R"(, "alphabet": ["a", "bc"]})")
          .message(),
      HasSubstr("alphabet[1]: expected exactly one character"));
  EXPECT_THAT(
      parse(R"({"type": "rhythm_char", "version": 1, )" + special + R"(, "alphabet": ["a", "a"]})")
          .message(),
      HasSubstr("alphabet: alphabet[1] = U+0061 repeats"));
  EXPECT_EQ(parse("[]").code(), absl::StatusCode::kInvalidArgument);
}

// Found while fuzzing (fuzz/): "type: expected ..., got <value>" quoted a value nested
// 100,000 deep and overflowed the stack in nlohmann's dump().
TEST(CharTokenizer, DeepNestingIsAnErrorNotAStackOverflow) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  absl::Status s =
      CharTokenizer::FromJson(R"({"type": )" + deep + "}", "d/rhythm_tokenizer.json").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("d/rhythm_tokenizer.json: (document): nests deeper than 64"));
}

TEST(LoadTokenizer, NotFoundNamesTheDirectory) {
  const std::string dir = TempDir("empty");
  auto tok = LoadTokenizer(dir);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tok.status().message(), HasSubstr(dir));
}

TEST(LoadTokenizer, MalformedFileNamesThePath) {
  const std::string dir = TempDir("bad_char");
  std::ofstream(dir + "/rhythm_tokenizer.json") << R"({"type": "rhythm_char"})";
  auto tok = LoadTokenizer(dir);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr(dir + "/rhythm_tokenizer.json: version"));
}

}  // namespace
}  // namespace rhythm::common

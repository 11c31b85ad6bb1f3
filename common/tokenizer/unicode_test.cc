#include "common/tokenizer/unicode.h"

#include <string>

#include "gtest/gtest.h"

namespace rhythm::common::tokenizer_internal {
namespace {

TEST(Utf8, FindsTheFirstInvalidByte) {
  EXPECT_EQ(FindInvalidUtf8(""), kValidUtf8);
  EXPECT_EQ(FindInvalidUtf8("plain ascii text, long enough for the fast path"), kValidUtf8);
  EXPECT_EQ(FindInvalidUtf8("h\xC3\xA9llo \xE4\xBD\xA0 \xF0\x9F\x98\x80"), kValidUtf8);
  EXPECT_EQ(FindInvalidUtf8("abc\x80"), 3u);                       // lone continuation byte
  EXPECT_EQ(FindInvalidUtf8("abcdefghij\xC0\xAF"), 10u);           // overlong '/'
  EXPECT_EQ(FindInvalidUtf8("\xED\xA0\x80"), 0u);                  // surrogate U+D800
  EXPECT_EQ(FindInvalidUtf8("\xF4\x90\x80\x80"), 0u);              // above U+10FFFF
  EXPECT_EQ(FindInvalidUtf8("ok\xE4\xBD"), 2u);                    // truncated at the end
  EXPECT_EQ(FindInvalidUtf8(std::string("a\0b", 3)), kValidUtf8);  // NUL is valid
}

TEST(Utf8, CheckNamesTheOffsetAndByte) {
  const absl::Status s = CheckUtf8("ab\xFF", "text");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "text is not valid UTF-8 at byte 2 (0xff)");
}

TEST(Utf8, LossyReplacesMaximalSubparts) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(Utf8Lossy("caf\xC3\xA9"), "caf\xC3\xA9");
  EXPECT_EQ(Utf8Lossy("\xF0\x9F\x98"), fffd);  // one maximal subpart
  EXPECT_EQ(Utf8Lossy("\xF0\x9F\x98"
                      "A"),
            fffd + "A");
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), fffd + fffd + fffd);  // ED A0: A0 cannot follow ED
  EXPECT_EQ(Utf8Lossy("\xC0\xAF"), fffd + fffd);
  EXPECT_EQ(Utf8Lossy("\xE2\x82\xE2\x82\xAC"), fffd + "\xE2\x82\xAC");
  EXPECT_EQ(Utf8Lossy("\x80\x80"), fffd + fffd);
}

TEST(Utf8, DecodeAndAppendRoundTrip) {
  for (char32_t cp : {U'\0', U'A', U'\u00E9', U'\u4F60', U'\U0001F600', U'\U0010FFFF'}) {
    std::string s;
    AppendUtf8(cp, &s);
    int len = 0;
    EXPECT_EQ(DecodeUtf8At(s, 0, &len), cp);
    EXPECT_EQ(static_cast<size_t>(len), s.size());
  }
}

TEST(Unicode, WhiteSpaceIsUnicodeWhiteSpace) {
  for (char32_t cp : {U' ', U'\t', U'\n', U'\r', U'\u0085', U'\u00A0', U'\u2028', U'\u3000'}) {
    EXPECT_TRUE(IsWhiteSpace(cp)) << static_cast<uint32_t>(cp);
  }
  for (char32_t cp : {U'a', U'\u180E', U'\uFEFF', U'\u200B'}) {
    EXPECT_FALSE(IsWhiteSpace(cp)) << static_cast<uint32_t>(cp);
  }
}

TEST(Unicode, WordChars) {
  EXPECT_TRUE(IsWordChar(U'a'));
  EXPECT_TRUE(IsWordChar(U'_'));
  EXPECT_TRUE(IsWordChar(U'7'));
  EXPECT_TRUE(IsWordChar(U'\u4F60'));
  EXPECT_TRUE(IsWordChar(U'\u0301'));  // combining mark
  EXPECT_FALSE(IsWordChar(U' '));
  EXPECT_FALSE(IsWordChar(U'-'));
  EXPECT_FALSE(IsWordChar(U'\U0001F600'));
}

TEST(Unicode, NfcComposes) {
  EXPECT_EQ(*NfcNormalize("e\xCC\x81"), "\xC3\xA9");                // e + U+0301 -> é
  EXPECT_EQ(*NfcNormalize("\xE2\x84\xAB"), "\xC3\x85");             // Angstrom sign -> Å
  EXPECT_EQ(*NfcNormalize("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"),  // conjoining jamo -> 각
            "\xEA\xB0\x81");
  EXPECT_EQ(*NfcNormalize("plain"), "plain");
  EXPECT_EQ(*NfcNormalize(""), "");
}

}  // namespace
}  // namespace rhythm::common::tokenizer_internal

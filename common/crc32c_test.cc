#include "common/crc32c.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace rhythm::common {
namespace {

using crc32c_internal::ExtendHardware;
using crc32c_internal::ExtendPortable;
using crc32c_internal::HardwareAvailable;

// The definition, one bit at a time: no tables, no hardware.
uint32_t ReferenceCrc32c(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? 0x82F63B78u : 0u);
  }
  return ~crc;
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

std::string Bytes(std::initializer_list<int> values) {
  std::string s;
  for (int v : values) s.push_back(static_cast<char>(v));
  return s;
}

TEST(Crc32c, StandardCheckValue) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(ReferenceCrc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c(nullptr, 0), 0u);
}

// RFC 3720 (iSCSI) appendix B.4 test vectors, as in leveldb's crc32c_test.
TEST(Crc32c, Rfc3720Vectors) {
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending, descending;
  for (int i = 0; i < 32; ++i) {
    ascending.push_back(static_cast<char>(i));
    descending.push_back(static_cast<char>(31 - i));
  }
  EXPECT_EQ(Crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(Crc32c(descending), 0x113FDB5Cu);
  const std::string iscsi_read_pdu =
      Bytes({0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
             0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
             0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
             0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00});
  EXPECT_EQ(Crc32c(iscsi_read_pdu), 0xD9963A56u);
}

TEST(Crc32c, PointerOverloadMatchesStringView) {
  const std::string data = RandomBytes(1000, 7);
  EXPECT_EQ(Crc32c(data.data(), data.size()), Crc32c(data));
}

// Every length 0..300 at every alignment 0..15 exercises the 8-byte main loops, their tails and
// unaligned starts of both implementations.
TEST(Crc32c, PortableMatchesBitwiseReferenceAtAllLengthsAndAlignments) {
  const std::string buffer = RandomBytes(300 + 16, 1);
  for (size_t align = 0; align < 16; ++align) {
    for (size_t len = 0; len <= 300; ++len) {
      const std::string piece = buffer.substr(align, len);
      ASSERT_EQ(ExtendPortable(0, buffer.data() + align, len), ReferenceCrc32c(piece))
          << "align=" << align << " len=" << len;
    }
  }
}

TEST(Crc32c, HardwareMatchesBitwiseReferenceAtAllLengthsAndAlignments) {
  if (!HardwareAvailable()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  const std::string buffer = RandomBytes(300 + 16, 2);
  for (size_t align = 0; align < 16; ++align) {
    for (size_t len = 0; len <= 300; ++len) {
      const std::string piece = buffer.substr(align, len);
      ASSERT_EQ(ExtendHardware(0, buffer.data() + align, len), ReferenceCrc32c(piece))
          << "align=" << align << " len=" << len;
    }
  }
}

TEST(Crc32c, HardwareAndPortableAgreeOnLargeBuffers) {
  if (!HardwareAvailable()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  for (uint32_t seed = 0; seed < 4; ++seed) {
    const std::string data = RandomBytes((1 << 20) + seed * 13, seed);
    const uint32_t portable = ExtendPortable(0, data.data(), data.size());
    EXPECT_EQ(ExtendHardware(0, data.data(), data.size()), portable);
    EXPECT_EQ(Crc32c(data), portable);
  }
  // Chaining from a non-zero CRC too, below and above the three-lane block (12 KiB), and at
  // the block boundaries.
  for (size_t n : {4099, 12287, 12288, 12289, 3 * 12288, 100003}) {
    const std::string data = RandomBytes(n, 9);
    EXPECT_EQ(ExtendHardware(0xDEADBEEFu, data.data(), data.size()),
              ExtendPortable(0xDEADBEEFu, data.data(), data.size()))
        << n;
  }
}

TEST(Crc32c, ExtendEqualsCrcOfConcatenationAtEverySplit) {
  const std::string data = RandomBytes(200, 3);
  const uint32_t whole = ReferenceCrc32c(data);
  for (size_t split = 0; split <= data.size(); ++split) {
    const absl::string_view a(data.data(), split);
    const absl::string_view b(data.data() + split, data.size() - split);
    ASSERT_EQ(Crc32cExtend(Crc32c(a), b), whole) << "split=" << split;
    ASSERT_EQ(ExtendPortable(ExtendPortable(0, a.data(), a.size()), b.data(), b.size()), whole)
        << "split=" << split;
  }
  EXPECT_EQ(Crc32cExtend(0, data), whole);
}

TEST(Crc32c, DetectsEverySingleBitFlip) {
  const std::string data = RandomBytes(64, 4);
  const uint32_t original = Crc32c(data);
  for (size_t i = 0; i < data.size() * 8; ++i) {
    std::string flipped = data;
    flipped[i / 8] = static_cast<char>(flipped[i / 8] ^ (1 << (i % 8)));
    ASSERT_NE(Crc32c(flipped), original) << "bit " << i;
  }
}

}  // namespace
}  // namespace rhythm::common

#include "common/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace rhythm::common {
namespace crc32c_internal {
namespace {

constexpr uint32_t kPolynomial = 0x82F63B78u;  // reflected Castagnoli

using Tables = std::array<std::array<uint32_t, 256>, 8>;

// Slicing-by-8: table[0] is the classic byte-at-a-time table; table[k][b] is the CRC of byte b
// followed by k zero bytes, so eight table lookups advance the CRC by eight bytes.
constexpr Tables MakeTables() {
  Tables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t crc = b;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? kPolynomial : 0u);
    t[0][b] = crc;
  }
  for (int k = 1; k < 8; ++k) {
    for (uint32_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFFu];
  }
  return t;
}

constexpr Tables kTables = MakeTables();

inline uint32_t LoadLe32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

}  // namespace

uint32_t ExtendPortable(uint32_t crc, const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  while (size >= 8) {
    const uint32_t lo = c ^ LoadLe32(p);
    const uint32_t hi = LoadLe32(p + 4);
    c = kTables[7][lo & 0xFF] ^ kTables[6][(lo >> 8) & 0xFF] ^ kTables[5][(lo >> 16) & 0xFF] ^
        kTables[4][lo >> 24] ^ kTables[3][hi & 0xFF] ^ kTables[2][(hi >> 8) & 0xFF] ^
        kTables[1][(hi >> 16) & 0xFF] ^ kTables[0][hi >> 24];
    p += 8;
    size -= 8;
  }
  while (size-- > 0) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xFF];
  return ~c;
}

#if defined(__x86_64__)

// One lane over `words` 8-byte words from register state `c` (the inverted CRC).
__attribute__((target("sse4.2"))) inline uint64_t Lane(uint64_t c, const uint8_t* p, size_t words) {
  for (size_t i = 0; i < words; ++i) {
    uint64_t word;
    std::memcpy(&word, p + 8 * i, 8);  // unaligned-safe load; x86 is little-endian like the CRC
    c = _mm_crc32_u64(c, word);
  }
  return c;
}

// Bytes per lane of the three-lane loop.
constexpr size_t kLaneBytes = 4096;

// The register after kLaneBytes zero bytes, as a linear map: column i is the result for state
// 1 << i, so Shift(x) is the XOR of the columns of x's set bits.
struct LaneShift {
  uint32_t column[32];
  __attribute__((target("sse4.2"))) LaneShift() {
    static const uint8_t zeros[kLaneBytes] = {};
    for (int i = 0; i < 32; ++i) {
      column[i] = static_cast<uint32_t>(Lane(uint64_t{1} << i, zeros, kLaneBytes / 8));
    }
  }
  uint32_t operator()(uint32_t x) const {
    uint32_t r = 0;
    for (int i = 0; i < 32; ++i) {
      if (x & (1u << i)) r ^= column[i];
    }
    return r;
  }
};

__attribute__((target("sse4.2"))) uint32_t ExtendHardware(uint32_t crc, const void* data,
                                                          size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t c = static_cast<uint32_t>(~crc);
  // The instruction has a 3-cycle latency and a throughput of one per cycle: three independent
  // lanes (A, B, C of one block) run about three times faster than one. The register is linear
  // in its state, so crc(s, A B C) = Shift(Shift(crc(s, A)) ^ crc(0, B)) ^ crc(0, C).
  if (size >= 3 * kLaneBytes) {
    static const LaneShift shift;
    while (size >= 3 * kLaneBytes) {
      uint64_t a = c, b = 0, d = 0;
      for (size_t i = 0; i < kLaneBytes / 8; ++i) {
        uint64_t wa, wb, wd;
        std::memcpy(&wa, p + 8 * i, 8);
        std::memcpy(&wb, p + kLaneBytes + 8 * i, 8);
        std::memcpy(&wd, p + 2 * kLaneBytes + 8 * i, 8);
        a = _mm_crc32_u64(a, wa);
        b = _mm_crc32_u64(b, wb);
        d = _mm_crc32_u64(d, wd);
      }
      c = shift(shift(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^
          static_cast<uint32_t>(d);
      p += 3 * kLaneBytes;
      size -= 3 * kLaneBytes;
    }
  }
  c = Lane(c, p, size / 8);
  p += size / 8 * 8;
  size %= 8;
  auto c32 = static_cast<uint32_t>(c);
  while (size-- > 0) c32 = _mm_crc32_u8(c32, *p++);
  return ~c32;
}

bool HardwareAvailable() { return __builtin_cpu_supports("sse4.2"); }

#else  // !__x86_64__

uint32_t ExtendHardware(uint32_t crc, const void* data, size_t size) {
  return ExtendPortable(crc, data, size);
}

bool HardwareAvailable() { return false; }

#endif

}  // namespace crc32c_internal

uint32_t Crc32cExtend(uint32_t crc, absl::string_view data) {
  static const bool hardware = crc32c_internal::HardwareAvailable();
  return hardware ? crc32c_internal::ExtendHardware(crc, data.data(), data.size())
                  : crc32c_internal::ExtendPortable(crc, data.data(), data.size());
}

uint32_t Crc32c(absl::string_view data) { return Crc32cExtend(0, data); }

uint32_t Crc32c(const void* data, size_t size) {
  return Crc32cExtend(0, absl::string_view(static_cast<const char*>(data), size));
}

}  // namespace rhythm::common

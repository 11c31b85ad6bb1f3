// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum gRPC, leveldb, ext4 and
// iSCSI use. rhythm checksums every record of the learner's rollout log with it.
//
// Values are the standard, finalized CRC (init 0xFFFFFFFF, final xor 0xFFFFFFFF), so
// Crc32c("123456789") == 0xE3069283, and they chain:
//
//   Crc32cExtend(Crc32c(a), b) == Crc32c(a + b)      Crc32c("") == 0
//
// On x86-64 CPUs with SSE4.2 the hardware crc32 instruction is used (checked once, at first
// call, with __builtin_cpu_supports); everywhere else a portable slicing-by-8 table. Both give
// identical results.
//
// Thread-safe: pure functions; the tables are constants built at compile time.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace rhythm::common {

// The CRC-32C of `data`.
uint32_t Crc32c(absl::string_view data);
uint32_t Crc32c(const void* data, size_t size);

// The CRC-32C of X + `data`, given `crc` == Crc32c(X). Crc32cExtend(0, d) == Crc32c(d).
uint32_t Crc32cExtend(uint32_t crc, absl::string_view data);

namespace crc32c_internal {

// The two implementations behind the functions above, exposed so tests can check them against
// each other. Same contract as Crc32cExtend. ExtendHardware may only be called when
// HardwareAvailable() is true (it executes SSE4.2 instructions).
uint32_t ExtendPortable(uint32_t crc, const void* data, size_t size);
uint32_t ExtendHardware(uint32_t crc, const void* data, size_t size);
// True when this build targets x86-64 and the CPU supports SSE4.2.
bool HardwareAvailable();

}  // namespace crc32c_internal
}  // namespace rhythm::common

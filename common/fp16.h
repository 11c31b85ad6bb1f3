// IEEE half precision (fp16) packing for attention summaries on the wire: little-endian, 2 bytes
// per value, round to nearest even, NaN kept (it marks an undefined FAI). Stateless.
#pragma once

#include <string>
#include <vector>

namespace rhythm::common {

// Packed fp16 bytes -> floats (a trailing odd byte is ignored).
std::vector<float> DecodeFp16(const std::string& bytes);
// Floats -> packed fp16 bytes; values beyond the fp16 range become infinities.
std::string EncodeFp16(const std::vector<float>& values);

}  // namespace rhythm::common

// UTF-8 validation shared by the tokenizers and the task verifiers: the one place that knows
// which byte sequences are well-formed (no overlongs, no surrogates, nothing above U+10FFFF).
// Stateless.
#pragma once

#include <cstddef>

#include "absl/strings/string_view.h"

namespace rhythm::common {

// Length (1-4) of the valid UTF-8 sequence at text[pos], or 0 if none starts there. When 0,
// *subpart is the length of the maximal invalid subpart (>= 1), which Unicode's "U+FFFD per
// maximal subpart" replacement consumes. `pos` must be < text.size().
int Utf8SequenceAt(absl::string_view text, size_t pos, int* subpart);

}  // namespace rhythm::common

// JSON from the files rhythm loads (config.json, safetensors headers and indexes, tokenizer.json,
// tokenizer_config.json, rhythm_tokenizer.json), parsed with a bound on nesting.
//
// nlohmann::json parses any depth without recursion, but dump(), copies and comparisons of
// the result recurse once per level: an error message quoting `"rope_scaling": [[[...]]]`
// nested 200,000 deep (400 KB) overflowed the stack (found with fuzz/fuzz_hf_config). No file
// rhythm reads nests deeper than 5, so deeper than kMaxJsonDepth is refused at parse time.
// Header-only; stateless and thread-safe.
#pragma once

#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace rhythm::common {

inline constexpr int kMaxJsonDepth = 64;

// Parses `text` as json::parse(text, nullptr, /*allow_exceptions=*/false) does: a discarded
// value when it is not JSON. *too_deep is set, and the value is discarded too, when an array
// or object nests deeper than kMaxJsonDepth.
inline nlohmann::json ParseJsonBounded(absl::string_view text, bool* too_deep) {
  *too_deep = false;
  nlohmann::json j = nlohmann::json::parse(
      text.begin(), text.end(),
      [too_deep](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
        if (depth <= kMaxJsonDepth) return true;
        *too_deep = true;
        return false;  // drops the deep value: nothing deep is ever built
      },
      /*allow_exceptions=*/false);
  if (*too_deep) return nlohmann::json(nlohmann::json::value_t::discarded);
  return j;
}

}  // namespace rhythm::common

// PromptSource: where the learner's training prompts come from (the task's training stream,
// by index, deterministic). Plain types only; learner/main.cc builds one from the task.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace rhythm::learner {

struct PromptSpec {
  uint64_t prompt_id = 0;
  std::string text;
  std::vector<uint32_t> token_ids;
  std::string answer;
  // Non-empty when the prompt cannot be generated for (e.g. "unencodable", "too_long"): it is
  // never lent. `skip_detail` says why, for the log.
  std::string skip_reason;
  std::string skip_detail;
};
using PromptSource = std::function<PromptSpec(uint64_t index)>;

}  // namespace rhythm::learner

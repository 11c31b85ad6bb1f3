// PromptSource: where the learner's training prompts come from (the task's training stream,
// by index, deterministic), and TaskPromptSource, the one the learner uses: the task's training
// problems encoded by the model's tokenizer, with the skip policy. Plain types in this header.
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

namespace rhythm::common {
class Tokenizer;
namespace tasks {
class Task;
}  // namespace tasks
}  // namespace rhythm::common

namespace rhythm::learner {

// Training problem `index` of `task`, encoded by `tokenizer`. A prompt that cannot be encoded
// ("unencodable") or is longer than `max_prompt_tokens` ("too_long": it would leave no room for
// the response in the model's context) is skipped, never lent: an actor could not generate for
// it. `task` and `tokenizer` must outlive the source.
PromptSource TaskPromptSource(const common::tasks::Task& task, const common::Tokenizer& tokenizer,
                              int64_t max_prompt_tokens);

}  // namespace rhythm::learner

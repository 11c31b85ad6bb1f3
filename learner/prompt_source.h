// PromptSource: where the learner's training prompts come from (the task's training stream,
// by index, deterministic), and TaskPromptSource, the one the learner uses: the task's training
// problems rendered by the task's PromptFormatter (task.prompt_format) and encoded by the model's
// tokenizer, with the skip policy. Plain types in this header.
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
class PromptFormatter;
}  // namespace tasks
}  // namespace rhythm::common

namespace rhythm::learner {

// Training problem `index` of `task`, rendered by `format` (PromptSpec.text is the rendered
// text: what the model sees) and encoded by `tokenizer`. A prompt that cannot be encoded
// ("unencodable") or is longer than `max_prompt_tokens` ("too_long": it would leave no room for
// the response in the model's context) is skipped, never lent: an actor could not generate for
// it. `task`, `tokenizer` and `format` must outlive the source.
PromptSource TaskPromptSource(const common::tasks::Task& task, const common::Tokenizer& tokenizer,
                              const common::tasks::PromptFormatter& format,
                              int64_t max_prompt_tokens);

}  // namespace rhythm::learner

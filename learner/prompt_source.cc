#include "learner/prompt_source.h"

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/tasks/prompt_format.h"
#include "common/tasks/task.h"
#include "common/tokenizer/tokenizer.h"

namespace rhythm::learner {

PromptSource TaskPromptSource(const common::tasks::Task& task, const common::Tokenizer& tokenizer,
                              const common::tasks::PromptFormatter& format,
                              int64_t max_prompt_tokens) {
  return [&task, &tokenizer, &format, max_prompt_tokens](uint64_t index) {
    const common::tasks::Problem p = task.TrainProblem(index);
    PromptSpec spec{p.id, format.Render(p.prompt), {}, p.answer, "", ""};
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(spec.text);
    if (!ids.ok()) {
      spec.skip_reason = "unencodable";
      spec.skip_detail = std::string(ids.status().message());
      return spec;
    }
    if (static_cast<int64_t>(ids->size()) > max_prompt_tokens) {
      spec.skip_reason = "too_long";
      spec.skip_detail = absl::StrCat(ids->size(), " tokens; at most ", max_prompt_tokens,
                                      " leave room for generation.max_new_tokens in the model's "
                                      "max_position_embeddings");
      return spec;
    }
    for (int32_t id : *ids) spec.token_ids.push_back(static_cast<uint32_t>(id));
    return spec;
  };
}

}  // namespace rhythm::learner

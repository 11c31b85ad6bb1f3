#include "common/tasks/prompt_format.h"

#include <optional>

#include "absl/strings/str_cat.h"

namespace rhythm::common::tasks {

absl::StatusOr<PromptFormatter> PromptFormatter::Create(const v1::TaskConfig& task,
                                                        const Tokenizer& tokenizer) {
  PromptFormatter f;
  f.format_ = task.prompt_format();
  f.system_prompt_ = task.system_prompt();
  switch (task.prompt_format()) {
    case v1::PROMPT_FORMAT_UNSPECIFIED:
    case v1::PROMPT_FORMAT_VERBATIM:
      f.format_ = v1::PROMPT_FORMAT_VERBATIM;
      return f;
    case v1::PROMPT_FORMAT_CHAT: {
      const std::optional<ChatTemplateFiles> files = tokenizer.chat_template_files();
      if (!files.has_value()) {
        return absl::InvalidArgumentError(
            "task.prompt_format=chat needs the model's chat template (tokenizer_config.json), "
            "but the model's tokenizer is rhythm's character tokenizer (rhythm_tokenizer.json), "
            "which has none; use task.prompt_format=verbatim, or custom with "
            "task.prompt_template");
      }
      absl::StatusOr<ChatTemplate> chat = ChatTemplateFromFiles(*files);
      if (!chat.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("task.prompt_format=chat: ", chat.status().message()));
      }
      f.chat_ = *std::move(chat);
      f.description_ = absl::StrCat("chat (", f.chat_.name, ")");
      return f;
    }
    case v1::PROMPT_FORMAT_CUSTOM: {
      if (absl::Status s = CheckPromptTemplate(task.prompt_template(), "task.prompt_template");
          !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("task.prompt_format=custom: ", s.message()));
      }
      f.prompt_template_ = task.prompt_template();
      f.description_ = "custom";
      return f;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("task.prompt_format ", static_cast<int>(task.prompt_format()),
                       " is not a prompt format; use verbatim, chat or custom"));
  }
}

std::string PromptFormatter::Render(absl::string_view prompt) const {
  switch (format_) {
    case v1::PROMPT_FORMAT_CHAT:
      return RenderChat(chat_, system_prompt_, prompt);
    case v1::PROMPT_FORMAT_CUSTOM:
      return RenderPromptTemplate(prompt_template_, system_prompt_, prompt);
    default:
      return std::string(prompt);
  }
}

absl::StatusOr<std::vector<int32_t>> PromptFormatter::Encode(const Tokenizer& tokenizer,
                                                             absl::string_view prompt) const {
  if (format_ == v1::PROMPT_FORMAT_VERBATIM) return tokenizer.Encode(prompt);
  return tokenizer.Encode(Render(prompt));
}

}  // namespace rhythm::common::tasks

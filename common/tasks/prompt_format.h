// PromptFormatter: how a task's prompts become model input (TaskConfig.prompt_format). The one
// place where a problem's prompt is turned into the text and ids a model sees; the learner's
// prompt source, `rhythm sft` / `eval` (and the held-out evaluations of `rhythm train`, which go
// through EvaluateProblems) and `rhythm generate --chat` all encode through it.
//
//   verbatim (default)  the prompt as the task writes it: the built-in countdown / arithmetic
//                       tasks on the character tokenizer, or a dataset of raw prompts.
//   chat                the model's chat template (common/tokenizer/chat_template.h, read from
//                       the tokenizer's tokenizer_config.json / chat_template.jinja): an optional
//                       system turn (task.system_prompt), the prompt as the one user turn, then
//                       the generation prompt ("<|im_start|>assistant\n" for Qwen).
//   custom              task.prompt_template, with {system} -> task.system_prompt and
//                       {prompt} -> the prompt: for a template rhythm does not recognise.
//
// Special tokens written in the rendered text are encoded as their single ids (HF semantics).
// The format applies to every task kind, but the built-in tasks are meant for verbatim prompts.
//
// Thread-safety: immutable after Create; Render and Encode are safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tokenizer/chat_template.h"
#include "common/tokenizer/tokenizer.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::common::tasks {

class PromptFormatter {
 public:
  // Verbatim.
  PromptFormatter() = default;

  // The formatter `task` asks for, with the chat template of `tokenizer` for prompt_format chat.
  // INVALID_ARGUMENT (one line, naming the field or file and the value) for chat with a
  // tokenizer that has no chat template (the character tokenizer, a model without
  // tokenizer_config.json or without "chat_template") or with one rhythm does not recognise;
  // for custom without a {prompt} in task.prompt_template; for an unknown prompt_format.
  static absl::StatusOr<PromptFormatter> Create(const v1::TaskConfig& task,
                                                const Tokenizer& tokenizer);

  // What the model sees for `prompt`.
  std::string Render(absl::string_view prompt) const;
  // tokenizer.Encode(Render(prompt)); `tokenizer` is the one Create was given.
  absl::StatusOr<std::vector<int32_t>> Encode(const Tokenizer& tokenizer,
                                              absl::string_view prompt) const;

  // "verbatim", "chat (ChatML)", "chat (Llama 3.1)", "custom", for logs.
  const std::string& description() const { return description_; }

 private:
  v1::PromptFormat format_ = v1::PROMPT_FORMAT_VERBATIM;
  ChatTemplate chat_;
  std::string system_prompt_;
  std::string prompt_template_;
  std::string description_ = "verbatim";
};

}  // namespace rhythm::common::tasks

// Chat templates: a model's Hugging Face chat template, recognised from its text and rendered
// natively for the one conversation rhythm needs, (optional system turn, one user turn) with
// the generation prompt appended. No Jinja interpreter: a template is recognised by the
// distinctive pieces of its Jinja source, and anything else is an error, not a guess.
//
// Recognised families (the "why" of each decision is in the .cc):
//
//   ChatML (Qwen2, Qwen2.5, Qwen3, and ChatML fine-tunes that write turns the same way)
//     [<|im_start|>system\n{system}<|im_end|>\n]<|im_start|>user\n{prompt}<|im_end|>\n
//     <|im_start|>assistant\n
//     With no system prompt, the template's own default system turn is written if it has one
//     (Qwen2: "You are a helpful assistant.", Qwen2.5: "You are Qwen, created by Alibaba Cloud.
//     You are a helpful assistant."); Qwen3 has none. Qwen3's generation prompt is exactly
//     "<|im_start|>assistant\n": its "<think>\n\n</think>\n\n" is added only when the caller
//     sets enable_thinking=false, which HF does not by default, so the model thinks, as it does
//     under HF apply_chat_template(add_generation_prompt=True). Text is not trimmed.
//   Llama 3 (3.0 Instruct), Llama 3.1 / 3.2 / 3.3 (the "Cutting Knowledge Date" templates)
//     {bos}[<|start_header_id|>system<|end_header_id|>\n\n{preamble}{system}<|eot_id|>]
//     <|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>
//     <|start_header_id|>assistant<|end_header_id|>\n\n
//     {bos} is tokenizer_config.json's bos_token. System and prompt are trimmed (Jinja's
//     `| trim`, Python's str.strip()). 3.0 writes a system turn only for a system prompt. 3.1+
//     always write one, with the preamble "Cutting Knowledge Date: December 2023\nToday Date:
//     26 Jul 2024\n\n": the template's own fallback date_string. Llama 3.2's template uses
//     today's date when transformers provides strftime_now; rhythm keeps the fixed date so that
//     a dataset's prompts (and their ids) do not change from one day to the next.
//
// Anything else (QwQ's and DeepSeek-R1's "<think>\n" after the generation prompt, Mistral,
// Gemma, Phi, a template that writes turns differently) is INVALID_ARGUMENT naming the file and
// quoting the template, and saying to set task.prompt_format=custom with task.prompt_template,
// whose {system} and {prompt} placeholders give the rendered format explicitly.
//
// Special tokens in the rendered text ("<|im_start|>", "<|begin_of_text|>") are encoded as their
// single ids by HfBpeTokenizer::Encode, which splits on added tokens first, exactly as HF
// tokenizes the output of apply_chat_template (so a prompt that itself contains "<|im_end|>" is
// encoded as that special token, as in HF).
//
// Thread-safety: pure functions on values.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tokenizer/tokenizer.h"

namespace rhythm::common {

enum class ChatFamily { kChatMl, kLlama3 };

// A recognised template: everything rendering needs.
struct ChatTemplate {
  ChatFamily family = ChatFamily::kChatMl;
  // "ChatML", "ChatML with a default system prompt", "Llama 3", "Llama 3.1": for logs.
  std::string name;
  // ChatML: the system text written when there is no system prompt ("" = no system turn).
  std::string default_system;
  // Llama 3: written first (bos_token).
  std::string bos;
  // Llama 3.1+: the system turn is always written and starts with this ("Cutting Knowledge
  // Date: December 2023\nToday Date: 26 Jul 2024\n\n"). Empty for Llama 3.0.
  std::string system_preamble;
};

// Recognises `chat_template` (the Jinja source). `bos_token` is tokenizer_config.json's (needed
// when the template writes bos_token). `source` names the file in errors. INVALID_ARGUMENT as
// described above.
absl::StatusOr<ChatTemplate> RecognizeChatTemplate(absl::string_view chat_template,
                                                   absl::string_view bos_token,
                                                   absl::string_view source);

// The model's template from its tokenizer files: chat_template.jinja if there is one, else
// tokenizer_config.json "chat_template" (a string, or a list of {"name", "template"} of which
// "default" is used), recognised. INVALID_ARGUMENT, naming the file (and field), when
// tokenizer_config.json is missing, not JSON, has no usable chat_template, or the template is
// not recognised.
absl::StatusOr<ChatTemplate> ChatTemplateFromFiles(const ChatTemplateFiles& files);

// The rendered conversation: `system` (empty = none) and `user`, then the generation prompt.
std::string RenderChat(const ChatTemplate& tmpl, absl::string_view system, absl::string_view user);

// task.prompt_template: OK if `prompt_template` contains "{prompt}"; INVALID_ARGUMENT naming
// `field` and quoting the value otherwise.
absl::Status CheckPromptTemplate(absl::string_view prompt_template, absl::string_view field);
// `prompt_template` with every "{system}" replaced by `system` and every "{prompt}" by `prompt`,
// in one left-to-right pass (replaced text is not scanned again; other braces are literal).
std::string RenderPromptTemplate(absl::string_view prompt_template, absl::string_view system,
                                 absl::string_view prompt);

// Python's str.strip() (what Jinja's `trim` does in HF transformers): removes leading and
// trailing Unicode whitespace (str.isspace: ASCII \t\n\v\f\r, \x1c-\x1f, space, U+0085, U+00A0,
// U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000). `text` must be UTF-8.
absl::string_view PythonStrip(absl::string_view text);

}  // namespace rhythm::common

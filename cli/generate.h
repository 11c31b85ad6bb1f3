// `rhythm generate`: sample from a Hugging Face model directory with the rollout engine and
// print the text, or with --json one object per sample including the attention summary.
// `rhythm init-model`: write a randomly initialised tiny model (model.tiny in the config) with
// rhythm's character tokenizer, as a Hugging Face directory; rhythm's own tasks start from it.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "common/flags.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::cli {

struct GenerateFlags {
  std::string model, prompt, prompt_ids, max_new_tokens, temperature, samples, tap_layers, window,
      fai_band, head_quantile, out;
  bool json = false;
  bool reference = false;
  // Render --prompt through the model's chat template (task.system_prompt as the system turn;
  // task.prompt_template instead when task.prompt_format is custom), as training does with
  // task.prompt_format=chat. See common/tasks/prompt_format.h.
  bool chat = false;
};

// Registers the flags of `generate` and `init-model` (--model, --prompt, --prompt-ids,
// --max-new-tokens, --temperature, --samples, --tap-layers, --window, --fai-band,
// --head-quantile, --json, --reference, --chat, --out). Numeric shortcuts are config keys and are
// validated as such.
void RegisterGenerateFlags(common::FlagParser& parser, GenerateFlags& flags);

// Applies the numeric shortcuts (--max-new-tokens, --temperature, --samples, --tap-layers,
// --window, --fai-band, --head-quantile) to `config` as config keys, and validates the bounds.
// INVALID_ARGUMENT names the flag or key and the value.
absl::Status ApplyGenerateShortcuts(const GenerateFlags& flags, v1::RhythmConfig& config);

// Exit code 0 on success, 2 for bad arguments, 1 when generation fails.
int RunGenerate(const GenerateFlags& flags, v1::RhythmConfig config);
int RunInitModel(const GenerateFlags& flags, const v1::RhythmConfig& config);

}  // namespace rhythm::cli

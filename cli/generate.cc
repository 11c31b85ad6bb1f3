#include "cli/generate.h"

#include <cmath>
#include <filesystem>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/config.h"
#include "common/model/hf_checkpoint.h"
#include "common/model/load_model.h"
#include "common/rollout/engine.h"
#include "common/runtime.h"
#include "common/tasks/prompt_format.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace rhythm::cli {
namespace {

using nlohmann::json;

int Fail(const std::string& message, int code = 2) {
  std::cerr << "rhythm: " << message << "\n";
  return code;
}

const char* FinishName(common::rollout::FinishReason r) {
  switch (r) {
    case common::rollout::FinishReason::kEos:
      return "eos";
    case common::rollout::FinishReason::kStopString:
      return "stop_string";
    case common::rollout::FinishReason::kLength:
      return "length";
  }
  return "?";
}

json PairsOf(const std::vector<int64_t>& flat, const common::rollout::AttentionSummary& s) {
  json out = json::array();
  for (int64_t h : flat) {
    out.push_back({s.tap_layers[h / s.heads_per_layer], h % s.heads_per_layer});
  }
  return out;
}

json Floats(const std::vector<float>& v) {
  json out = json::array();
  for (float x : v) out.push_back(std::isnan(x) ? json(nullptr) : json(x));
  return out;
}

}  // namespace

absl::Status ApplyGenerateShortcuts(const GenerateFlags& f, v1::RhythmConfig& config) {
  std::vector<std::pair<std::string, std::string>> sets = {
      {"generation.max_new_tokens", f.max_new_tokens},
      {"generation.temperature", f.temperature},
      {"trainer.group_size", f.samples},
      {"generation.waad_window", f.window},
      {"generation.head_quantile", f.head_quantile}};
  if (!f.tap_layers.empty()) sets.emplace_back("generation.tap_layers", "[" + f.tap_layers + "]");
  if (!f.fai_band.empty()) {
    std::vector<std::string> band = absl::StrSplit(f.fai_band, ',');
    if (band.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("--fai-band '", f.fai_band, "' must be LO,HI, e.g. 10,100"));
    }
    sets.emplace_back("generation.fai_band_lo", band[0]);
    sets.emplace_back("generation.fai_band_hi", band[1]);
  }
  for (const auto& [key, value] : sets) {
    if (value.empty()) continue;
    absl::Status s = common::ApplyOverride(key + "=" + value, config);
    if (!s.ok()) return s;
  }
  return common::ValidateBounds(config);
}

void RegisterGenerateFlags(common::FlagParser& parser, GenerateFlags& f) {
  parser.AddString("model", "DIR", "generate: Hugging Face model directory", &f.model);
  parser.AddString("prompt", "TEXT", "generate: prompt text (needs the model's tokenizer)",
                   &f.prompt);
  parser.AddString("prompt-ids", "1,2,3", "generate: prompt as token ids", &f.prompt_ids);
  parser.AddString("max-new-tokens", "N", "generate: = generation.max_new_tokens",
                   &f.max_new_tokens);
  parser.AddString("temperature", "T", "generate: = generation.temperature (0 = greedy)",
                   &f.temperature);
  parser.AddString("samples", "G", "generate: samples per prompt (= trainer.group_size)",
                   &f.samples);
  parser.AddString("tap-layers", "1,4,7", "generate: = generation.tap_layers", &f.tap_layers);
  parser.AddString("window", "W", "generate: = generation.waad_window", &f.window);
  parser.AddString("fai-band", "LO,HI", "generate: = generation.fai_band_lo/hi", &f.fai_band);
  parser.AddString("head-quantile", "Q", "generate: = generation.head_quantile", &f.head_quantile);
  parser.AddBool("json", "generate: one JSON object per sample, with the attention summary",
                 &f.json);
  parser.AddBool("reference", "generate: compute summaries the slow way (full attention maps)",
                 &f.reference);
  parser.AddBool("chat",
                 "generate: render --prompt with the model's chat template (tokenizer_config.json)"
                 ", task.system_prompt as the system turn",
                 &f.chat);
  parser.AddString("out", "DIR", "init-model: where to write the random tiny model", &f.out);
}

int RunGenerate(const GenerateFlags& f, v1::RhythmConfig config) {
  if (absl::Status s = ApplyGenerateShortcuts(f, config); !s.ok())
    return Fail(std::string(s.message()));
  if (f.model.empty()) return Fail("generate: --model DIR is required");
  if (f.prompt.empty() == f.prompt_ids.empty()) {
    return Fail("generate: give exactly one of --prompt TEXT and --prompt-ids 1,2,3");
  }
  if (f.chat && f.prompt.empty()) return Fail("generate: --chat renders --prompt TEXT; give it");
  common::InitRuntime(config.runtime());
  absl::StatusOr<c10::Device> device = common::ResolveDevice(config.runtime().device());
  if (!device.ok()) return Fail(std::string(device.status().message()));
  absl::StatusOr<std::unique_ptr<common::model::Transformer>> model =
      common::model::LoadHfModel(f.model, at::kFloat, *device);
  if (!model.ok()) return Fail(std::string(model.status().message()), 1);
  std::unique_ptr<common::Tokenizer> tokenizer;
  if (auto t = common::LoadTokenizer(f.model); t.ok()) {
    tokenizer = *std::move(t);
  } else if (t.status().code() != absl::StatusCode::kNotFound) {
    // A tokenizer file that is there but malformed: its own error, not "has no tokenizer".
    return Fail("generate: " + std::string(t.status().message()), 1);
  }
  std::vector<int32_t> prompt;
  if (!f.prompt.empty()) {
    if (!tokenizer)
      return Fail(absl::StrCat("generate: ", f.model, " has no tokenizer; use --prompt-ids"));
    common::tasks::PromptFormatter format;  // verbatim
    if (f.chat) {
      v1::TaskConfig task = config.task();
      if (task.prompt_format() != v1::PROMPT_FORMAT_CUSTOM) {
        task.set_prompt_format(v1::PROMPT_FORMAT_CHAT);
      }
      absl::StatusOr<common::tasks::PromptFormatter> chat =
          common::tasks::PromptFormatter::Create(task, *tokenizer);
      if (!chat.ok()) return Fail("generate: --chat: " + std::string(chat.status().message()));
      format = *std::move(chat);
    }
    absl::StatusOr<std::vector<int32_t>> ids = format.Encode(*tokenizer, f.prompt);
    if (!ids.ok()) return Fail(std::string(ids.status().message()));
    prompt = *ids;
  } else {
    for (absl::string_view piece : absl::StrSplit(f.prompt_ids, ',')) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(piece, &id)) {
        return Fail(absl::StrCat("generate: --prompt-ids: '", piece, "' is not a token id"));
      }
      prompt.push_back(id);
    }
  }
  common::rollout::GenerationOptions o =
      common::rollout::GenerationOptionsFromConfig(config.generation());
  o.samples_per_prompt = config.trainer().group_size();
  o.seed = config.runtime().seed();
  o.taps = !f.reference;
  const int64_t eos = (*model)->config().eos_token_id;
  if (eos >= 0) o.stop_token_ids.push_back(static_cast<int32_t>(eos));
  if (!tokenizer) o.stop_strings.clear();  // no text to search
  if (tokenizer) {
    o.pad_id = tokenizer->pad_id() < (*model)->config().vocab_size ? tokenizer->pad_id() : 0;
    const common::Tokenizer* tok = tokenizer.get();
    o.decode = [tok](const std::vector<int32_t>& ids) { return tok->Decode(ids).value_or(""); };
  }
  common::rollout::GenerationStats stats;
  absl::StatusOr<std::vector<common::rollout::GeneratedSample>> samples =
      common::rollout::GenerationEngine(**model).Generate({prompt}, o, &stats);
  if (!samples.ok()) return Fail(std::string(samples.status().message()));
  for (common::rollout::GeneratedSample& s : *samples) {
    if (f.reference) {
      absl::StatusOr<common::rollout::AttentionSummary> ref =
          common::rollout::ReferenceSummary(**model, s.prompt_ids, s.response_ids, o.tap);
      if (!ref.ok()) return Fail(std::string(ref.status().message()), 1);
      s.summary = *std::move(ref);
    }
    const std::string text = tokenizer ? tokenizer->Decode(s.response_ids).value_or("") : "";
    if (!f.json) {
      std::cout << "[sample " << s.sample_index << ", " << FinishName(s.finish) << "] "
                << (tokenizer ? text : absl::StrJoin(s.response_ids, ",")) << "\n";
      continue;
    }
    const common::rollout::AttentionSummary& sum = *s.summary;
    json j = {{"sample", s.sample_index},
              {"prompt_ids", s.prompt_ids},
              {"response_ids", s.response_ids},
              {"finish_reason", FinishName(s.finish)},
              {"logprobs", s.logprobs},
              {"entropy", s.entropy},
              {"waad", Floats(sum.waad)},
              {"fai", Floats(sum.fai)},
              {"tap_layers", sum.tap_layers},
              {"local_heads", PairsOf(sum.local_heads, sum)},
              {"global_heads", PairsOf(sum.global_heads, sum)},
              {"summary_source", f.reference ? "reference" : "online"}};
    if (tokenizer) j["text"] = text;
    std::cout << j.dump() << "\n";
  }
  std::cerr << "rhythm generate: " << stats.new_tokens << " tokens in " << stats.seconds << " s\n";
  return 0;
}

int RunInitModel(const GenerateFlags& f, const v1::RhythmConfig& config) {
  if (f.out.empty()) return Fail("init-model: --out DIR is required");
  common::InitRuntime(config.runtime());
  absl::StatusOr<common::model::ModelAndTokenizer> fresh =
      common::model::LoadModelAndTokenizer("", config.model().tiny(), config.runtime().seed());
  if (!fresh.ok()) return Fail(std::string(fresh.status().message()));
  const common::Tokenizer& tokenizer = *fresh->tokenizer;
  common::model::ExportOptions eo;
  eo.write_extra_files = [&](const std::string& dir) { return tokenizer.Save(dir); };
  if (absl::Status s = common::model::ExportHfModel(*fresh->model, f.out, eo); !s.ok()) {
    return Fail(std::string(s.message()), 1);
  }
  std::cout << "rhythm init-model: wrote " << f.out << " (" << fresh->model->NumParameters()
            << " parameters, vocabulary " << fresh->model->config().vocab_size << ")\n";
  return 0;
}

}  // namespace rhythm::cli

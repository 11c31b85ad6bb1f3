#include "common/rollout/engine.h"

#include <chrono>
#include <mutex>
#include <numeric>

#include "ATen/ATen.h"
#include "ATen/CPUGeneratorImpl.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace rhythm::common::rollout {
namespace {

absl::Status CheckInputs(const std::vector<std::vector<int32_t>>& prompts,
                         const GenerationOptions& o, const model::ModelConfig& c) {
  if (prompts.empty()) return absl::InvalidArgumentError("no prompts");
  if (o.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens = ", o.max_new_tokens, " must be >= 1"));
  }
  if (o.samples_per_prompt < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("samples_per_prompt = ", o.samples_per_prompt, " must be >= 1"));
  }
  if (!o.stop_strings.empty() && !o.decode) {
    return absl::InvalidArgumentError("stop_strings need a decode function (a tokenizer)");
  }
  if (o.sampling.top_p <= 0 || o.sampling.top_p > 1) {
    return absl::InvalidArgumentError(absl::StrCat("top_p = ", o.sampling.top_p, " not in (0, 1]"));
  }
  if (o.pad_id < 0 || o.pad_id >= c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("pad_id = ", o.pad_id, " outside the vocabulary"));
  }
  for (size_t p = 0; p < prompts.size(); ++p) {
    if (prompts[p].empty()) return absl::InvalidArgumentError(absl::StrCat("prompt ", p, " is empty"));
    for (size_t i = 0; i < prompts[p].size(); ++i) {
      if (prompts[p][i] < 0 || prompts[p][i] >= c.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt ", p, " token ", i, " = ", prompts[p][i],
                         " is outside the vocabulary [0, ", c.vocab_size, ")"));
      }
    }
    const int64_t need = static_cast<int64_t>(prompts[p].size()) + o.max_new_tokens;
    if (need > c.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt ", p, " has ", prompts[p].size(), " tokens; with max_new_tokens ",
          o.max_new_tokens, " that exceeds max_position_embeddings ",
          c.max_position_embeddings));
    }
  }
  return absl::OkStatus();
}

bool EndsWithStopString(const GenerationOptions& o, const std::vector<int32_t>& response) {
  if (o.stop_strings.empty()) return false;
  const std::string text = o.decode(response);
  for (const std::string& s : o.stop_strings) {
    if (!s.empty() && text.find(s) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

at::Generator NewGenerator(at::Device device, uint64_t seed) {
  if (device.is_cpu()) return at::detail::createCPUGenerator(seed);
  // LibTorch has no device-independent factory; a clone of the device's default generator is
  // a new generator of the same kind on the same device. The default is cloned under its lock
  // (other code may be drawing from it) and never reseeded or advanced.
  at::Generator shared = at::globalContext().defaultGenerator(device);
  at::Generator own;
  {
    std::lock_guard<std::mutex> lock(shared.mutex());
    own = shared.clone();
  }
  own.set_current_seed(seed);
  return own;
}

GenerationOptions GenerationOptionsFromConfig(const v1::GenerationConfig& g) {
  GenerationOptions o;
  o.sampling.temperature = g.temperature();
  o.sampling.top_k = g.top_k();
  o.sampling.top_p = g.top_p();
  o.max_new_tokens = g.max_new_tokens();
  o.stop_strings.assign(g.stop_strings().begin(), g.stop_strings().end());
  o.tap.layers.assign(g.tap_layers().begin(), g.tap_layers().end());
  o.tap.window = g.waad_window();
  o.tap.band_lo = g.fai_band_lo();
  o.tap.band_hi = g.fai_band_hi();
  o.tap.head_quantile = g.head_quantile();
  o.slots = g.slots();
  return o;
}

absl::StatusOr<std::vector<GeneratedSample>> GenerationEngine::Generate(
    const std::vector<std::vector<int32_t>>& prompts, const GenerationOptions& options,
    GenerationStats* stats) const {
  const model::ModelConfig& config = model_.config();
  RHYTHM_RETURN_IF_ERROR(CheckInputs(prompts, options, config));
  TapOptions tap;
  if (options.taps) {
    RHYTHM_ASSIGN_OR_RETURN(tap, ResolveTapOptions(options.tap, config.num_layers));
  }
  const auto start_time = std::chrono::steady_clock::now();
  const int64_t g = options.samples_per_prompt;
  const int64_t total = static_cast<int64_t>(prompts.size()) * g;
  const int64_t slots = options.slots > 0 ? std::min(options.slots, total) : total;
  int64_t longest = 0;
  for (const auto& p : prompts) longest = std::max<int64_t>(longest, p.size());
  const int64_t max_new = options.max_new_tokens;
  const at::Device device = model_.device();
  const std::vector<int64_t> stop_ids(options.stop_token_ids.begin(),
                                      options.stop_token_ids.end());

  std::vector<GeneratedSample> samples(total);
  for (int64_t i = 0; i < total; ++i) {
    samples[i].prompt_index = i / g;
    samples[i].sample_index = i % g;
    samples[i].prompt_ids = prompts[i / g];
  }

  GenerationStats local_stats;
  local_stats.slots = slots;
  absl::Status status = TorchCall("generate", [&]() {
    at::InferenceMode inference;
    model::KvCache cache(config, slots, longest + max_new, model_.dtype(), device);
    std::optional<SummaryAccumulator> acc;
    if (options.taps) acc.emplace(tap, slots, config.num_heads, max_new);
    at::Generator gen = NewGenerator(device, options.seed);
    const std::vector<int64_t> no_capture;
    // Every prompt once, in one batch.
    const int64_t num_prompts = static_cast<int64_t>(prompts.size());
    model::KvCache prompt_cache(config, num_prompts, longest, model_.dtype(), device);
    std::vector<int64_t> all_prompts(num_prompts);
    std::iota(all_prompts.begin(), all_prompts.end(), 0);
    const at::Tensor prompt_logits = model_.Prefill(all_prompts, prompts, prompt_cache).value();
    ++local_stats.prefills;
    at::Tensor logits = at::zeros({slots, config.vocab_size},
                                  at::TensorOptions().dtype(at::kFloat).device(device));
    std::vector<int64_t> in_slot(slots, -1);  // the sample each slot generates, -1 when free
    int64_t next = 0, done = 0;
    while (done < total) {
      // Free slots take the next queued samples: at once, or (static) when all are free. A
      // sample starts from its prompt's keys and last logits, prefilled once for the group.
      const bool all_free =
          std::all_of(in_slot.begin(), in_slot.end(), [](int64_t i) { return i < 0; });
      if (next < total && (options.continuous || all_free)) {
        std::vector<int64_t> rows, sources;
        for (int64_t r = 0; r < slots && next < total; ++r) {
          if (in_slot[r] >= 0) continue;
          const int64_t p = next / g;
          in_slot[r] = next++;
          cache.CopySlot(prompt_cache, p, r);
          if (acc) acc->Start(r, static_cast<int64_t>(prompts[p].size()));
          rows.push_back(r);
          sources.push_back(p);
        }
        if (!rows.empty()) {
          logits.index_copy_(0, at::tensor(rows, at::kLong).to(device),
                             prompt_logits.index_select(0, at::tensor(sources, at::kLong).to(device)));
        }
      }
      // Every occupied slot samples its next token.
      std::vector<int64_t> rows;
      for (int64_t r = 0; r < slots; ++r) {
        if (in_slot[r] >= 0) rows.push_back(r);
      }
      const bool every_slot = static_cast<int64_t>(rows.size()) == slots;
      SampledTokens s = SampleNext(
          every_slot ? logits : logits.index_select(0, at::tensor(rows, at::kLong).to(device)),
          options.sampling, gen);
      const at::Tensor ids_host = s.ids.to(at::kCPU);
      const at::Tensor lp_host = s.logprobs.to(at::kCPU, at::kFloat);
      const at::Tensor en_host = s.entropy.to(at::kCPU, at::kFloat);
      const int64_t* ids = ids_host.data_ptr<int64_t>();
      std::vector<int64_t> feed(slots, options.pad_id);
      std::vector<uint8_t> fed(slots, 0), finishing(slots, 0);
      bool any_fed = false;
      for (size_t i = 0; i < rows.size(); ++i) {
        const int64_t r = rows[i];
        GeneratedSample& out = samples[in_slot[r]];
        out.response_ids.push_back(static_cast<int32_t>(ids[i]));
        out.logprobs.push_back(lp_host.data_ptr<float>()[i]);
        out.entropy.push_back(en_host.data_ptr<float>()[i]);
        ++local_stats.new_tokens;
        bool ends = true;
        if (std::find(stop_ids.begin(), stop_ids.end(), ids[i]) != stop_ids.end()) {
          out.finish = FinishReason::kEos;
        } else if (EndsWithStopString(options, out.response_ids)) {
          out.finish = FinishReason::kStopString;
        } else if (static_cast<int64_t>(out.response_ids.size()) == max_new) {
          out.finish = FinishReason::kLength;
        } else {
          ends = false;
        }
        finishing[r] = ends;
        if (!ends || acc) {  // the last token is fed once more only for its attention row
          feed[r] = ids[i];
          fed[r] = 1;
          any_fed = true;
        }
      }
      if (any_fed) {
        model::ForwardOutput out =
            model_.DecodeStep(feed, fed, cache, acc ? tap.layers : no_capture).value();
        ++local_stats.decode_steps;
        if (acc) {
          std::vector<at::Tensor> rows_host;
          for (const at::Tensor& a : out.attention) rows_host.push_back(a.to(at::kCPU));
          for (int64_t r = 0; r < slots; ++r) {
            if (fed[r]) acc->AddRow(r, rows_host);
          }
        }
        logits.copy_(out.logits);
      }
      for (int64_t r = 0; r < slots; ++r) {
        if (!finishing[r]) continue;
        if (acc) samples[in_slot[r]].summary = acc->Finish(r);
        in_slot[r] = -1;
        ++done;
      }
    }
    if (acc) local_stats.summary_state_bytes = acc->StateBytes();
  });
  RHYTHM_RETURN_IF_ERROR(status);
  local_stats.sequences = total;
  local_stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  if (stats != nullptr) *stats = local_stats;
  return samples;
}

}  // namespace rhythm::common::rollout

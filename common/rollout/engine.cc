#include "common/rollout/engine.h"

#include <chrono>

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
  const int64_t batch = static_cast<int64_t>(prompts.size()) * g;
  int64_t prompt_slots = 0;
  for (const auto& p : prompts) prompt_slots = std::max<int64_t>(prompt_slots, p.size());
  const int64_t max_new = options.max_new_tokens;
  const at::Device device = model_.device();

  std::vector<GeneratedSample> samples(batch);
  std::vector<int32_t> padded(batch * prompt_slots, options.pad_id);
  std::vector<uint8_t> prompt_valid(batch * prompt_slots, 0);
  for (int64_t b = 0; b < batch; ++b) {
    const std::vector<int32_t>& p = prompts[b / g];
    samples[b].prompt_index = b / g;
    samples[b].sample_index = b % g;
    samples[b].prompt_ids = p;
    const int64_t pad = prompt_slots - static_cast<int64_t>(p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      padded[b * prompt_slots + pad + i] = p[i];
      prompt_valid[b * prompt_slots + pad + i] = 1;
    }
  }

  GenerationStats local_stats;
  absl::Status status = TorchCall("generate", [&]() {
    at::InferenceMode inference;
    const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);
    const at::Tensor prompt_ids =
        at::tensor(std::vector<int64_t>(padded.begin(), padded.end()), at::kLong)
            .view({batch, prompt_slots})
            .to(device);
    const at::Tensor prompt_mask =
        at::tensor(std::vector<int64_t>(prompt_valid.begin(), prompt_valid.end()), at::kLong)
            .view({batch, prompt_slots})
            .to(device)
            .to(at::kBool);
    model::KvCache cache(config, batch, prompt_slots + max_new, model_.dtype(), device);
    std::optional<SummaryAccumulator> acc;
    if (options.taps) {
      acc.emplace(tap, batch, config.num_heads, prompt_slots, max_new, device);
    }
    at::Generator gen = device.is_cpu() ? at::detail::createCPUGenerator(options.seed)
                                        : at::globalContext().defaultGenerator(device);
    if (!device.is_cpu()) gen.set_current_seed(options.seed);
    std::vector<int64_t> stop_ids(options.stop_token_ids.begin(), options.stop_token_ids.end());
    const at::Tensor stop_dev = at::tensor(stop_ids.empty() ? std::vector<int64_t>{-1} : stop_ids,
                                           at::kLong).to(device);
    const at::Tensor pad = at::full({batch}, options.pad_id, long_opts);
    at::Tensor logprob_buf = at::zeros({batch, max_new}, at::TensorOptions().device(device));
    at::Tensor entropy_buf = at::zeros({batch, max_new}, at::TensorOptions().device(device));

    at::Tensor logits = model_.ForwardIncremental(prompt_ids, prompt_mask, cache)
                            .value()
                            .logits.select(1, -1);
    // `alive`: sequences that sample at this step (device); `finished`: host mirror.
    at::Tensor alive = at::ones({batch}, at::TensorOptions().dtype(at::kBool).device(device));
    std::vector<bool> finished(batch, false);
    int64_t still_sampling = batch;
    const std::vector<int64_t> no_capture;
    for (int64_t q = 0; q < max_new; ++q) {
      SampledTokens s = SampleNext(logits, options.sampling, gen);
      logprob_buf.select(1, q).copy_(s.logprobs);
      entropy_buf.select(1, q).copy_(s.entropy);
      const at::Tensor ids_host = s.ids.to(at::kCPU);  // the one host copy per step
      const int64_t* ids = ids_host.data_ptr<int64_t>();
      std::vector<int64_t> stopped_by_string;
      for (int64_t b = 0; b < batch; ++b) {
        if (finished[b]) continue;
        GeneratedSample& out = samples[b];
        out.response_ids.push_back(static_cast<int32_t>(ids[b]));
        ++local_stats.new_tokens;
        bool done = true;
        if (std::find(stop_ids.begin(), stop_ids.end(), ids[b]) != stop_ids.end()) {
          out.finish = FinishReason::kEos;
        } else if (EndsWithStopString(options, out.response_ids)) {
          out.finish = FinishReason::kStopString;
          stopped_by_string.push_back(b);
        } else if (q + 1 == max_new) {
          out.finish = FinishReason::kLength;
        } else {
          done = false;
        }
        if (done) {
          finished[b] = true;
          --still_sampling;
        }
      }
      if (still_sampling == 0 && !options.taps) break;
      // Feed r_q of every sequence that sampled it: its logits give r_{q+1}, its attention row
      // is the summary row of r_q.
      const at::Tensor feed = at::where(alive, s.ids, pad).unsqueeze(1);
      model::ForwardOutput out =
          model_.ForwardIncremental(feed, alive.unsqueeze(1), cache,
                                    options.taps ? tap.layers : no_capture)
              .value();
      ++local_stats.decode_steps;
      if (acc) acc->AddRows(out.attention, q, alive);
      if (still_sampling == 0) break;
      alive = alive.logical_and(at::isin(s.ids, stop_dev).logical_not());
      for (int64_t b : stopped_by_string) alive[b] = false;
      logits = out.logits.select(1, 0);
    }
    const at::Tensor lp = logprob_buf.to(at::kCPU).contiguous();
    const at::Tensor en = entropy_buf.to(at::kCPU).contiguous();
    std::vector<int64_t> lengths(batch);
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t n = static_cast<int64_t>(samples[b].response_ids.size());
      lengths[b] = n;
      samples[b].logprobs.assign(lp.data_ptr<float>() + b * max_new,
                                 lp.data_ptr<float>() + b * max_new + n);
      samples[b].entropy.assign(en.data_ptr<float>() + b * max_new,
                                en.data_ptr<float>() + b * max_new + n);
    }
    if (acc) {
      std::vector<AttentionSummary> summaries = acc->Finish(lengths);
      for (int64_t b = 0; b < batch; ++b) samples[b].summary = std::move(summaries[b]);
      local_stats.summary_state_bytes = acc->StateBytes();
    }
  });
  RHYTHM_RETURN_IF_ERROR(status);
  local_stats.sequences = batch;
  local_stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  if (stats != nullptr) *stats = local_stats;
  return samples;
}

}  // namespace rhythm::common::rollout

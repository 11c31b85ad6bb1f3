#include "common/model/transformer.h"

#include <cmath>
#include <set>

#include "ATen/ATen.h"
#include "ATen/CPUGeneratorImpl.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace rhythm::common::model {
namespace {

// Hugging Face's RMSNorm: normalise in fp32, scale in the input dtype.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}

// [..., d] -> [..., d]: (x1, x2) -> (-x2, x1), the non-interleaved rotary convention.
at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

std::string ShapeText(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

}  // namespace

KvCache::KvCache(const ModelConfig& config, int64_t batch, int64_t capacity,
                 at::ScalarType dtype, at::Device device)
    : batch_(batch), capacity_(capacity) {
  const auto opts = at::TensorOptions().dtype(dtype).device(device);
  for (int64_t l = 0; l < config.num_layers; ++l) {
    k_.push_back(at::zeros({batch, config.num_kv_heads, capacity, config.head_dim}, opts));
    v_.push_back(at::zeros({batch, config.num_kv_heads, capacity, config.head_dim}, opts));
  }
  key_valid_ = at::zeros({batch, capacity}, at::TensorOptions().dtype(at::kBool).device(device));
  next_position_ = at::zeros({batch}, at::TensorOptions().dtype(at::kLong).device(device));
}

void KvCache::Reset() {
  length_ = 0;
  key_valid_.zero_();
  next_position_.zero_();
}

Transformer::Transformer(const ModelConfig& config, at::ScalarType dtype, at::Device device)
    : config_(config), dtype_(dtype), device_(device), layers_(config.num_layers) {
  inv_freq_ = RotaryInvFreq().to(device);
}

at::Tensor Transformer::RotaryInvFreq() const {
  const int64_t d = config_.head_dim;
  // As Hugging Face computes it: in float32.
  at::Tensor inv = 1.0 / at::pow(config_.rope_theta, at::arange(0, d, 2, at::kLong).to(at::kFloat) /
                                                         static_cast<double>(d));
  const RopeScaling& rs = config_.rope_scaling;
  if (rs.factor > 0) {  // Llama 3.1 "llama3" scaling.
    const double old_len = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor;
    const double high_wavelen = old_len / rs.high_freq_factor;
    const at::Tensor wavelen = 2 * M_PI / inv;
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv / rs.factor, inv);
    const at::Tensor smooth =
        (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    const at::Tensor smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
    const at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv = at::where(medium, smoothed, scaled);
  }
  return inv;
}

std::vector<std::pair<std::string, at::Tensor*>> Transformer::Slots() {
  std::vector<std::pair<std::string, at::Tensor*>> out;
  out.emplace_back("model.embed_tokens.weight", &embed_);
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    Layer& L = layers_[l];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    out.emplace_back(p + "input_layernorm.weight", &L.input_norm);
    out.emplace_back(p + "self_attn.q_proj.weight", &L.q_w);
    out.emplace_back(p + "self_attn.k_proj.weight", &L.k_w);
    out.emplace_back(p + "self_attn.v_proj.weight", &L.v_w);
    if (config_.qkv_bias) {
      out.emplace_back(p + "self_attn.q_proj.bias", &L.q_b);
      out.emplace_back(p + "self_attn.k_proj.bias", &L.k_b);
      out.emplace_back(p + "self_attn.v_proj.bias", &L.v_b);
    }
    out.emplace_back(p + "self_attn.o_proj.weight", &L.o_w);
    if (config_.o_bias) out.emplace_back(p + "self_attn.o_proj.bias", &L.o_b);
    if (config_.qk_norm) {
      out.emplace_back(p + "self_attn.q_norm.weight", &L.q_norm);
      out.emplace_back(p + "self_attn.k_norm.weight", &L.k_norm);
    }
    out.emplace_back(p + "post_attention_layernorm.weight", &L.post_norm);
    out.emplace_back(p + "mlp.gate_proj.weight", &L.gate_w);
    out.emplace_back(p + "mlp.up_proj.weight", &L.up_w);
    out.emplace_back(p + "mlp.down_proj.weight", &L.down_w);
  }
  out.emplace_back("model.norm.weight", &final_norm_);
  if (!config_.tie_word_embeddings) out.emplace_back("lm_head.weight", &lm_head_);
  return out;
}

std::vector<std::pair<std::string, const at::Tensor*>> Transformer::Slots() const {
  std::vector<std::pair<std::string, const at::Tensor*>> out;
  for (auto& [name, slot] : const_cast<Transformer*>(this)->Slots()) out.emplace_back(name, slot);
  return out;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> Transformer::ExpectedShapes() const {
  const ModelConfig& c = config_;
  const int64_t q_out = c.num_heads * c.head_dim, kv_out = c.num_kv_heads * c.head_dim;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (const auto& [name, slot] : Slots()) {
    std::vector<int64_t> shape;
    auto ends = [&](const char* suffix) { return absl::EndsWith(name, suffix); };
    if (name == "model.embed_tokens.weight" || name == "lm_head.weight") {
      shape = {c.vocab_size, c.hidden_size};
    } else if (ends("layernorm.weight") || name == "model.norm.weight") {
      shape = {c.hidden_size};
    } else if (ends("q_norm.weight") || ends("k_norm.weight")) {
      shape = {c.head_dim};
    } else if (ends("q_proj.weight")) {
      shape = {q_out, c.hidden_size};
    } else if (ends("k_proj.weight") || ends("v_proj.weight")) {
      shape = {kv_out, c.hidden_size};
    } else if (ends("q_proj.bias")) {
      shape = {q_out};
    } else if (ends("k_proj.bias") || ends("v_proj.bias")) {
      shape = {kv_out};
    } else if (ends("o_proj.weight")) {
      shape = {c.hidden_size, q_out};
    } else if (ends("o_proj.bias")) {
      shape = {c.hidden_size};
    } else if (ends("gate_proj.weight") || ends("up_proj.weight")) {
      shape = {c.intermediate_size, c.hidden_size};
    } else if (ends("down_proj.weight")) {
      shape = {c.hidden_size, c.intermediate_size};
    }
    out.emplace_back(name, std::move(shape));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Transformer>> Transformer::RandomInit(const ModelConfig& config,
                                                                     uint64_t seed,
                                                                     at::ScalarType dtype,
                                                                     at::Device device) {
  RHYTHM_RETURN_IF_ERROR(ValidateModelConfig(config, "model config"));
  if (dtype != at::kFloat && dtype != at::kBFloat16) {
    return absl::InvalidArgumentError("model dtype must be float32 or bfloat16");
  }
  std::unique_ptr<Transformer> m(new Transformer(config, dtype, device));
  RHYTHM_RETURN_IF_ERROR(TorchCall("random init", [&]() {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    for (const auto& [name, shape] : m->ExpectedShapes()) {
      at::Tensor t;
      if (absl::EndsWith(name, "norm.weight")) {
        t = at::ones(shape);
      } else if (absl::EndsWith(name, ".bias")) {
        t = at::zeros(shape);
      } else {
        t = at::normal(0.0, config.initializer_range, shape, gen);
      }
      for (auto& [slot_name, slot] : m->Slots()) {
        if (slot_name == name) *slot = t.to(device, dtype);
      }
    }
  }));
  return m;
}

absl::StatusOr<std::unique_ptr<Transformer>> Transformer::FromTensors(
    const ModelConfig& config, const CheckpointTensors& checkpoint, at::ScalarType dtype,
    at::Device device) {
  RHYTHM_RETURN_IF_ERROR(ValidateModelConfig(config, "model config"));
  std::unique_ptr<Transformer> m(new Transformer(config, dtype, device));
  auto file_of = [&](const std::string& name) {
    auto it = checkpoint.file_of.find(name);
    return it == checkpoint.file_of.end() ? std::string("checkpoint") : it->second;
  };
  std::set<std::string> expected;
  auto slots = m->Slots();
  for (const auto& [name, shape] : m->ExpectedShapes()) {
    expected.insert(name);
    auto it = checkpoint.tensors.find(name);
    if (it == checkpoint.tensors.end()) {
      std::set<std::string> files;
      for (const auto& [n, f] : checkpoint.file_of) files.insert(f);
      return absl::InvalidArgumentError(
          absl::StrCat("missing tensor '", name, "' (", ShapeText(shape), ") in ",
                       files.empty() ? "checkpoint" : absl::StrJoin(files, ", ")));
    }
    if (it->second.sizes() != at::IntArrayRef(shape)) {
      return absl::InvalidArgumentError(absl::StrCat(
          file_of(name), ": tensor '", name, "' has shape ", ShapeText(it->second.sizes()),
          ", the config needs ", ShapeText(shape)));
    }
    for (auto& [slot_name, slot] : slots) {
      if (slot_name == name) *slot = it->second.to(device, dtype).contiguous();
    }
  }
  for (const auto& [name, t] : checkpoint.tensors) {
    if (expected.count(name)) continue;
    if (name == "lm_head.weight" && config.tie_word_embeddings) continue;
    if (absl::EndsWith(name, "rotary_emb.inv_freq")) continue;
    return absl::InvalidArgumentError(absl::StrCat(file_of(name), ": unexpected tensor '", name,
                                                   "' for ", ArchitectureName(config.architecture),
                                                   " with ", config.num_layers, " layers"));
  }
  return m;
}

TensorMap Transformer::NamedParameters() const {
  TensorMap out;
  for (const auto& [name, slot] : Slots()) out.emplace(name, *slot);
  return out;
}

std::vector<at::Tensor> Transformer::Parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& [name, slot] : Slots()) out.push_back(*slot);
  return out;
}

void Transformer::SetRequiresGrad(bool requires_grad) {
  for (auto& [name, slot] : Slots()) slot->requires_grad_(requires_grad);
}

int64_t Transformer::NumParameters() const {
  int64_t n = 0;
  for (const auto& [name, slot] : Slots()) n += slot->numel();
  return n;
}

ForwardOutput Transformer::Run(const at::Tensor& input_ids, const at::Tensor& positions,
                               const at::Tensor& allowed, KvCache* cache,
                               const std::vector<int64_t>& capture_layers) const {
  const ModelConfig& c = config_;
  const int64_t b = input_ids.size(0), t = input_ids.size(1);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  at::Tensor hidden = at::embedding(embed_, input_ids);
  // Rotary tables [B, 1, T, head_dim], computed in fp32 like Hugging Face, then cast.
  const at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq_;
  const at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(1);
  const at::Tensor cos = emb.cos().to(dtype_), sin = emb.sin().to(dtype_);
  const int64_t start = cache ? cache->length_ : 0;
  ForwardOutput out;
  out.attention.resize(capture_layers.size());

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const Layer& L = layers_[l];
    const at::Tensor h = RmsNorm(hidden, L.input_norm, c.rms_norm_eps);
    at::Tensor q = Linear(h, L.q_w, L.q_b).view({b, t, c.num_heads, c.head_dim});
    at::Tensor k = Linear(h, L.k_w, L.k_b).view({b, t, c.num_kv_heads, c.head_dim});
    at::Tensor v = Linear(h, L.v_w, L.v_b).view({b, t, c.num_kv_heads, c.head_dim});
    if (c.qk_norm) {
      q = RmsNorm(q, L.q_norm, c.rms_norm_eps);
      k = RmsNorm(k, L.k_norm, c.rms_norm_eps);
    }
    q = q.transpose(1, 2);
    k = k.transpose(1, 2);
    v = v.transpose(1, 2);
    q = q * cos + RotateHalf(q) * sin;
    k = k * cos + RotateHalf(k) * sin;
    if (cache != nullptr) {
      cache->k_[l].narrow(2, start, t).copy_(k);
      cache->v_[l].narrow(2, start, t).copy_(v);
      k = cache->k_[l].narrow(2, 0, start + t);
      v = cache->v_[l].narrow(2, 0, start + t);
    }
    const int64_t s = k.size(2);
    // Grouped-query attention: query head h reads key/value head h / kv_groups.
    if (c.kv_groups() > 1) {
      k = k.unsqueeze(2).expand({b, c.num_kv_heads, c.kv_groups(), s, c.head_dim})
              .reshape({b, c.num_heads, s, c.head_dim});
      v = v.unsqueeze(2).expand({b, c.num_kv_heads, c.kv_groups(), s, c.head_dim})
              .reshape({b, c.num_heads, s, c.head_dim});
    }
    at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).to(at::kFloat) * scale;
    scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
    const at::Tensor probs = at::softmax(scores, -1);
    for (size_t i = 0; i < capture_layers.size(); ++i) {
      if (capture_layers[i] == l) out.attention[i] = probs;
    }
    const at::Tensor attn = at::matmul(probs.to(dtype_), v)
                                .transpose(1, 2)
                                .reshape({b, t, c.num_heads * c.head_dim});
    hidden = hidden + Linear(attn, L.o_w, L.o_b);
    const at::Tensor h2 = RmsNorm(hidden, L.post_norm, c.rms_norm_eps);
    hidden = hidden + at::linear(at::silu(at::linear(h2, L.gate_w)) * at::linear(h2, L.up_w),
                                 L.down_w);
  }
  hidden = RmsNorm(hidden, final_norm_, c.rms_norm_eps);
  out.logits = at::linear(hidden, config_.tie_word_embeddings ? embed_ : lm_head_).to(at::kFloat);
  return out;
}

absl::StatusOr<ForwardOutput> Transformer::Forward(
    const at::Tensor& input_ids, const at::Tensor& attention_mask,
    const std::vector<int64_t>& capture_layers) const {
  if (!input_ids.defined() || input_ids.dim() != 2) {
    return absl::InvalidArgumentError("input_ids: expected an int64 [B, T] tensor");
  }
  if (!attention_mask.defined() || attention_mask.sizes() != input_ids.sizes()) {
    return absl::InvalidArgumentError("attention_mask: expected the shape of input_ids");
  }
  for (int64_t l : capture_layers) {
    if (l < 0 || l >= config_.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("capture layer ", l, " outside [0, ", config_.num_layers, ")"));
    }
  }
  return TorchTry("forward", [&]() {
    const at::Tensor ids = input_ids.to(device_, at::kLong);
    const at::Tensor mask = attention_mask.to(device_).to(at::kBool);
    const int64_t t = ids.size(1);
    const at::Tensor positions = at::clamp_min(mask.to(at::kLong).cumsum(1) - 1, 0);
    const at::Tensor causal =
        at::ones({t, t}, at::TensorOptions().dtype(at::kBool).device(device_)).tril();
    const at::Tensor eye = at::eye(t, at::TensorOptions().dtype(at::kBool).device(device_));
    // Real keys at or before the query; a padding query sees only itself (no empty row).
    const at::Tensor allowed = (causal.unsqueeze(0).logical_and(mask.unsqueeze(1)))
                                   .logical_or(eye.unsqueeze(0))
                                   .unsqueeze(1);
    return Run(ids, positions, allowed, nullptr, capture_layers);
  });
}

absl::StatusOr<ForwardOutput> Transformer::ForwardIncremental(
    const at::Tensor& input_ids, const at::Tensor& valid, KvCache& cache,
    const std::vector<int64_t>& capture_layers) const {
  if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.size(0) != cache.batch()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input_ids: expected an int64 [", cache.batch(), ", n] tensor"));
  }
  const int64_t n = input_ids.size(1);
  if (cache.length() + n > cache.capacity()) {
    return absl::FailedPreconditionError(absl::StrCat("KV cache full: ", cache.length(), " + ", n,
                                                      " tokens > capacity ", cache.capacity()));
  }
  if (valid.defined() && valid.sizes() != input_ids.sizes()) {
    return absl::InvalidArgumentError("valid: expected the shape of input_ids");
  }
  for (int64_t l : capture_layers) {
    if (l < 0 || l >= config_.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("capture layer ", l, " outside [0, ", config_.num_layers, ")"));
    }
  }
  return TorchTry("incremental forward", [&]() {
    const auto bool_opts = at::TensorOptions().dtype(at::kBool).device(device_);
    const at::Tensor ids = input_ids.to(device_, at::kLong);
    const at::Tensor real = valid.defined() ? valid.to(device_).to(at::kBool)
                                            : at::ones({cache.batch(), n}, bool_opts);
    const int64_t start = cache.length_;
    const at::Tensor real_long = real.to(at::kLong);
    const at::Tensor positions =
        cache.next_position_.unsqueeze(1) + real_long.cumsum(1) - real_long;
    cache.key_valid_.narrow(1, start, n).copy_(real);
    const int64_t s = start + n;
    // Query i (slot start + i) sees real keys in slots <= start + i, and always itself.
    const at::Tensor key_slot = at::arange(s, at::TensorOptions().dtype(at::kLong).device(device_));
    const at::Tensor query_slot = at::arange(start, s, key_slot.options());
    const at::Tensor causal = key_slot.unsqueeze(0) <= query_slot.unsqueeze(1);  // [n, s]
    const at::Tensor self = key_slot.unsqueeze(0) == query_slot.unsqueeze(1);
    const at::Tensor allowed =
        causal.unsqueeze(0)
            .logical_and(cache.key_valid_.narrow(1, 0, s).unsqueeze(1))
            .logical_or(self.unsqueeze(0))
            .unsqueeze(1);  // [B, 1, n, s]
    ForwardOutput out = Run(ids, positions, allowed, &cache, capture_layers);
    cache.length_ = s;
    cache.next_position_ += real_long.sum(1);
    return out;
  });
}

}  // namespace rhythm::common::model

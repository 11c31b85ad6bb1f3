#include "common/model/transformer.h"

#include <cmath>
#include <set>

#include "ATen/ATen.h"
#include "ATen/CPUGeneratorImpl.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model/block_attention.h"
#include "common/model/checkpoint.h"
#include "common/model/decode_kernels.h"
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

// allowed bool [B, 1, T, T] for a padded batch (mask bool [B, T]): real keys at or before the
// query; a padding query sees only itself (no empty softmax row).
at::Tensor CausalPaddedMask(const at::Tensor& mask) {
  const int64_t t = mask.size(1);
  const auto opts = at::TensorOptions().dtype(at::kBool).device(mask.device());
  const at::Tensor causal = at::ones({t, t}, opts).tril();
  return causal.unsqueeze(0)
      .logical_and(mask.unsqueeze(1))
      .logical_or(at::eye(t, opts).unsqueeze(0))
      .unsqueeze(1);
}

std::string ShapeText(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

}  // namespace

// The decode step's buffers, allocated on its first call for this cache's slots.
struct KvCache::Workspace {
  // A weight packed for the kernels, with what it was packed from: a tensor whose storage or
  // version (bumped by every in-place change: loading, the optimiser) differs is packed again.
  struct Packed {
    kernels::PackedWeight weight;
    const void* source = nullptr;
    int64_t version = -1;
  };
  std::vector<Packed> packed;  // per layer: qkv, o, gate_up, down; then lm_head
  at::Tensor hidden, x, qkv, q, attn, gate_up, act, logits;
  at::Tensor cos, sin;  // float [capacity, head_dim / 2]
  std::vector<std::pair<int64_t, at::Tensor>> probs;  // by layer: [slots, heads, capacity]
};

KvCache::KvCache(const ModelConfig& config, int64_t slots, int64_t capacity,
                 at::ScalarType dtype, at::Device device)
    : slots_(slots), capacity_(capacity), lengths_(slots, 0) {
  const auto opts = at::TensorOptions().dtype(dtype).device(device);
  for (int64_t l = 0; l < config.num_layers; ++l) {
    k_.push_back(at::zeros({slots, config.num_kv_heads, capacity, config.head_dim}, opts));
    v_.push_back(at::zeros({slots, config.num_kv_heads, capacity, config.head_dim}, opts));
  }
}

KvCache::~KvCache() = default;

void KvCache::Reset() { std::fill(lengths_.begin(), lengths_.end(), 0); }

void KvCache::CopySlot(const KvCache& source, int64_t from, int64_t to) {
  const int64_t n = source.lengths_[from];
  for (size_t l = 0; l < k_.size(); ++l) {
    k_[l][to].narrow(1, 0, n).copy_(source.k_[l][from].narrow(1, 0, n));
    v_[l][to].narrow(1, 0, n).copy_(source.v_[l][from].narrow(1, 0, n));
  }
  lengths_[to] = n;
}

Transformer::Transformer(const ModelConfig& config, at::ScalarType dtype, at::Device device)
    : config_(config), dtype_(dtype), device_(device), layers_(config.num_layers) {
  inv_freq_ = RotaryInvFreq().to(device);
  const auto opts = at::TensorOptions().dtype(dtype).device(device);
  const int64_t q_out = config.num_heads * config.head_dim;
  const int64_t kv_out = config.num_kv_heads * config.head_dim;
  const int64_t mlp = config.intermediate_size;
  for (Layer& L : layers_) {
    L.qkv_w = at::zeros({q_out + 2 * kv_out, config.hidden_size}, opts);
    L.q_w = L.qkv_w.narrow(0, 0, q_out);
    L.k_w = L.qkv_w.narrow(0, q_out, kv_out);
    L.v_w = L.qkv_w.narrow(0, q_out + kv_out, kv_out);
    if (config.qkv_bias) {
      L.qkv_b = at::zeros({q_out + 2 * kv_out}, opts);
      L.q_b = L.qkv_b.narrow(0, 0, q_out);
      L.k_b = L.qkv_b.narrow(0, q_out, kv_out);
      L.v_b = L.qkv_b.narrow(0, q_out + kv_out, kv_out);
    }
    L.gate_up_w = at::zeros({2 * mlp, config.hidden_size}, opts);
    L.gate_w = L.gate_up_w.narrow(0, 0, mlp);
    L.up_w = L.gate_up_w.narrow(0, mlp, mlp);
  }
  // Every other parameter gets its own storage; loading copies into these.
  for (const auto& [name, shape] : ExpectedShapes()) {
    for (auto& [slot_name, slot] : Slots()) {
      if (slot_name == name && !slot->defined()) *slot = at::zeros(shape, opts);
    }
  }
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
        if (slot_name == name) slot->copy_(t);
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
      if (slot_name == name) slot->copy_(it->second);
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
                               const at::Tensor& allowed, const CacheAccess& cache,
                               const std::vector<int64_t>& capture_layers,
                               const at::Tensor& last_index,
                               const TrainingAttention* training) const {
  const ModelConfig& c = config_;
  const int64_t b = input_ids.size(0);
  at::Tensor hidden = at::embedding(embed_, input_ids);
  // Rotary tables [B, 1, T, head_dim], computed in fp32 like Hugging Face, then cast.
  const at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq_;
  const at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(1);
  LayerInputs in;
  in.cos = emb.cos().to(dtype_);
  in.sin = emb.sin().to(dtype_);
  in.allowed = allowed;
  in.cache = cache;
  if (training != nullptr) in.train = *training;
  const TrainingAttention& train = in.train;
  ForwardOutput out;
  out.attention.resize(capture_layers.size());

  for (int64_t l = 0; l < c.num_layers; ++l) {
    bool captured = false;
    for (int64_t layer : capture_layers) captured = captured || layer == l;
    if (!captured && train.checkpointing && cache.mode == CacheAccess::kNone) {
      // The closure holds the rotary tables and masks by value: backward runs after Run.
      const Layer& L = layers_[l];
      hidden = Checkpointed(
          [this, l, in](const at::Tensor& x) { return DecoderLayer(l, x, in, nullptr); }, hidden,
          {L.input_norm, L.q_w, L.q_b, L.k_w, L.k_b, L.v_w, L.v_b, L.o_w, L.o_b, L.q_norm, L.k_norm,
           L.post_norm, L.gate_w, L.up_w, L.down_w});
      continue;
    }
    at::Tensor probs;
    hidden = DecoderLayer(l, hidden, in, captured ? &probs : nullptr);
    for (size_t i = 0; i < capture_layers.size(); ++i) {
      if (capture_layers[i] == l) out.attention[i] = probs;
    }
  }
  if (last_index.defined()) {
    hidden = hidden.gather(1, last_index.view({b, 1, 1}).expand({b, 1, c.hidden_size}));
  }
  hidden = RmsNorm(hidden, final_norm_, c.rms_norm_eps);
  out.logits = at::linear(hidden, config_.tie_word_embeddings ? embed_ : lm_head_).to(at::kFloat);
  return out;
}

at::Tensor Transformer::DecoderLayer(int64_t l, const at::Tensor& hidden_in, const LayerInputs& in,
                                     at::Tensor* probs_out) const {
  const ModelConfig& c = config_;
  const Layer& L = layers_[l];
  const CacheAccess& cache = in.cache;
  const int64_t b = hidden_in.size(0), t = hidden_in.size(1);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  at::Tensor hidden = hidden_in;
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
  q = q * in.cos + RotateHalf(q) * in.sin;
  k = k * in.cos + RotateHalf(k) * in.sin;
  at::Tensor attn;
  if (probs_out == nullptr && cache.mode == CacheAccess::kNone && in.train.chunk > 0) {
    // Nobody reads this layer's probabilities: blocks of query rows, nothing [L, L] kept.
    attn = BlockAttention(q, k, v, in.train.key_mask, in.train.chunk, scale);
  } else {
    if (cache.mode == CacheAccess::kPrefill) {
      cache.cache->k_[l].narrow(2, 0, t).index_copy_(0, cache.rows, k);
      cache.cache->v_[l].narrow(2, 0, t).index_copy_(0, cache.rows, v);
    } else if (cache.mode == CacheAccess::kDecode) {
      using at::indexing::Slice;
      cache.cache->k_[l].index_put_({cache.rows, Slice(), cache.pos},
                                    k.index_select(0, cache.rows).squeeze(2));
      cache.cache->v_[l].index_put_({cache.rows, Slice(), cache.pos},
                                    v.index_select(0, cache.rows).squeeze(2));
      k = cache.cache->k_[l];
      v = cache.cache->v_[l];
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
    scores = scores.masked_fill(in.allowed.logical_not(), -std::numeric_limits<float>::infinity());
    const at::Tensor probs = at::softmax(scores, -1);
    if (probs_out != nullptr) *probs_out = probs;
    attn = at::matmul(probs.to(dtype_), v);
  }
  attn = attn.transpose(1, 2).reshape({b, t, c.num_heads * c.head_dim});
  hidden = hidden + Linear(attn, L.o_w, L.o_b);
  const at::Tensor h2 = RmsNorm(hidden, L.post_norm, c.rms_norm_eps);
  return hidden + at::linear(at::silu(at::linear(h2, L.gate_w)) * at::linear(h2, L.up_w), L.down_w);
}

absl::Status Transformer::CheckCaptureLayers(const std::vector<int64_t>& layers) const {
  for (int64_t l : layers) {
    if (l < 0 || l >= config_.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("capture layer ", l, " outside [0, ", config_.num_layers, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ForwardOutput> Transformer::Forward(
    const at::Tensor& input_ids, const at::Tensor& attention_mask,
    const std::vector<int64_t>& capture_layers) const {
  ForwardOptions options;
  options.capture_layers = capture_layers;
  return Forward(input_ids, attention_mask, options);
}

absl::StatusOr<ForwardOutput> Transformer::Forward(const at::Tensor& input_ids,
                                                   const at::Tensor& attention_mask,
                                                   const ForwardOptions& options) const {
  if (!input_ids.defined() || input_ids.dim() != 2) {
    return absl::InvalidArgumentError("input_ids: expected an int64 [B, T] tensor");
  }
  if (!attention_mask.defined() || attention_mask.sizes() != input_ids.sizes()) {
    return absl::InvalidArgumentError("attention_mask: expected the shape of input_ids");
  }
  if (options.attention_chunk < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention_chunk: ", options.attention_chunk, " is negative"));
  }
  RHYTHM_RETURN_IF_ERROR(CheckCaptureLayers(options.capture_layers));
  return TorchTry("forward", [&]() {
    const at::Tensor ids = input_ids.to(device_, at::kLong);
    const at::Tensor mask = attention_mask.to(device_).to(at::kBool);
    const at::Tensor positions = at::clamp_min(mask.to(at::kLong).cumsum(1) - 1, 0);
    TrainingAttention train;
    train.key_mask = mask;
    train.chunk = options.attention_chunk;
    train.checkpointing = options.activation_checkpointing;
    // The [B, 1, T, T] mask only where a layer attends explicitly (its backward keeps it).
    const bool explicit_layers = options.attention_chunk == 0 || !options.capture_layers.empty();
    return Run(ids, positions, explicit_layers ? CausalPaddedMask(mask) : at::Tensor(),
               CacheAccess{}, options.capture_layers, at::Tensor(), &train);
  });
}

absl::StatusOr<at::Tensor> Transformer::Prefill(const std::vector<int64_t>& slots,
                                                const std::vector<std::vector<int32_t>>& prompts,
                                                KvCache& cache) const {
  if (slots.empty() || slots.size() != prompts.size()) {
    return absl::InvalidArgumentError(absl::StrCat("prefill: ", slots.size(), " slots for ",
                                                   prompts.size(), " prompts"));
  }
  std::vector<bool> seen(cache.slots_, false);
  int64_t longest = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    const int64_t slot = slots[i];
    if (slot < 0 || slot >= cache.slots_ || seen[slot] || cache.lengths_[slot] != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prefill: slot ", slot, " is out of range [0, ", cache.slots_, "), listed twice or not empty"));
    }
    seen[slot] = true;
    if (prompts[i].empty()) return absl::InvalidArgumentError(absl::StrCat("prefill: prompt ", i, " is empty"));
    for (size_t j = 0; j < prompts[i].size(); ++j) {
      if (prompts[i][j] < 0 || prompts[i][j] >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("prefill: prompt ", i, " token ", j, " = ",
                                                       prompts[i][j], " is outside the vocabulary"));
      }
    }
    if (static_cast<int64_t>(prompts[i].size()) > cache.capacity_) {
      return absl::FailedPreconditionError(absl::StrCat("prefill: prompt ", i, " has ",
                                                        prompts[i].size(), " tokens > capacity ",
                                                        cache.capacity_));
    }
    longest = std::max<int64_t>(longest, prompts[i].size());
  }
  absl::StatusOr<at::Tensor> logits = TorchTry("prefill", [&]() {
    at::InferenceMode inference;
    const int64_t r = static_cast<int64_t>(slots.size());
    // Right-padded: row i's prompt at positions [0, len_i), so its keys land where its decode
    // steps will look; the padding's keys are overwritten by the slot's first decode steps.
    std::vector<int64_t> ids(r * longest, 0), real(r * longest, 0), last(r);
    for (int64_t i = 0; i < r; ++i) {
      for (size_t j = 0; j < prompts[i].size(); ++j) {
        ids[i * longest + j] = prompts[i][j];
        real[i * longest + j] = 1;
      }
      last[i] = static_cast<int64_t>(prompts[i].size()) - 1;
    }
    const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device_);
    const at::Tensor ids_t = at::tensor(ids, at::kLong).view({r, longest}).to(device_);
    const at::Tensor mask =
        at::tensor(real, at::kLong).view({r, longest}).to(device_).to(at::kBool);
    const at::Tensor positions = at::arange(longest, long_opts).unsqueeze(0).expand({r, longest});
    CacheAccess access;
    access.mode = CacheAccess::kPrefill;
    access.cache = &cache;
    access.rows = at::tensor(slots, at::kLong).to(device_);
    return Run(ids_t, positions, CausalPaddedMask(mask), access, {},
               at::tensor(last, at::kLong).to(device_))
        .logits.select(1, 0);
  });
  if (!logits.ok()) return logits.status();
  for (size_t i = 0; i < slots.size(); ++i) cache.lengths_[slots[i]] = prompts[i].size();
  return logits;
}

absl::StatusOr<ForwardOutput> Transformer::DecodeStep(
    const std::vector<int64_t>& ids, const std::vector<uint8_t>& active, KvCache& cache,
    const std::vector<int64_t>& capture_layers) const {
  const int64_t slots = cache.slots_;
  if (static_cast<int64_t>(ids.size()) != slots || static_cast<int64_t>(active.size()) != slots) {
    return absl::InvalidArgumentError(absl::StrCat("decode step: ", ids.size(), " ids and ",
                                                   active.size(), " active flags for ", slots,
                                                   " slots"));
  }
  for (int64_t r = 0; r < slots; ++r) {
    if (!active[r]) continue;
    if (ids[r] < 0 || ids[r] >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("decode step: slot ", r, " id ", ids[r],
                                                     " is outside the vocabulary"));
    }
    if (cache.lengths_[r] >= cache.capacity_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "KV cache full: slot ", r, " holds ", cache.lengths_[r], " of ", cache.capacity_));
    }
  }
  RHYTHM_RETURN_IF_ERROR(CheckCaptureLayers(capture_layers));
  const bool kernels = use_decode_kernels_ && device_.is_cpu() && dtype_ == at::kFloat &&
                       config_.head_dim % 2 == 0 && config_.head_dim <= 1024;
  absl::StatusOr<ForwardOutput> out = TorchTry("decode step", [&]() {
    at::InferenceMode inference;
    return kernels ? DecodeWithKernels(ids, active, cache, capture_layers)
                   : DecodeGeneric(ids, active, cache, capture_layers);
  });
  if (out.ok()) {
    for (int64_t r = 0; r < slots; ++r) cache.lengths_[r] += active[r] ? 1 : 0;
  }
  return out;
}

ForwardOutput Transformer::DecodeGeneric(const std::vector<int64_t>& ids,
                                         const std::vector<uint8_t>& active, KvCache& cache,
                                         const std::vector<int64_t>& capture_layers) const {
  const int64_t slots = cache.slots_, cap = cache.capacity_;
  std::vector<int64_t> feed(slots, 0), keys(slots), rows, pos;
  for (int64_t r = 0; r < slots; ++r) {
    keys[r] = cache.lengths_[r] + (active[r] ? 1 : 0);
    if (!active[r]) continue;
    feed[r] = ids[r];
    rows.push_back(r);
    pos.push_back(cache.lengths_[r]);
  }
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device_);
  const at::Tensor key = at::arange(cap, long_opts).unsqueeze(0);
  const at::Tensor n = at::tensor(keys, at::kLong).to(device_).unsqueeze(1);
  // Keys before the slot's new length; key 0 for an idle slot (no empty softmax row).
  const at::Tensor allowed = (key < n).logical_or(key == 0).view({slots, 1, 1, cap});
  CacheAccess access;
  access.mode = CacheAccess::kDecode;
  access.cache = &cache;
  access.rows = at::tensor(rows, at::kLong).to(device_);
  access.pos = at::tensor(pos, at::kLong).to(device_);
  ForwardOutput out =
      Run(at::tensor(feed, at::kLong).view({slots, 1}).to(device_),
          at::tensor(cache.lengths_, at::kLong).view({slots, 1}).to(device_),
          allowed, access, capture_layers);
  out.logits = out.logits.select(1, 0);
  for (at::Tensor& a : out.attention) a = a.squeeze(2);
  return out;
}

ForwardOutput Transformer::DecodeWithKernels(const std::vector<int64_t>& ids,
                                             const std::vector<uint8_t>& active, KvCache& cache,
                                             const std::vector<int64_t>& capture_layers) const {
  const ModelConfig& c = config_;
  const int64_t slots = cache.slots_, cap = cache.capacity_, d = c.hidden_size;
  const int64_t heads = c.num_heads, kv = c.num_kv_heads, hd = c.head_dim;
  if (!cache.ws_) {
    auto w = std::make_unique<KvCache::Workspace>();
    const auto f = at::TensorOptions().dtype(at::kFloat);
    w->hidden = at::zeros({slots, d}, f);
    w->x = at::zeros({slots, d}, f);
    w->qkv = at::zeros({slots, (heads + 2 * kv) * hd}, f);
    w->q = at::zeros({slots, heads, hd}, f);
    w->attn = at::zeros({slots, heads * hd}, f);
    w->gate_up = at::zeros({slots, 2 * c.intermediate_size}, f);
    w->act = at::zeros({slots, c.intermediate_size}, f);
    w->logits = at::zeros({slots, c.vocab_size}, f);
    // The rotary angles of every position, as Run computes them.
    const at::Tensor freqs = at::arange(cap, at::kLong).to(at::kFloat).unsqueeze(-1) * inv_freq_;
    w->cos = freqs.cos().contiguous();
    w->sin = freqs.sin().contiguous();
    cache.ws_ = std::move(w);
  }
  KvCache::Workspace& w = *cache.ws_;
  const double eps = c.rms_norm_eps;
  std::vector<int64_t> pos(cache.lengths_), keys(slots);
  for (int64_t r = 0; r < slots; ++r) keys[r] = pos[r] + 1;
  float* hidden = w.hidden.data_ptr<float>();
  float* x = w.x.data_ptr<float>();
  const float* embed = embed_.data_ptr<float>();
  for (int64_t r = 0; r < slots; ++r) {
    if (active[r]) std::copy(embed + ids[r] * d, embed + (ids[r] + 1) * d, hidden + r * d);
  }
  // out = in W^T (+ b) (+ out): the packed kernel for a few slots, BLAS for many. `which`
  // names the weight's packing slot.
  const bool packed = slots <= 64;
  if (packed) w.packed.resize(4 * c.num_layers + 1);
  auto linear = [&](at::Tensor& result, const at::Tensor& in, const at::Tensor& weight,
                    const at::Tensor& bias, bool accumulate, int64_t which) {
    if (packed) {
      KvCache::Workspace::Packed& p = w.packed[which];
      const int64_t version = weight.is_inference() ? 0 : static_cast<int64_t>(weight._version());
      if (p.source != weight.data_ptr() || p.version != version) {
        kernels::PackWeight(weight.data_ptr<float>(), weight.size(0), weight.size(1), &p.weight);
        p.source = weight.data_ptr();
        p.version = version;
      }
      kernels::LinearPacked(in.data_ptr<float>(), slots, p.weight,
                            bias.defined() ? bias.data_ptr<float>() : nullptr, accumulate,
                            result.data_ptr<float>());
    } else if (accumulate) {
      result.addmm_(in, weight.t());
      if (bias.defined()) result.add_(bias);
    } else if (bias.defined()) {
      at::addmm_out(result, bias, in, weight.t());
    } else {
      at::mm_out(result, in, weight.t());
    }
  };
  ForwardOutput out;
  out.attention.resize(capture_layers.size());
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const Layer& L = layers_[l];
    kernels::RmsNormRows(hidden, L.input_norm.data_ptr<float>(), eps, slots, d, x);
    linear(w.qkv, w.x, L.qkv_w, L.qkv_b, false, 4 * l);
    kernels::RopeStoreArgs rope;
    rope.qkv = w.qkv.data_ptr<float>();
    rope.slots = slots;
    rope.heads = heads;
    rope.kv_heads = kv;
    rope.head_dim = hd;
    rope.capacity = cap;
    rope.active = active.data();
    rope.pos = pos.data();
    rope.cos = w.cos.data_ptr<float>();
    rope.sin = w.sin.data_ptr<float>();
    if (c.qk_norm) {
      rope.q_norm = L.q_norm.data_ptr<float>();
      rope.k_norm = L.k_norm.data_ptr<float>();
    }
    rope.eps = eps;
    rope.q_out = w.q.data_ptr<float>();
    rope.k_cache = cache.k_[l].data_ptr<float>();
    rope.v_cache = cache.v_[l].data_ptr<float>();
    kernels::RopeAndStore(rope);

    kernels::DecodeAttentionArgs att;
    att.q = rope.q_out;
    att.k_cache = rope.k_cache;
    att.v_cache = rope.v_cache;
    att.slots = slots;
    att.heads = heads;
    att.kv_heads = kv;
    att.head_dim = hd;
    att.capacity = cap;
    att.active = active.data();
    att.length = keys.data();
    att.scale = 1.0 / std::sqrt(static_cast<double>(hd));
    att.out = w.attn.data_ptr<float>();
    for (size_t i = 0; i < capture_layers.size(); ++i) {
      if (capture_layers[i] != l) continue;
      at::Tensor* buffer = nullptr;
      for (auto& [layer, t] : w.probs) {
        if (layer == l) buffer = &t;
      }
      if (buffer == nullptr) {
        w.probs.emplace_back(l, at::zeros({slots, heads, cap}, at::kFloat));
        buffer = &w.probs.back().second;
      }
      att.probs = buffer->data_ptr<float>();
      out.attention[i] = *buffer;
    }
    kernels::DecodeAttention(att);
    linear(w.hidden, w.attn, L.o_w, L.o_b, true, 4 * l + 1);
    kernels::RmsNormRows(hidden, L.post_norm.data_ptr<float>(), eps, slots, d, x);
    linear(w.gate_up, w.x, L.gate_up_w, {}, false, 4 * l + 2);
    kernels::SiluMulRows(w.gate_up.data_ptr<float>(), slots, c.intermediate_size,
                         w.act.data_ptr<float>());
    linear(w.hidden, w.act, L.down_w, {}, true, 4 * l + 3);
  }
  kernels::RmsNormRows(hidden, final_norm_.data_ptr<float>(), eps, slots, d, x);
  linear(w.logits, w.x, c.tie_word_embeddings ? embed_ : lm_head_, {}, false, 4 * c.num_layers);
  out.logits = w.logits;
  return out;
}

}  // namespace rhythm::common::model

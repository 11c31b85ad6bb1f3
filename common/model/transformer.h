// Transformer: a Llama / Qwen2 / Qwen3 decoder written directly on ATen, with the Hugging Face
// tensor names, a training forward over padded batches and an incremental forward over a
// preallocated KV cache.
//
//   ids ─ embed_tokens ─┬─▶ [ RMSNorm ─ q,k,v proj (+bias) ─ (q/k RMSNorm) ─ RoPE ─ GQA attention
//                       │      ─ o_proj ] + residual ─▶ [ RMSNorm ─ SwiGLU MLP ] + residual ─▶ …
//                       └─▶ … × num_layers ─ RMSNorm ─ lm_head (or tied embed_tokens) ─▶ logits
//
// Attention is always computed explicitly (matmul → softmax in fp32 → matmul): LibTorch 1.13 has
// no fused kernel that would be faster on CPU, and it lets any layer hand its probabilities to a
// caller (the attention summaries of the rollout engine; the reference computation).
//
// Why not torch::nn::Module: the model is a handful of named tensors and ~20 ATen ops; holding
// them directly keeps <torch/torch.h> (16 s per translation unit) out of this header and every
// includer, and makes the Hugging Face names the only names. Parameters are leaf tensors; call
// SetRequiresGrad(true) before training and hand Parameters() to the optimiser.
//
// Thread-safety: Forward and ForwardIncremental are const and may run concurrently on different
// caches; changing parameters (optimiser step, loading) must not overlap them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"
#include "common/model/model_config.h"
#include "common/model/safetensors.h"

namespace rhythm::common::model {

struct ForwardOutput {
  // float32 [B, T, vocab_size].
  at::Tensor logits;
  // One per requested layer, in request order: float32 [B, num_heads, T_query, T_key], the
  // softmax attention probabilities (rows of padding queries are meaningless).
  std::vector<at::Tensor> attention;
};

// Keys and values of every layer for a batch of sequences being generated, preallocated to a
// fixed capacity so decoding never reallocates. All sequences share the slot index: a sequence
// that has fewer tokens (a shorter, left-padded prompt) has padding slots, marked invalid.
// Not thread-safe; one cache per generation batch.
class KvCache {
 public:
  KvCache(const ModelConfig& config, int64_t batch, int64_t capacity, at::ScalarType dtype,
          at::Device device);

  int64_t batch() const { return batch_; }
  int64_t capacity() const { return capacity_; }
  // Slots used so far.
  int64_t length() const { return length_; }
  // bool [B, capacity]: slot holds a real token of that sequence.
  const at::Tensor& key_valid() const { return key_valid_; }
  // int64 [B]: rotary position the next real token of each sequence gets.
  const at::Tensor& next_position() const { return next_position_; }
  void Reset();

 private:
  friend class Transformer;
  int64_t batch_, capacity_, length_ = 0;
  std::vector<at::Tensor> k_, v_;  // per layer [B, num_kv_heads, capacity, head_dim]
  at::Tensor key_valid_, next_position_;
};

class Transformer {
 public:
  // A model with freshly initialised weights: normal(0, initializer_range) matrices, unit norms,
  // zero biases, from a seeded generator (same seed, same weights). dtype kFloat or kBFloat16.
  static absl::StatusOr<std::unique_ptr<Transformer>> RandomInit(
      const ModelConfig& config, uint64_t seed, at::ScalarType dtype = at::kFloat,
      at::Device device = at::kCPU);

  // A model from named tensors (Hugging Face names). Missing, unexpected or wrongly shaped
  // tensors are INVALID_ARGUMENT naming the tensor and, via `file_of`, its file. A tied model
  // accepts (and ignores) an lm_head.weight; legacy rotary_emb.inv_freq buffers are ignored.
  static absl::StatusOr<std::unique_ptr<Transformer>> FromTensors(
      const ModelConfig& config, const CheckpointTensors& checkpoint, at::ScalarType dtype,
      at::Device device = at::kCPU);

  // Training forward. input_ids int64 [B, T]; attention_mask [B, T], 1 for tokens and 0 for
  // padding (left or right). Positions count real tokens only. Differentiable.
  absl::StatusOr<ForwardOutput> Forward(const at::Tensor& input_ids,
                                        const at::Tensor& attention_mask,
                                        const std::vector<int64_t>& capture_layers = {}) const;

  // Appends n tokens per sequence to `cache` and returns their logits [B, n, V]; captured
  // attention is [B, H, n, cache.length() after the call]. valid bool [B, n] marks real tokens
  // (false for left padding of shorter prompts); undefined = all real. FAILED_PRECONDITION when
  // the cache is full.
  absl::StatusOr<ForwardOutput> ForwardIncremental(
      const at::Tensor& input_ids, const at::Tensor& valid, KvCache& cache,
      const std::vector<int64_t>& capture_layers = {}) const;

  // Every parameter by Hugging Face name (a tied model has no lm_head.weight). The tensors are
  // the model's own storage.
  TensorMap NamedParameters() const;
  std::vector<at::Tensor> Parameters() const;
  void SetRequiresGrad(bool requires_grad);
  int64_t NumParameters() const;

  const ModelConfig& config() const { return config_; }
  at::ScalarType dtype() const { return dtype_; }
  at::Device device() const { return device_; }

 private:
  struct Layer {
    at::Tensor input_norm, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, q_norm, k_norm, post_norm,
        gate_w, up_w, down_w;
  };
  Transformer(const ModelConfig& config, at::ScalarType dtype, at::Device device);
  // Every parameter as (name, slot) pairs, so naming lives in one place.
  std::vector<std::pair<std::string, at::Tensor*>> Slots();
  std::vector<std::pair<std::string, const at::Tensor*>> Slots() const;
  // The expected shape of every parameter, by name.
  std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedShapes() const;

  at::Tensor RotaryInvFreq() const;
  // The decoder stack. positions int64 [B, T]; allowed bool [B, 1, T, S]; with `cache`, keys
  // and values are written at slots [cache.length(), cache.length() + T).
  ForwardOutput Run(const at::Tensor& input_ids, const at::Tensor& positions,
                    const at::Tensor& allowed, KvCache* cache,
                    const std::vector<int64_t>& capture_layers) const;

  ModelConfig config_;
  at::ScalarType dtype_;
  at::Device device_;
  at::Tensor embed_, final_norm_, lm_head_;  // lm_head_ undefined when tied
  std::vector<Layer> layers_;
  at::Tensor inv_freq_;  // float32 [head_dim / 2]
};

}  // namespace rhythm::common::model

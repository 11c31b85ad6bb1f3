// Transformer: a Llama / Qwen2 / Qwen3 decoder written directly on ATen, with the Hugging Face
// tensor names, a training forward over padded batches, and prefill and one-token decode steps
// over a preallocated, per-slot KV cache.
//
//   ids ─ embed_tokens ─┬─▶ [ RMSNorm ─ q,k,v proj (+bias) ─ (q/k RMSNorm) ─ RoPE ─ GQA attention
//                       │      ─ o_proj ] + residual ─▶ [ RMSNorm ─ SwiGLU MLP ] + residual ─▶ …
//                       └─▶ … × num_layers ─ RMSNorm ─ lm_head (or tied embed_tokens) ─▶ logits
//
// Attention is computed explicitly (matmul → softmax in fp32 → matmul): LibTorch 1.13 has no
// fused kernel that would be faster on CPU, and it lets any layer hand its probabilities to a
// caller (the attention summaries of the rollout engine; the reference computation). Under
// autograd that keeps a [B, heads, T, T] tensor per layer for backward, so the training forward
// can instead run layers nobody taps through block_attention.h (blocks of query rows, Q, K, V
// kept, probabilities recomputed in backward) and checkpoint whole layers (checkpoint.h); see
// ForwardOptions.
//
// Why not torch::nn::Module: the model is a handful of named tensors and ~20 ATen ops; holding
// them directly keeps <torch/torch.h> (16 s per translation unit) out of this header and every
// includer, and makes the Hugging Face names the only names. Parameters are leaf tensors; call
// SetRequiresGrad(true) before training and hand Parameters() to the optimiser.
//
// Thread-safety: Forward, Prefill and DecodeStep are const and may run concurrently on
// different caches; changing parameters (optimiser step, loading) must not overlap them.
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

// How the training forward computes and keeps attention (see Transformer::Forward).
struct ForwardOptions {
  // Layers whose probabilities are returned in ForwardOutput::attention, in this order. These
  // layers attend explicitly over the whole sequence and, under autograd, keep their
  // [B, heads, T, T] probabilities for backward.
  std::vector<int64_t> capture_layers;
  // Query rows per block for the other layers (block_attention.h): they keep only Q, K and V
  // for backward and recompute each block's probabilities there. 0 = the explicit path,
  // probabilities kept for backward (the default, what the rollout engine and tools use).
  // Negative is INVALID_ARGUMENT.
  int64_t attention_chunk = 0;
  // Recompute each decoder layer in backward instead of keeping its activations
  // (checkpoint.h): a layer then keeps only its input for backward. Captured layers are not
  // checkpointed (their probabilities are returned anyway). No effect without grad mode.
  bool activation_checkpointing = false;

  // The learner's gradient forward: trainer.attention_chunk and
  // trainer.activation_checkpointing, no capture.
  static ForwardOptions Training(int64_t attention_chunk, bool activation_checkpointing) {
    ForwardOptions o;
    o.attention_chunk = attention_chunk;
    o.activation_checkpointing = activation_checkpointing;
    return o;
  }
};

// Keys and values of every layer for a fixed number of generation slots, preallocated to a
// fixed capacity so decoding never reallocates. Each slot holds one sequence from cache
// position 0 with its own length, so one slot can take a new sequence (Clear, then Prefill)
// while the others go on decoding: continuous batching. Also holds the decode step's
// workspace. Not thread-safe; one cache per generation batch.
class KvCache {
 public:
  KvCache(const ModelConfig& config, int64_t slots, int64_t capacity, at::ScalarType dtype,
          at::Device device);
  ~KvCache();

  int64_t slots() const { return slots_; }
  int64_t capacity() const { return capacity_; }
  // Tokens held by `slot` (its next token's rotary position).
  int64_t length(int64_t slot) const { return lengths_[slot]; }
  // Empties one slot (its old keys are never read again) or all of them.
  void Clear(int64_t slot) { lengths_[slot] = 0; }
  void Reset();
  // Makes slot `to` hold what slot `from` of `source` holds (a shared prompt prefilled once;
  // same model, capacity at least the source's length).
  void CopySlot(const KvCache& source, int64_t from, int64_t to);

 private:
  friend class Transformer;
  struct Workspace;
  int64_t slots_, capacity_;
  std::vector<int64_t> lengths_;
  std::vector<at::Tensor> k_, v_;  // per layer [slots, num_kv_heads, capacity, head_dim]
  std::unique_ptr<Workspace> ws_;
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
  // The same with chunked attention and activation checkpointing as `options` asks. Logits,
  // probabilities and every parameter's gradient match the explicit path's within float
  // rounding (block_attention_test.cc: 1e-5 of the gradient's largest entry); what is kept
  // for backward, per layer: explicit, [B, heads, T, T] probabilities + the [B, 1, T, T] mask
  // + O(T) activations; chunked, O(T) activations only; checkpointed, the layer's input.
  absl::StatusOr<ForwardOutput> Forward(const at::Tensor& input_ids,
                                        const at::Tensor& attention_mask,
                                        const ForwardOptions& options) const;

  // Writes one prompt into each listed empty slot (positions from 0) and returns the logits of
  // every prompt's last token, float32 [slots.size(), vocab]. INVALID_ARGUMENT for a slot out
  // of range, not empty or listed twice, an empty prompt or an id outside the vocabulary;
  // FAILED_PRECONDITION when a prompt does not fit the capacity.
  absl::StatusOr<at::Tensor> Prefill(const std::vector<int64_t>& slots,
                                     const std::vector<std::vector<int32_t>>& prompts,
                                     KvCache& cache) const;

  // One decode step: feeds ids[r] to every active slot r (active[r] != 0), appends its key and
  // value, and returns logits float32 [slots, vocab] (rows of inactive slots are unspecified;
  // the tensor is the cache's workspace, valid until the next step). attention[i] is captured
  // layer i's probabilities of the fed tokens, float32 [slots, num_heads, capacity]: row (r, h)
  // holds slot r's softmax over its keys 0 .. length(r) - 1 (after the step); entries past that
  // and rows of inactive slots are unspecified. FAILED_PRECONDITION when an active slot is full.
  //
  // fp32 models on the CPU take the decode kernels (decode_kernels.h); others, and every model
  // after UseDecodeKernels(false), the generic ATen ops. Both give the training forward's
  // logits and attention within float rounding (transformer_test.cc).
  absl::StatusOr<ForwardOutput> DecodeStep(const std::vector<int64_t>& ids,
                                           const std::vector<uint8_t>& active, KvCache& cache,
                                           const std::vector<int64_t>& capture_layers = {}) const;
  // For tests and benchmarks: false sends DecodeStep through the generic ATen ops.
  void UseDecodeKernels(bool use) { use_decode_kernels_ = use; }

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
    // The storage of q/k/v (rows q, then k, then v) and of gate/up: the named weights above are
    // row views of these, so a decode step does one GEMM for each while loading, the optimiser
    // and autograd see the Hugging Face tensors.
    at::Tensor qkv_w, qkv_b, gate_up_w;
  };
  Transformer(const ModelConfig& config, at::ScalarType dtype, at::Device device);
  // Every parameter as (name, slot) pairs, so naming lives in one place.
  std::vector<std::pair<std::string, at::Tensor*>> Slots();
  std::vector<std::pair<std::string, const at::Tensor*>> Slots() const;
  // The expected shape of every parameter, by name.
  std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedShapes() const;

  at::Tensor RotaryInvFreq() const;
  absl::Status CheckCaptureLayers(const std::vector<int64_t>& layers) const;
  // How Run reads and writes a KvCache: kPrefill writes the keys and values of the T tokens
  // of row i to slot rows[i] at positions [0, T) and attends within the chunk; kDecode (T = 1)
  // writes row rows[i]'s at position pos[i] and attends over the whole capacity.
  struct CacheAccess {
    enum Mode { kNone, kPrefill, kDecode } mode = kNone;
    KvCache* cache = nullptr;
    at::Tensor rows, pos;  // int64 [R]
  };
  // The training forward's choices (ForwardOptions): key_mask bool [B, T] for the chunked
  // attention, which builds its own causal mask per block. Run without one: explicit layers.
  struct TrainingAttention {
    at::Tensor key_mask;
    int64_t chunk = 0;
    bool checkpointing = false;
  };
  // What every decoder layer reads besides its input; held by value because a checkpointed
  // layer runs again in backward, after Run has returned.
  struct LayerInputs {
    at::Tensor cos, sin;  // [B, 1, T, head_dim], the model dtype
    at::Tensor allowed;   // bool [B, 1, T, S]; undefined when every layer is chunked
    CacheAccess cache;
    TrainingAttention train;
  };
  // The decoder stack. positions int64 [B, T]; allowed bool [B, 1, T, S]. With last_index
  // (int64 [B]) only that token's logits are computed: logits [B, 1, V].
  ForwardOutput Run(const at::Tensor& input_ids, const at::Tensor& positions,
                    const at::Tensor& allowed, const CacheAccess& cache,
                    const std::vector<int64_t>& capture_layers, const at::Tensor& last_index = {},
                    const TrainingAttention* train = nullptr) const;
  // Decoder layer l on hidden [B, T, hidden_size]; with probs_out, the explicit path, and the
  // layer's probabilities float32 [B, heads, T, S] land there.
  at::Tensor DecoderLayer(int64_t l, const at::Tensor& hidden, const LayerInputs& in,
                          at::Tensor* probs_out) const;
  ForwardOutput DecodeWithKernels(const std::vector<int64_t>& ids,
                                  const std::vector<uint8_t>& active, KvCache& cache,
                                  const std::vector<int64_t>& capture_layers) const;
  ForwardOutput DecodeGeneric(const std::vector<int64_t>& ids, const std::vector<uint8_t>& active,
                              KvCache& cache, const std::vector<int64_t>& capture_layers) const;

  ModelConfig config_;
  at::ScalarType dtype_;
  at::Device device_;
  at::Tensor embed_, final_norm_, lm_head_;  // lm_head_ undefined when tied
  std::vector<Layer> layers_;
  at::Tensor inv_freq_;  // float32 [head_dim / 2]
  bool use_decode_kernels_ = true;
};

}  // namespace rhythm::common::model

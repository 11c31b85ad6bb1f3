// Decode kernels: the fp32 CPU loops of one decode step (one new token per generation slot), in
// place of the ~30 ATen ops per layer the generic path dispatches. The profile of the generic
// path (perf, bench shape, batch 16) showed the time in per-op dispatch, allocation, page faults
// and thread hand-offs, not arithmetic; these fuse what lies between the GEMMs (which stay in
// BLAS through ATen) and read the KV cache in place.
//
// Pure functions on raw row-major float arrays: no tensors, no state, no allocation beyond a
// stack row. Rows run in parallel over the ATen intra-op pool (at::parallel_for), so with one
// torch thread (rhythm train's layout) they run inline. Each has a brute-force test in
// decode_kernels_test.cc against the ATen ops it replaces.
#pragma once

#include <cstdint>
#include <vector>

namespace rhythm::common::model::kernels {

// The linear layers of a decode step, out = x W^T (+ bias) (+ out when accumulate) for x [m, k]
// row-major and m (the slots) small. At m = 16 the profile of the BLAS path showed its packing
// of W (sgemm_incopy), redone on every call, taking twice the time of the multiply itself;
// here W is packed once per weight version (PackWeight) into panels of kPanel output columns,
// each [k][kPanel] contiguous (the last zero-padded), and LinearPacked streams them in order.
inline constexpr int64_t kPanel = 64;
struct PackedWeight {
  std::vector<float> data;
  int64_t n = 0, k = 0;
};
void PackWeight(const float* w, int64_t n, int64_t k, PackedWeight* out);

// Four rows of x against kPanel columns of W at a time: sixteen vector accumulators and no
// horizontal sums (a BLAS micro-kernel's shape). For large m (prefill, training) use BLAS.
void LinearPacked(const float* x, int64_t m, const PackedWeight& w, const float* bias,
                  bool accumulate, float* out);

// out[r] = weight * (x[r] * rsqrt(mean(x[r]^2) + eps)) for `rows` rows of width d (Hugging
// Face's RMSNorm in fp32). out may alias x.
void RmsNormRows(const float* x, const float* weight, double eps, int64_t rows, int64_t d,
                 float* out);

// The per-slot part of attention's input side, for every active slot r (active[r] != 0):
//   q = qkv[r, 0:H*hd], k = qkv[r, H*hd : (H+KV)*hd], v = the rest, per head;
//   optional per-head RMSNorm of q and k (q_norm / k_norm non-null, Qwen3);
//   rotary embedding at position pos[r] (non-interleaved halves; cos/sin tables [*, hd/2]);
//   q → q_out[r, H, hd]; k, v → the cache at [r, kv_head, pos[r], :] (cache rows are
//   [slots, KV, capacity, hd]).
struct RopeStoreArgs {
  const float* qkv = nullptr;
  int64_t slots = 0, heads = 0, kv_heads = 0, head_dim = 0, capacity = 0;
  const uint8_t* active = nullptr;
  const int64_t* pos = nullptr;
  const float* cos = nullptr;  // [max_position, hd / 2]
  const float* sin = nullptr;
  const float* q_norm = nullptr;  // [hd] or null
  const float* k_norm = nullptr;
  double eps = 1e-6;
  float* q_out = nullptr;
  float* k_cache = nullptr;
  float* v_cache = nullptr;
};
void RopeAndStore(const RopeStoreArgs& a);

// Softmax attention of one query per active slot over that slot's keys [0, length[r]) in the
// cache, read in place (grouped-query: head h reads kv head h / (H / KV)):
//   p = softmax(q . k_s * scale), out[r, h*hd : (h+1)*hd] = sum_s p_s v_s.
// With probs non-null, p is also written to probs[r, h, 0:length[r]] ([slots, H, capacity]).
struct DecodeAttentionArgs {
  const float* q = nullptr;  // [slots, H, hd]
  const float* k_cache = nullptr;
  const float* v_cache = nullptr;
  int64_t slots = 0, heads = 0, kv_heads = 0, head_dim = 0, capacity = 0;
  const uint8_t* active = nullptr;
  const int64_t* length = nullptr;  // keys per slot, the new token's included
  double scale = 1.0;
  float* out = nullptr;    // [slots, H * hd]
  float* probs = nullptr;  // optional
};
void DecodeAttention(const DecodeAttentionArgs& a);

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, n + i] for rows of width 2n (gate then up).
void SiluMulRows(const float* gate_up, int64_t rows, int64_t n, float* out);

}  // namespace rhythm::common::model::kernels

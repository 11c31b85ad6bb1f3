// Attention summaries of generated responses: WAAD and FAI per response token
// (docs/method.md §1-§4), computed two ways that must agree:
//
//  * online, inside the decode loop (SummaryAccumulator): each decode step hands over the
//    attention row of the token it fed, for the tapped layers only, and the accumulator adds it
//    into O(N x tapped heads) state with a handful of tensor ops on the model's device;
//  * the reference (ReferenceSummary): one forward pass over prompt + response with full
//    attention maps, then the formulas as written, in loops. For tests and
//    `rhythm generate --reference`.
//
// Definitions (0-based positions; R = response positions; A_h a tapped head's softmax map):
//   d_h      = (1/|R|) sum_{t in R} sum_{s<=t} A_h[t,s] (t - s)            (all keys, prompt too)
//   local    = the round(q * heads) heads with the smallest d_h, global = the largest; at least
//              one each; ties go to the lower flat head index (layer-major: tap * H + head)
//   WAAD_t   = mean_{h in local} sum_{s<=t} A_h[t,s] min(t - s, W)                for t in R
//   FAI_s    = mean_{h in global} mean_{t in T(s)} A_h[t,s],
//              T(s) = {t in R : s + lo <= t <= s + hi}; NaN (undefined) when T(s) is empty
// Every response token's row is included, the last one's too.
#pragma once

#include <cstdint>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"
#include "common/model/transformer.h"

namespace rhythm::common::rollout {

struct TapOptions {
  // 0-based layers to tap; empty = DefaultTapLayers(num_layers).
  std::vector<int64_t> layers;
  int64_t window = 10;   // W
  int64_t band_lo = 10;  // H_lo
  int64_t band_hi = 100; // H_hi
  double head_quantile = 0.3;
};

// The paper's five evenly spaced layers in the middle third: linspace(floor(L/3), floor(2L/3), 5)
// rounded half away from zero, duplicates removed (small models have fewer than five).
std::vector<int64_t> DefaultTapLayers(int64_t num_layers);

// Fills in default layers and checks ranges against the model. INVALID_ARGUMENT names the
// option and the value.
absl::StatusOr<TapOptions> ResolveTapOptions(const TapOptions& options, int64_t num_layers);

struct AttentionSummary {
  std::vector<float> waad;  // [T]
  std::vector<float> fai;   // [T], NaN where undefined
  std::vector<int64_t> tap_layers;
  int64_t heads_per_layer = 0;
  std::vector<int64_t> local_heads;   // flat indices, ascending
  std::vector<int64_t> global_heads;  // flat indices, ascending
  std::vector<double> head_distance;  // d_h per flat head
};

// The local / global split of heads by mean distance (see the header comment).
void SplitHeads(const std::vector<double>& distance, double quantile,
                std::vector<int64_t>* local, std::vector<int64_t>* global);

// Online accumulation for a generation batch. Layout assumptions, which the engine guarantees:
// every sequence's prompt occupies cache slots [0, prompt_slots) (left-padded), and response
// token j of every sequence occupies slot prompt_slots + j, so the query fed at response index
// j is the same slot for the whole batch. All state lives on `device`; nothing is copied to the
// host before Finish. Not thread-safe.
class SummaryAccumulator {
 public:
  SummaryAccumulator(const TapOptions& resolved, int64_t batch, int64_t heads_per_layer,
                     int64_t prompt_slots, int64_t max_new_tokens, at::Device device);

  // Adds the attention rows of response token `response_index` (one [B, H, 1, S] tensor per
  // tapped layer, S = prompt_slots + response_index + 1). row_mask float [B]: 1 where the fed
  // token is a real response token of that sequence, 0 for padding.
  void AddRows(const std::vector<at::Tensor>& probs, int64_t response_index,
               const at::Tensor& row_mask);

  // The summaries; response_lengths[b] is the number of response tokens of sequence b (each of
  // whose rows must have been added).
  std::vector<AttentionSummary> Finish(const std::vector<int64_t>& response_lengths) const;

  // Bytes of accumulator state (for the memory comparison with full maps).
  int64_t StateBytes() const;

 private:
  TapOptions options_;
  int64_t batch_, heads_per_layer_, prompt_slots_, max_new_;
  at::Tensor weights_;   // float [capacity, 2]: (distance to the newest slot, min(that, W))
  at::Tensor distance_;  // float [B, K]: sum over rows of sum_s A (t - s)
  at::Tensor waad_;      // float [B, K, max_new]
  at::Tensor fai_sum_;   // float [B, K, max_new]: sum over band rows of A[t, s], by key index
};

// The slow, obvious way, for one sequence: a full forward over prompt + response with every
// tapped layer's N x N maps, then the definitions in loops. prompt and response are unpadded.
absl::StatusOr<AttentionSummary> ReferenceSummary(const model::Transformer& model,
                                                  const std::vector<int32_t>& prompt,
                                                  const std::vector<int32_t>& response,
                                                  const TapOptions& options);

}  // namespace rhythm::common::rollout

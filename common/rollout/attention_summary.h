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
#include "common/rollout/summary_codec.h"

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

// Online accumulation, one sequence per generation slot (continuous batching refills a slot with
// a new sequence while the others go on). After each decode step the engine hands over the
// attention rows of the tokens it fed: slot r's j-th response token sits at key position
// prompt_len + j and its row covers keys [0, prompt_len + j]. State is O(tapped heads x
// max_new_tokens) per slot, on the host (a model on another device has its captured rows
// copied over, a few KB per step). Not thread-safe.
class SummaryAccumulator {
 public:
  SummaryAccumulator(const TapOptions& resolved, int64_t slots, int64_t heads_per_layer,
                     int64_t max_new_tokens);

  // A new sequence whose prompt has `prompt_len` tokens enters `slot`.
  void Start(int64_t slot, int64_t prompt_len);
  // Adds the row of the slot's next response token, from one decode step's captured attention:
  // one float32 [slots, heads_per_layer, capacity] CPU tensor per tapped layer, in tap order.
  void AddRow(int64_t slot, const std::vector<at::Tensor>& probs);
  // The summary of the slot's sequence, over every row added since Start.
  AttentionSummary Finish(int64_t slot) const;

  // Bytes of accumulator state (for the memory comparison with full maps).
  int64_t StateBytes() const;

 private:
  TapOptions options_;
  int64_t heads_per_layer_, heads_, max_new_;
  std::vector<int64_t> prompt_len_, rows_;
  std::vector<double> distance_;  // [slots, K]: sum over rows of sum_s A (t - s)
  std::vector<float> waad_;       // [slots, K, max_new]
  std::vector<float> fai_sum_;    // [slots, K, max_new]: sum over band rows of A[t, s], by key
};

// The wire fields of a summary computed with `resolved` taps (what the actor encodes with
// EncodeSummary).
SummaryFields ToSummaryFields(const AttentionSummary& summary, const TapOptions& resolved);

// The summary of one sequence from a forward pass's captured attention maps, through the same
// online accumulation the actor runs (so it is the actor's math exactly, fed all rows at once):
// maps[i] is tapped layer resolved.layers[i]'s float32 CPU [heads_per_layer, N, N] map (a
// training forward's ForwardOutput::attention[i][b]), N >= prompt_len + response_len; rows and
// keys past the sequence (right padding) are never read. The learner's pi_old summaries and
// `rhythm analyze`'s per-layer-third summaries come from here. INVALID_ARGUMENT for a map count
// or shape that does not fit, or response_len < 1.
absl::StatusOr<AttentionSummary> SummaryFromMaps(const TapOptions& resolved,
                                                 const std::vector<at::Tensor>& maps,
                                                 int64_t prompt_len, int64_t response_len);

// The slow, obvious way, for one sequence: a full forward over prompt + response with every
// tapped layer's N x N maps, then the definitions in loops. prompt and response are unpadded.
absl::StatusOr<AttentionSummary> ReferenceSummary(const model::Transformer& model,
                                                  const std::vector<int32_t>& prompt,
                                                  const std::vector<int32_t>& response,
                                                  const TapOptions& options);

}  // namespace rhythm::common::rollout

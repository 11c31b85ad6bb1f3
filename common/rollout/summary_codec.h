// The attention summary's one codec: rhythm.v1.AttentionSummary on the wire (fp16-packed series,
// proto/rhythm/v1/rollout.proto) <-> its fields in memory. The actor encodes with it; the
// learner's validation, trainer and dumps decode with it. No torch: the series are plain
// vectors.
//
// fp16 keeps 11 significant bits: a decoded value is within 2^-11 relative of the original
// (exact for values fp16 holds, e.g. small integers and multiples of 2^-k), NaN stays NaN (FAI
// undefined), and a finite value beyond fp16's range (65504) becomes an infinity, which
// validation rejects.
#pragma once

#include <cstdint>
#include <vector>

#include "rhythm/v1/rollout.pb.h"

namespace rhythm::common::rollout {

struct SummaryFields {
  std::vector<float> waad;  // WAAD_t per response token
  std::vector<float> fai;   // FAI_t per response token, NaN where undefined
  int64_t window = 0;       // WAAD window W
  int64_t band_lo = 0, band_hi = 0;  // FAI band
  std::vector<int64_t> tap_layers;
  int64_t heads_per_layer = 0;
  std::vector<int64_t> local_heads, global_heads;  // flat indices
};

v1::AttentionSummary EncodeSummary(const SummaryFields& fields);

// Every field as sent; the series hold as many values as were sent (validation checks that
// this is the response's length).
SummaryFields DecodeSummary(const v1::AttentionSummary& summary);

}  // namespace rhythm::common::rollout

#include "common/rollout/summary_codec.h"

#include "common/fp16.h"

namespace rhythm::common::rollout {

v1::AttentionSummary EncodeSummary(const SummaryFields& f) {
  v1::AttentionSummary s;
  s.set_waad_f16(EncodeFp16(f.waad));
  s.set_fai_f16(EncodeFp16(f.fai));
  s.set_window(static_cast<uint32_t>(f.window));
  s.set_fai_band_lo(static_cast<uint32_t>(f.band_lo));
  s.set_fai_band_hi(static_cast<uint32_t>(f.band_hi));
  for (int64_t l : f.tap_layers) s.add_tapped_layers(static_cast<uint32_t>(l));
  s.set_heads_per_layer(static_cast<uint32_t>(f.heads_per_layer));
  for (int64_t h : f.local_heads) s.add_local_heads(static_cast<uint32_t>(h));
  for (int64_t h : f.global_heads) s.add_global_heads(static_cast<uint32_t>(h));
  return s;
}

SummaryFields DecodeSummary(const v1::AttentionSummary& s) {
  SummaryFields f;
  f.waad = DecodeFp16(s.waad_f16());
  f.fai = DecodeFp16(s.fai_f16());
  f.window = s.window();
  f.band_lo = s.fai_band_lo();
  f.band_hi = s.fai_band_hi();
  f.tap_layers.assign(s.tapped_layers().begin(), s.tapped_layers().end());
  f.heads_per_layer = s.heads_per_layer();
  f.local_heads.assign(s.local_heads().begin(), s.local_heads().end());
  f.global_heads.assign(s.global_heads().begin(), s.global_heads().end());
  return f;
}

}  // namespace rhythm::common::rollout

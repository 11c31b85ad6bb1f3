#include "common/rollout/attention_summary.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace rhythm::common::rollout {

std::vector<int64_t> DefaultTapLayers(int64_t num_layers) {
  const double lo = static_cast<double>(num_layers / 3);
  const double hi = static_cast<double>((2 * num_layers) / 3);
  std::vector<int64_t> out;
  for (int i = 0; i < 5; ++i) {
    const int64_t layer = std::llround(lo + (hi - lo) * i / 4.0);
    if (out.empty() || out.back() != layer) out.push_back(std::min(layer, num_layers - 1));
  }
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

absl::StatusOr<TapOptions> ResolveTapOptions(const TapOptions& options, int64_t num_layers) {
  TapOptions out = options;
  if (out.layers.empty()) out.layers = DefaultTapLayers(num_layers);
  std::vector<int64_t> sorted = out.layers;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i] < 0 || sorted[i] >= num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("tap layer ", sorted[i],
                                                     " is outside the model's layers [0, ",
                                                     num_layers, ")"));
    }
    if (i > 0 && sorted[i] == sorted[i - 1]) {
      return absl::InvalidArgumentError(absl::StrCat("tap layer ", sorted[i], " listed twice"));
    }
  }
  out.layers = sorted;
  if (out.window < 1) {
    return absl::InvalidArgumentError(absl::StrCat("window = ", out.window, " must be >= 1"));
  }
  if (out.band_lo < 0 || out.band_hi < out.band_lo) {
    return absl::InvalidArgumentError(absl::StrCat("FAI band [", out.band_lo, ", ", out.band_hi,
                                                   "] must satisfy 0 <= lo <= hi"));
  }
  if (!(out.head_quantile > 0 && out.head_quantile <= 0.5)) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_quantile = ", out.head_quantile, " must be in (0, 0.5]"));
  }
  return out;
}

void SplitHeads(const std::vector<double>& distance, double quantile,
                std::vector<int64_t>* local, std::vector<int64_t>* global) {
  const int64_t n = static_cast<int64_t>(distance.size());
  const int64_t k = std::min<int64_t>(n, std::max<int64_t>(1, std::llround(quantile * n)));
  std::vector<int64_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::vector<int64_t> asc = idx, desc = idx;
  std::stable_sort(asc.begin(), asc.end(),
                   [&](int64_t a, int64_t b) { return distance[a] < distance[b]; });
  std::stable_sort(desc.begin(), desc.end(),
                   [&](int64_t a, int64_t b) { return distance[a] > distance[b]; });
  local->assign(asc.begin(), asc.begin() + k);
  global->assign(desc.begin(), desc.begin() + k);
  std::sort(local->begin(), local->end());
  std::sort(global->begin(), global->end());
}

SummaryAccumulator::SummaryAccumulator(const TapOptions& resolved, int64_t slots,
                                       int64_t heads_per_layer, int64_t max_new_tokens)
    : options_(resolved),
      heads_per_layer_(heads_per_layer),
      heads_(static_cast<int64_t>(resolved.layers.size()) * heads_per_layer),
      max_new_(max_new_tokens),
      prompt_len_(slots, 0),
      rows_(slots, 0),
      distance_(slots * heads_, 0.0),
      waad_(slots * heads_ * max_new_tokens, 0.0f),
      fai_sum_(slots * heads_ * max_new_tokens, 0.0f) {}

void SummaryAccumulator::Start(int64_t slot, int64_t prompt_len) {
  prompt_len_[slot] = prompt_len;
  rows_[slot] = 0;
  std::fill_n(distance_.begin() + slot * heads_, heads_, 0.0);
  std::fill_n(waad_.begin() + slot * heads_ * max_new_, heads_ * max_new_, 0.0f);
  std::fill_n(fai_sum_.begin() + slot * heads_ * max_new_, heads_ * max_new_, 0.0f);
}

void SummaryAccumulator::AddRow(int64_t slot, const std::vector<at::Tensor>& probs) {
  const int64_t j = rows_[slot]++;
  const int64_t p = prompt_len_[slot], t = p + j;  // the query's key position
  const int64_t window = options_.window;
  // Response keys whose FAI band holds this row: index i with i + lo <= j <= i + hi.
  const int64_t band_first = std::max<int64_t>(0, j - options_.band_hi);
  const int64_t band_last = j - options_.band_lo;
  for (size_t layer = 0; layer < probs.size(); ++layer) {
    const at::Tensor& a = probs[layer];
    const int64_t capacity = a.size(2);
    for (int64_t h = 0; h < heads_per_layer_; ++h) {
      const float* row = a.data_ptr<float>() + (slot * heads_per_layer_ + h) * capacity;
      const int64_t k = static_cast<int64_t>(layer) * heads_per_layer_ + h;
      double dist = 0, waad = 0;
      for (int64_t s = 0; s <= t; ++s) {
        dist += static_cast<double>(row[s]) * static_cast<double>(t - s);
        waad += static_cast<double>(row[s]) * static_cast<double>(std::min(t - s, window));
      }
      distance_[slot * heads_ + k] += dist;
      float* w = waad_.data() + (slot * heads_ + k) * max_new_;
      w[j] = static_cast<float>(waad);
      float* f = fai_sum_.data() + (slot * heads_ + k) * max_new_;
      for (int64_t i = band_first; i <= band_last; ++i) f[i] += row[p + i];
    }
  }
}

int64_t SummaryAccumulator::StateBytes() const {
  return static_cast<int64_t>(distance_.size() * sizeof(double) +
                              (waad_.size() + fai_sum_.size()) * sizeof(float));
}

AttentionSummary SummaryAccumulator::Finish(int64_t slot) const {
  const int64_t n = rows_[slot], k = heads_;
  AttentionSummary s;
  s.tap_layers = options_.layers;
  s.heads_per_layer = heads_per_layer_;
  s.head_distance.resize(k);
  for (int64_t h = 0; h < k; ++h) {
    s.head_distance[h] = n > 0 ? distance_[slot * k + h] / static_cast<double>(n) : 0.0;
  }
  SplitHeads(s.head_distance, options_.head_quantile, &s.local_heads, &s.global_heads);
  const float* wp = waad_.data() + slot * k * max_new_;
  const float* fp = fai_sum_.data() + slot * k * max_new_;
  s.waad.resize(n);
  s.fai.resize(n);
  for (int64_t j = 0; j < n; ++j) {
    double w = 0, f = 0;
    for (int64_t h : s.local_heads) w += wp[h * max_new_ + j];
    for (int64_t h : s.global_heads) f += fp[h * max_new_ + j];
    s.waad[j] = static_cast<float>(w / static_cast<double>(s.local_heads.size()));
    const int64_t rows = std::min(n - 1, j + options_.band_hi) - (j + options_.band_lo) + 1;
    s.fai[j] = rows > 0 ? static_cast<float>(f / static_cast<double>(s.global_heads.size()) /
                                             static_cast<double>(rows))
                        : std::numeric_limits<float>::quiet_NaN();
  }
  return s;
}

SummaryFields ToSummaryFields(const AttentionSummary& summary, const TapOptions& resolved) {
  SummaryFields f;
  f.waad = summary.waad;
  f.fai = summary.fai;
  f.window = resolved.window;
  f.band_lo = resolved.band_lo;
  f.band_hi = resolved.band_hi;
  f.tap_layers = summary.tap_layers;
  f.heads_per_layer = summary.heads_per_layer;
  f.local_heads = summary.local_heads;
  f.global_heads = summary.global_heads;
  return f;
}

absl::StatusOr<AttentionSummary> SummaryFromMaps(const TapOptions& resolved,
                                                 const std::vector<at::Tensor>& maps,
                                                 int64_t prompt_len, int64_t response_len) {
  if (maps.size() != resolved.layers.size() || maps.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("summary from maps: ", maps.size(),
                                                   " maps for ", resolved.layers.size(),
                                                   " tapped layers"));
  }
  if (response_len < 1 || prompt_len < 0) {
    return absl::InvalidArgumentError(absl::StrCat("summary from maps: response_len = ",
                                                   response_len, ", prompt_len = ", prompt_len));
  }
  const int64_t total = prompt_len + response_len;
  const int64_t heads = maps[0].dim() == 3 ? maps[0].size(0) : 0;
  // Per layer, [N, heads, N]: the query's row of every head side by side, so one response
  // token's rows are a contiguous [1, heads, N] block, the layout AddRow reads.
  std::vector<at::Tensor> by_query;
  for (const at::Tensor& m : maps) {
    if (m.dim() != 3 || m.size(0) != heads || m.size(1) < total || m.size(2) < total ||
        m.scalar_type() != at::kFloat || !m.device().is_cpu()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "summary from maps: map of layer ", resolved.layers[by_query.size()], " is ",
          c10::toString(m.scalar_type()), " [", absl::StrJoin(m.sizes(), ", "), "] on ",
          m.device().str(), "; want float32 CPU [", heads, ", >= ", total, ", >= ", total, "]"));
    }
    by_query.push_back(m.permute({1, 0, 2}).contiguous());
  }
  SummaryAccumulator acc(resolved, 1, heads, response_len);
  acc.Start(0, prompt_len);
  std::vector<at::Tensor> rows(by_query.size());
  for (int64_t j = 0; j < response_len; ++j) {
    for (size_t l = 0; l < by_query.size(); ++l) rows[l] = by_query[l].narrow(0, prompt_len + j, 1);
    acc.AddRow(0, rows);
  }
  return acc.Finish(0);
}

absl::StatusOr<AttentionSummary> ReferenceSummary(const model::Transformer& model,
                                                  const std::vector<int32_t>& prompt,
                                                  const std::vector<int32_t>& response,
                                                  const TapOptions& options) {
  RHYTHM_ASSIGN_OR_RETURN(TapOptions o, ResolveTapOptions(options, model.config().num_layers));
  if (response.empty()) return absl::InvalidArgumentError("reference summary: empty response");
  std::vector<int64_t> ids(prompt.begin(), prompt.end());
  ids.insert(ids.end(), response.begin(), response.end());
  const int64_t total = static_cast<int64_t>(ids.size());
  const int64_t p = static_cast<int64_t>(prompt.size());
  const int64_t n = static_cast<int64_t>(response.size());
  RHYTHM_ASSIGN_OR_RETURN(
      model::ForwardOutput fwd,
      model.Forward(at::tensor(ids, at::kLong).unsqueeze(0), at::ones({1, total}), o.layers));
  const int64_t heads = model.config().num_heads;
  // maps[tap][head]: the full N x N map, as the paper materialises it.
  std::vector<at::Tensor> maps;
  std::vector<at::TensorAccessor<double, 3>> acc;
  for (const at::Tensor& m : fwd.attention) {
    maps.push_back(m[0].to(at::kCPU, at::kDouble).contiguous());
    acc.push_back(maps.back().accessor<double, 3>());
  }
  AttentionSummary s;
  s.tap_layers = o.layers;
  s.heads_per_layer = heads;
  const int64_t k = static_cast<int64_t>(maps.size()) * heads;
  auto A = [&](int64_t flat, int64_t t, int64_t src) {
    return acc[flat / heads][flat % heads][t][src];
  };
  // d_h over response rows, every key.
  s.head_distance.assign(k, 0.0);
  for (int64_t h = 0; h < k; ++h) {
    double sum = 0;
    for (int64_t t = p; t < total; ++t) {
      for (int64_t src = 0; src <= t; ++src) sum += A(h, t, src) * static_cast<double>(t - src);
    }
    s.head_distance[h] = sum / n;
  }
  // Head split by counting how many heads rank before each one.
  s.local_heads.clear();
  s.global_heads.clear();
  const int64_t take = std::min<int64_t>(k, std::max<int64_t>(1, std::llround(o.head_quantile * k)));
  for (int64_t h = 0; h < k; ++h) {
    int64_t before_low = 0, before_high = 0;
    for (int64_t g = 0; g < k; ++g) {
      const double dg = s.head_distance[g], dh = s.head_distance[h];
      if (dg < dh || (dg == dh && g < h)) ++before_low;
      if (dg > dh || (dg == dh && g < h)) ++before_high;
    }
    if (before_low < take) s.local_heads.push_back(h);
    if (before_high < take) s.global_heads.push_back(h);
  }
  // Averaged maps of each group, then the formulas.
  s.waad.assign(n, 0.0f);
  s.fai.assign(n, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const int64_t t = p + j;
    double w = 0;
    for (int64_t src = 0; src <= t; ++src) {
      double a = 0;
      for (int64_t h : s.local_heads) a += A(h, t, src);
      a /= static_cast<double>(s.local_heads.size());
      w += a * static_cast<double>(std::min<int64_t>(t - src, o.window));
    }
    s.waad[j] = static_cast<float>(w);
    double f = 0;
    int64_t rows = 0;
    for (int64_t row = t + o.band_lo; row <= std::min(total - 1, t + o.band_hi); ++row) {
      double a = 0;
      for (int64_t h : s.global_heads) a += A(h, row, t);
      f += a / static_cast<double>(s.global_heads.size());
      ++rows;
    }
    s.fai[j] = rows > 0 ? static_cast<float>(f / rows) : std::numeric_limits<float>::quiet_NaN();
  }
  return s;
}

}  // namespace rhythm::common::rollout

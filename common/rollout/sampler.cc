#include "common/rollout/sampler.h"

#include <limits>

#include "ATen/ATen.h"

namespace rhythm::common::rollout {

at::Tensor FilterLogits(const at::Tensor& scaled_logits, int64_t top_k, double top_p) {
  const int64_t vocab = scaled_logits.size(-1);
  const double neg_inf = -std::numeric_limits<double>::infinity();
  at::Tensor scaled = scaled_logits;
  if (top_k > 0 && top_k < vocab) {
    const at::Tensor kth = std::get<0>(scaled.topk(top_k, -1)).narrow(-1, top_k - 1, 1);
    scaled = scaled.masked_fill(scaled < kth, neg_inf);
  }
  if (top_p < 1.0) {
    auto [sorted, order] = scaled.sort(-1, /*descending=*/true);
    const at::Tensor probs = at::softmax(sorted, -1);
    // Drop a token when the mass of the tokens before it already reaches top_p; the first
    // token is always kept.
    const at::Tensor drop = (probs.cumsum(-1) - probs) >= top_p;
    scaled = scaled.scatter(-1, order, sorted.masked_fill(drop, neg_inf));
  }
  return scaled;
}

SampledTokens SampleNext(const at::Tensor& logits, const SamplingOptions& options,
                         at::Generator& generator) {
  SampledTokens out;
  if (options.temperature <= 0) {
    const at::Tensor logp = at::log_softmax(logits, -1);
    out.ids = logits.argmax(-1);
    out.logprobs = logp.gather(-1, out.ids.unsqueeze(-1)).squeeze(-1);
    out.entropy = -(logp.exp() * logp).sum(-1);
    return out;
  }
  const at::Tensor scaled =
      FilterLogits(options.temperature == 1.0 ? logits : logits / options.temperature,
                   options.top_k, options.top_p);
  const at::Tensor logp = at::log_softmax(scaled, -1);
  const at::Tensor p = logp.exp();
  out.ids = at::multinomial(p, 1, /*replacement=*/true, generator).squeeze(-1);
  out.logprobs = logp.gather(-1, out.ids.unsqueeze(-1)).squeeze(-1);
  // 0 * log 0 = 0 for filtered tokens.
  out.entropy = -at::where(p > 0, p * logp, at::zeros_like(p)).sum(-1);
  return out;
}

}  // namespace rhythm::common::rollout

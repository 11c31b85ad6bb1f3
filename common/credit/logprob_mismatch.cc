#include "common/credit/logprob_mismatch.h"

#include <algorithm>
#include <cmath>

#include "ATen/ATen.h"

namespace rhythm::common::credit {

double LogprobMismatch::weight_stddev() const {
  if (tokens == 0) return 0;
  const double mean = weight_sum / tokens;
  return std::sqrt(std::max(0.0, weight_sq_sum / tokens - mean * mean));
}

void AddLogprobMismatch(const at::Tensor& old, const at::Tensor& behaviour, const at::Tensor& mask,
                        LogprobMismatch& into) {
  at::NoGradGuard no_grad;
  const at::Tensor keep = mask.detach().to(at::kCPU).reshape({-1}) != 0;
  const at::Tensor d = (old.detach().to(at::kCPU, at::kDouble).reshape({-1}) -
                        behaviour.detach().to(at::kCPU, at::kDouble).reshape({-1}))
                           .masked_select(keep);
  const int64_t n = d.numel();
  if (n == 0) return;
  const at::Tensor w = d.exp();
  into.tokens += n;
  into.abs_sum += d.abs().sum().item<double>();
  into.abs_max = std::max(into.abs_max, d.abs().max().item<double>());
  into.weight_sum += w.sum().item<double>();
  into.weight_sq_sum += (w * w).sum().item<double>();
  into.weight_min = std::min(into.weight_min, w.min().item<double>());
  into.weight_max = std::max(into.weight_max, w.max().item<double>());
}

}  // namespace rhythm::common::credit

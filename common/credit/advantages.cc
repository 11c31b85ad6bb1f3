#include "common/credit/advantages.h"

#include <cmath>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"

namespace rhythm::common::credit {

absl::StatusOr<GroupAdvantages> ComputeGroupAdvantages(const at::Tensor& rewards,
                                                       const GroupAdvantageOptions& options) {
  if (!rewards.defined() || rewards.dim() != 2 || rewards.size(0) == 0 || rewards.size(1) == 0) {
    return absl::InvalidArgumentError(
        "rewards: expected a non-empty [groups, group_size] tensor");
  }
  const at::Tensor r = rewards.to(at::kDouble);
  const at::Tensor finite = at::isfinite(r);
  if (!finite.all().item<bool>()) {
    const at::Tensor bad = at::nonzero(finite.logical_not())[0];
    const int64_t g = bad[0].item<int64_t>(), i = bad[1].item<int64_t>();
    return absl::InvalidArgumentError(absl::StrCat("rewards[group ", g, ", sample ", i, "] = ",
                                                   r[g][i].item<double>(), " is not finite"));
  }
  const int64_t group_size = r.size(1);
  const at::Tensor mean = r.mean(1, /*keepdim=*/true);
  const at::Tensor centered = r - mean;
  GroupAdvantages out;
  out.zero_variance = (std::get<0>(r.max(1)) == std::get<0>(r.min(1)));
  at::Tensor adv;
  switch (options.estimator) {
    case v1::ADVANTAGE_ESTIMATOR_DR_GRPO:
      adv = centered;
      break;
    case v1::ADVANTAGE_ESTIMATOR_RLOO:
      adv = group_size > 1 ? centered * (static_cast<double>(group_size) / (group_size - 1))
                           : at::zeros_like(r);
      break;
    default: {
      const at::Tensor std =
          group_size > 1 ? r.std(1, /*unbiased=*/true, /*keepdim=*/true) : at::zeros_like(mean);
      adv = centered / (std + options.eps);
    }
  }
  // Equal rewards carry no signal: exactly zero, not rounding noise.
  adv = adv.masked_fill(out.zero_variance.unsqueeze(1), 0.0);
  out.advantages = adv.to(at::kFloat);
  return out;
}

at::Tensor ShapeAdvantages(const at::Tensor& gamma, const at::Tensor& advantage,
                           bool shape_negative) {
  const at::Tensor g = gamma.detach().to(at::kFloat);
  const at::Tensor a = advantage.detach().to(at::kFloat).unsqueeze(1);
  at::Tensor effective_gamma = g;
  if (!shape_negative) effective_gamma = at::where(a >= 0, g, at::ones_like(g));
  return effective_gamma * a;
}

double OverlongPenalty(int64_t length, int64_t max_length, int64_t buffer, double penalty) {
  if (buffer <= 0) return 0.0;
  const int64_t free_length = max_length - buffer;
  if (length <= free_length) return 0.0;
  if (length > max_length) return -penalty;
  return static_cast<double>(free_length - length) / static_cast<double>(buffer) * penalty;
}

}  // namespace rhythm::common::credit

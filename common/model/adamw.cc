#include "common/model/adamw.h"

#include <cmath>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"

namespace rhythm::common::model {

AdamW::AdamW(const TensorMap& params, const Options& options) : options_(options) {
  for (const auto& [name, p] : params) {
    names_.push_back(name);
    params_.push_back(p);
    exp_avg_.push_back(at::zeros_like(p, at::kFloat));
    exp_avg_sq_.push_back(at::zeros_like(p, at::kFloat));
  }
}

void AdamW::Step(double lr) {
  at::NoGradGuard no_grad;
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double c1 = 1 - std::pow(b1, steps_), c2 = 1 - std::pow(b2, steps_);
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i];
    if (!p.grad().defined()) continue;
    const at::Tensor g = p.grad().to(at::kFloat);
    exp_avg_[i].mul_(b1).add_(g, 1 - b1);
    exp_avg_sq_[i].mul_(b2).addcmul_(g, g, 1 - b2);
    const at::Tensor update = (exp_avg_[i] / c1) / ((exp_avg_sq_[i] / c2).sqrt() + options_.eps);
    if (options_.weight_decay > 0) p.mul_(1 - lr * options_.weight_decay);
    p.sub_((lr * update).to(p.scalar_type()));
  }
}

void AdamW::ZeroGrad() {
  for (at::Tensor& p : params_) p.mutable_grad() = at::Tensor();
}

double AdamW::GradNorm() const {
  double sq = 0;
  for (const at::Tensor& p : params_) {
    if (p.grad().defined()) sq += p.grad().to(at::kFloat).pow(2).sum().item<double>();
  }
  return std::sqrt(sq);
}

void AdamW::ScaleGrads(double scale) {
  for (at::Tensor& p : params_) {
    if (p.grad().defined()) p.mutable_grad().mul_(scale);
  }
}

TensorMap AdamW::State() const {
  TensorMap out;
  for (size_t i = 0; i < names_.size(); ++i) {
    out[names_[i] + ".exp_avg"] = exp_avg_[i];
    out[names_[i] + ".exp_avg_sq"] = exp_avg_sq_[i];
  }
  return out;
}

absl::Status AdamW::Restore(const TensorMap& state, int64_t steps) {
  for (size_t i = 0; i < names_.size(); ++i) {
    for (auto [suffix, dst] : {std::pair{".exp_avg", &exp_avg_[i]},
                               std::pair{".exp_avg_sq", &exp_avg_sq_[i]}}) {
      auto it = state.find(names_[i] + suffix);
      if (it == state.end() || it->second.sizes() != dst->sizes()) {
        return absl::InvalidArgumentError(
            absl::StrCat("optimizer state: missing or misshapen '", names_[i], suffix, "'"));
      }
      dst->copy_(it->second);
    }
  }
  steps_ = steps;
  return absl::OkStatus();
}

}  // namespace rhythm::common::model

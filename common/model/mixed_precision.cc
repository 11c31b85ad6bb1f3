#include "common/model/mixed_precision.h"

#include <utility>

#include "ATen/ATen.h"

namespace rhythm::common::model {

std::unique_ptr<MasterWeights> MasterWeights::From(const Transformer& compute) {
  at::NoGradGuard no_grad;
  TensorMap masters;
  for (const auto& [name, p] : compute.NamedParameters()) {
    masters[name] = p.detach().to(at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous();
    masters[name].requires_grad_(true);
  }
  return std::unique_ptr<MasterWeights>(new MasterWeights(std::move(masters)));
}

void MasterWeights::AccumulateGrads(Transformer& compute) const {
  at::NoGradGuard no_grad;
  for (auto& [name, p] : compute.NamedParameters()) {
    if (!p.grad().defined()) continue;
    at::Tensor master = masters_.at(name);
    if (master.grad().defined()) {
      master.mutable_grad().add_(p.grad().to(at::kFloat));
    } else {
      master.mutable_grad() = p.grad().to(at::kFloat, false, /*copy=*/true);
    }
    p.mutable_grad() = at::Tensor();
  }
}

void MasterWeights::DropGrads(Transformer& compute) {
  for (auto& [name, p] : compute.NamedParameters()) p.mutable_grad() = at::Tensor();
}

void MasterWeights::CopyTo(Transformer& compute) const {
  at::NoGradGuard no_grad;
  for (auto& [name, p] : compute.NamedParameters()) p.copy_(masters_.at(name));
}

}  // namespace rhythm::common::model

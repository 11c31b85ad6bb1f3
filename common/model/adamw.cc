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
    for (auto [suffix, dst] :
         {std::pair{".exp_avg", &exp_avg_[i]}, std::pair{".exp_avg_sq", &exp_avg_sq_[i]}}) {
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

ShardedAdamW::ShardedAdamW(const TensorMap& params, const AdamW::Options& options, int rank,
                           int world)
    : options_(options), world_(world) {
  for (const auto& [name, p] : params) {
    names_.push_back(name);
    params_.push_back(p);
    offsets_.push_back(total_);
    total_ += p.numel();
  }
  shard_ = (total_ + world - 1) / world;
  begin_ = static_cast<int64_t>(rank) * shard_;
  exp_avg_ = at::zeros({shard_}, FloatOn());
  exp_avg_sq_ = at::zeros({shard_}, FloatOn());
  if (!params_.empty() && params_[0].scalar_type() != at::kFloat) master_ = ShardParams();
}

at::TensorOptions ShardedAdamW::FloatOn() const {
  return params_.empty() ? at::TensorOptions(at::kFloat) : params_[0].options().dtype(at::kFloat);
}

void ShardedAdamW::AccumulateGrads() {
  at::NoGradGuard no_grad;
  if (!grad_acc_.defined()) grad_acc_ = at::zeros({world_ * shard_}, FloatOn());
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i];
    if (!p.grad().defined()) continue;
    grad_acc_.narrow(0, offsets_[i], p.numel()).add_(p.grad().reshape({-1}).to(at::kFloat));
    p.mutable_grad() = at::Tensor();
  }
}

at::Tensor ShardedAdamW::FlatGrads() {
  AccumulateGrads();
  at::Tensor flat = std::move(grad_acc_);
  grad_acc_ = at::Tensor();
  return flat;
}

at::Tensor ShardedAdamW::FlatParams() const {
  at::NoGradGuard no_grad;
  at::Tensor flat = at::zeros({world_ * shard_}, FloatOn());
  for (size_t i = 0; i < params_.size(); ++i) {
    flat.narrow(0, offsets_[i], params_[i].numel()).copy_(params_[i].detach().reshape({-1}));
  }
  return flat;
}

at::Tensor ShardedAdamW::ShardParams() const {
  at::NoGradGuard no_grad;
  at::Tensor shard = at::zeros({shard_}, FloatOn());
  const int64_t end = begin_ + shard_;
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t lo = std::max(begin_, offsets_[i]);
    const int64_t hi = std::min(end, offsets_[i] + params_[i].numel());
    if (lo >= hi) continue;
    shard.narrow(0, lo - begin_, hi - lo)
        .copy_(params_[i].detach().reshape({-1}).narrow(0, lo - offsets_[i], hi - lo));
  }
  return shard;
}

at::Tensor ShardedAdamW::Step(double lr, const at::Tensor& flat_grads) {
  at::NoGradGuard no_grad;
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double c1 = 1 - std::pow(b1, steps_), c2 = 1 - std::pow(b2, steps_);
  const at::Tensor g = flat_grads.narrow(0, begin_, shard_).to(exp_avg_.device(), at::kFloat);
  at::Tensor p = keeps_masters() ? master_ : ShardParams();
  exp_avg_.mul_(b1).add_(g, 1 - b1);
  exp_avg_sq_.mul_(b2).addcmul_(g, g, 1 - b2);
  const at::Tensor update = (exp_avg_ / c1) / ((exp_avg_sq_ / c2).sqrt() + options_.eps);
  if (options_.weight_decay > 0) p.mul_(1 - lr * options_.weight_decay);
  p.sub_(lr * update);
  return keeps_masters() ? p.clone() : p;
}

void ShardedAdamW::SetParams(const at::Tensor& flat) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i];
    p.copy_(flat.narrow(0, offsets_[i], p.numel()).view(p.sizes()));
  }
  if (keeps_masters()) master_.copy_(flat.narrow(0, begin_, shard_));
}

void ShardedAdamW::ZeroGrad() {
  for (at::Tensor& p : params_) p.mutable_grad() = at::Tensor();
  grad_acc_ = at::Tensor();
}

TensorMap ShardedAdamW::LocalState() const {
  TensorMap out{{"exp_avg", exp_avg_}, {"exp_avg_sq", exp_avg_sq_}};
  if (keeps_masters()) out["master"] = master_;
  return out;
}

absl::Status ShardedAdamW::RestoreLocal(const TensorMap& state, int64_t steps) {
  std::vector<std::pair<const char*, at::Tensor*>> parts = {{"exp_avg", &exp_avg_},
                                                            {"exp_avg_sq", &exp_avg_sq_}};
  if (keeps_masters()) parts.push_back({"master", &master_});
  for (auto [name, dst] : parts) {  // all checked before any is taken
    auto it = state.find(name);
    if (it == state.end() || it->second.sizes() != dst->sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer shard: missing or misshapen '", name, "'"));
    }
  }
  for (auto [name, dst] : parts) dst->copy_(state.at(name));
  steps_ = steps;
  return absl::OkStatus();
}

TensorMap ShardedAdamW::NamedState(const at::Tensor& flat_exp_avg,
                                   const at::Tensor& flat_exp_avg_sq,
                                   const at::Tensor& flat_master) const {
  TensorMap out;
  for (size_t i = 0; i < names_.size(); ++i) {
    const at::IntArrayRef shape = params_[i].sizes();
    const int64_t n = params_[i].numel();
    out[names_[i] + ".exp_avg"] = flat_exp_avg.narrow(0, offsets_[i], n).reshape(shape).clone();
    out[names_[i] + ".exp_avg_sq"] =
        flat_exp_avg_sq.narrow(0, offsets_[i], n).reshape(shape).clone();
    if (flat_master.defined()) {
      out[names_[i] + kMasterSuffix] =
          flat_master.narrow(0, offsets_[i], n).reshape(shape).clone();
    }
  }
  return out;
}

absl::StatusOr<at::Tensor> ShardedAdamW::FlattenSuffix(const TensorMap& state,
                                                      const char* suffix) const {
  at::Tensor flat = at::zeros({world_ * shard_}, FloatOn());
  for (size_t i = 0; i < names_.size(); ++i) {
    auto it = state.find(names_[i] + suffix);
    if (it == state.end() || it->second.sizes() != params_[i].sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer state: missing or misshapen '", names_[i], suffix, "'"));
    }
    flat.narrow(0, offsets_[i], params_[i].numel()).copy_(it->second.reshape({-1}));
  }
  return flat;
}

absl::StatusOr<at::Tensor> ShardedAdamW::FlattenMasters(const TensorMap& state) const {
  if (names_.empty() || state.count(names_[0] + kMasterSuffix) == 0) {
    return absl::NotFoundError("optimizer state: no fp32 masters");
  }
  return FlattenSuffix(state, kMasterSuffix);
}

absl::StatusOr<std::pair<at::Tensor, at::Tensor>> ShardedAdamW::FlattenNamed(
    const TensorMap& state) const {
  absl::StatusOr<at::Tensor> m = FlattenSuffix(state, ".exp_avg");
  if (!m.ok()) return m.status();
  absl::StatusOr<at::Tensor> v = FlattenSuffix(state, ".exp_avg_sq");
  if (!v.ok()) return v.status();
  return std::pair{*m, *v};
}

absl::Status ShardedAdamW::RestoreNamed(const TensorMap& state, int64_t steps) {
  absl::StatusOr<std::pair<at::Tensor, at::Tensor>> flat = FlattenNamed(state);
  if (!flat.ok()) return flat.status();
  at::Tensor masters;
  if (keeps_masters()) {
    absl::StatusOr<at::Tensor> m = FlattenMasters(state);
    if (!m.ok() && m.status().code() != absl::StatusCode::kNotFound) return m.status();
    masters = m.ok() ? m->narrow(0, begin_, shard_) : ShardParams();
  }
  exp_avg_.copy_(flat->first.narrow(0, begin_, shard_));
  exp_avg_sq_.copy_(flat->second.narrow(0, begin_, shard_));
  if (keeps_masters()) master_.copy_(masters);
  steps_ = steps;
  return absl::OkStatus();
}

}  // namespace rhythm::common::model

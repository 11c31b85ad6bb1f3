#include "common/credit/policy_loss.h"

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace rhythm::common::credit {
namespace {

std::string ShapeText(at::IntArrayRef shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&out, i ? ", " : "", shape[i]);
  return out + "]";
}

absl::Status CheckShape(const at::Tensor& t, const char* name, const at::IntArrayRef shape) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(name, ": missing"));
  if (t.sizes() != shape) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": shape ", ShapeText(t.sizes()),
                                                   " differs from logprobs' ",
                                                   ShapeText(shape)));
  }
  return absl::OkStatus();
}

double Item(const at::Tensor& t) { return t.item<double>(); }

// sum(x * mask) / sum(mask), or 0 when the mask is empty.
double MaskedMean(const at::Tensor& x, const at::Tensor& mask, double count) {
  return count > 0 ? Item((x * mask).sum()) / count : 0.0;
}

}  // namespace

absl::StatusOr<PolicyLossResult> ComputePolicyLoss(const PolicyLossInputs& in,
                                                   const PolicyLossOptions& options) {
  if (!in.logprobs.defined() || in.logprobs.dim() != 2) {
    return absl::InvalidArgumentError("logprobs: expected a [B, T] tensor");
  }
  const at::IntArrayRef shape = in.logprobs.sizes();
  RHYTHM_RETURN_IF_ERROR(CheckShape(in.old_logprobs, "old_logprobs", shape));
  RHYTHM_RETURN_IF_ERROR(CheckShape(in.advantages, "advantages", shape));
  RHYTHM_RETURN_IF_ERROR(CheckShape(in.mask, "mask", shape));
  if (options.tis_cap > 0) {
    RHYTHM_RETURN_IF_ERROR(CheckShape(in.behaviour_logprobs, "behaviour_logprobs", shape));
  }
  if (options.kl_coef > 0) RHYTHM_RETURN_IF_ERROR(CheckShape(in.ref_logprobs, "ref_logprobs", shape));
  if (options.entropy_coef > 0) RHYTHM_RETURN_IF_ERROR(CheckShape(in.entropy, "entropy", shape));
  if (in.preplan_mask.defined()) {
    RHYTHM_RETURN_IF_ERROR(CheckShape(in.preplan_mask, "preplan_mask", shape));
  }
  if (in.anchor_mask.defined()) {
    RHYTHM_RETURN_IF_ERROR(CheckShape(in.anchor_mask, "anchor_mask", shape));
  }

  return TorchTry("policy loss", [&]() {
    const at::ScalarType dtype = in.logprobs.scalar_type();
    const at::Tensor mask = in.mask.to(dtype).detach();
    const at::Tensor old = in.old_logprobs.to(dtype).detach();
    const at::Tensor adv = in.advantages.to(dtype).detach();
    const at::Tensor log_ratio = in.logprobs - old;
    const at::Tensor ratio = at::exp(log_ratio);
    const at::Tensor clipped_ratio =
        at::clamp(ratio, 1.0 - options.clip_eps_low, 1.0 + options.clip_eps_high);
    const at::Tensor unclipped_obj = ratio * adv;
    const at::Tensor clipped_obj = clipped_ratio * adv;
    at::Tensor token_loss = -at::min(unclipped_obj, clipped_obj);
    if (options.tis_cap > 0) {
      const at::Tensor weight =
          at::clamp_max(at::exp(old - in.behaviour_logprobs.to(dtype).detach()), options.tis_cap);
      token_loss = token_loss * weight;
    }
    PolicyLossResult result;
    const double count = Item(mask.sum());
    result.tokens = count;
    if (options.kl_coef > 0) {
      const at::Tensor d = in.ref_logprobs.to(dtype).detach() - in.logprobs;
      const at::Tensor kl = at::exp(d) - d - 1.0;
      token_loss = token_loss + options.kl_coef * kl;
      result.ref_kl = MaskedMean(kl.detach(), mask, count);
    }
    if (options.entropy_coef > 0) {
      token_loss = token_loss - options.entropy_coef * in.entropy.to(dtype);
    }
    token_loss = token_loss * mask;
    if (options.aggregation == v1::LOSS_AGGREGATION_TOKEN_MEAN) {
      result.loss = token_loss.sum() / std::max(count, 1.0);
    } else {
      const at::Tensor per_seq_tokens = mask.sum(1);
      const at::Tensor has_tokens = per_seq_tokens > 0;
      const at::Tensor seq_loss = token_loss.sum(1) / at::clamp_min(per_seq_tokens, 1.0);
      const double sequences = Item(has_tokens.sum());
      result.loss = (seq_loss * has_tokens.to(dtype)).sum() / std::max(sequences, 1.0);
    }

    // Statistics, without gradient.
    const at::Tensor r = ratio.detach();
    const at::Tensor clipped = (clipped_obj.detach() < unclipped_obj.detach()).to(dtype);
    result.clip_fraction = MaskedMean(clipped, mask, count);
    result.mean_ratio = MaskedMean(r, mask, count);
    result.approx_kl = MaskedMean(r - 1.0 - log_ratio.detach(), mask, count);
    const at::Tensor credit = adv.abs() * mask;
    const double total_credit = Item(credit.sum());
    auto shares = [&](const at::Tensor& m, double* token_share, double* credit_share) {
      if (!m.defined()) return;
      const at::Tensor mm = m.to(dtype) * mask;
      *token_share = count > 0 ? Item(mm.sum()) / count : 0.0;
      *credit_share = total_credit > 0 ? Item((credit * mm).sum()) / total_credit : 0.0;
    };
    shares(in.preplan_mask, &result.preplan_token_fraction, &result.preplan_credit_fraction);
    shares(in.anchor_mask, &result.anchor_token_fraction, &result.anchor_credit_fraction);
    return result;
  });
}

}  // namespace rhythm::common::credit

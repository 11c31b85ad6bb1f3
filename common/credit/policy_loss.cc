#include "common/credit/policy_loss.h"

#include <cmath>

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
                                                   " differs from logprobs' ", ShapeText(shape)));
  }
  return absl::OkStatus();
}

double Item(const at::Tensor& t) { return t.item<double>(); }

// sum(x * mask) / sum(mask), or 0 when the mask is empty.
double MaskedMean(const at::Tensor& x, const at::Tensor& mask, double count) {
  return count > 0 ? Item((x * mask).sum()) / count : 0.0;
}

}  // namespace

at::Tensor KlPerToken(const at::Tensor& ref, const at::Tensor& logp, v1::KlEstimator estimator) {
  const at::Tensor d = ref.to(logp.scalar_type()) - logp;  // log r
  switch (estimator) {
    case v1::KL_ESTIMATOR_K1:
      return -d;
    case v1::KL_ESTIMATOR_K2:
      return 0.5 * d * d;
    default:
      return at::exp(d) - d - 1.0;
  }
}

absl::StatusOr<OffPolicyMask> ComputeOffPolicyMask(const at::Tensor& old,
                                                   const at::Tensor& behaviour,
                                                   const at::Tensor& mask,
                                                   const OffPolicyMaskOptions& o) {
  if (!old.defined() || old.dim() != 2) {
    return absl::InvalidArgumentError("old_logprobs: expected a [B, T] tensor");
  }
  RHYTHM_RETURN_IF_ERROR(CheckShape(behaviour, "behaviour_logprobs", old.sizes()));
  RHYTHM_RETURN_IF_ERROR(CheckShape(mask, "mask", old.sizes()));
  return TorchTry("off-policy mask", [&]() {
    const at::Tensor m = mask.to(at::kDouble);
    const at::Tensor log_w = old.to(at::kDouble) - behaviour.to(at::kDouble);
    const at::Tensor w = at::exp(log_w);
    at::Tensor token_keep = m;
    if (o.token_low > 0) token_keep = token_keep * (w >= o.token_low).to(at::kDouble);
    if (o.token_high > 0) token_keep = token_keep * (w <= o.token_high).to(at::kDouble);
    const at::Tensor seq_tokens = m.sum(1);
    const at::Tensor geo = at::exp((log_w * m).sum(1) / at::clamp_min(seq_tokens, 1.0));
    at::Tensor seq_keep = (seq_tokens > 0).to(at::kDouble);
    if (o.sequence_low > 0) seq_keep = seq_keep * (geo >= o.sequence_low).to(at::kDouble);
    if (o.sequence_high > 0) seq_keep = seq_keep * (geo <= o.sequence_high).to(at::kDouble);
    OffPolicyMask out;
    out.keep = (token_keep * seq_keep.unsqueeze(1)).to(mask.scalar_type());
    out.tokens = static_cast<int64_t>(std::llround(Item(m.sum())));
    out.masked_sequences = static_cast<int64_t>(
        std::llround(Item(((seq_tokens > 0).to(at::kDouble) - seq_keep).sum())));
    out.masked_tokens =
        static_cast<int64_t>(std::llround(Item(((m - token_keep) * seq_keep.unsqueeze(1)).sum())));
    out.weight_sum = Item((w * m).sum());
    if (o.tis_cap > 0) {
      out.capped_tokens =
          static_cast<int64_t>(std::llround(Item(((w > o.tis_cap).to(at::kDouble) * m).sum())));
    }
    return out;
  });
}

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
  if (options.kl_coef > 0)
    RHYTHM_RETURN_IF_ERROR(CheckShape(in.ref_logprobs, "ref_logprobs", shape));
  if (options.kl_coef > 0 && in.kl_logprobs.defined()) {
    RHYTHM_RETURN_IF_ERROR(CheckShape(in.kl_logprobs, "kl_logprobs", shape));
  }
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
    // The ratio the clip acts on: per token, or GSPO's per response (value s_i at each of its
    // tokens, gradient s_i * grad logp_t).
    at::Tensor q = ratio;
    if (options.ratio_level == v1::RATIO_LEVEL_SEQUENCE) {
      const at::Tensor log_s = ((log_ratio.detach() * mask).sum(1, /*keepdim=*/true) /
                                at::clamp_min(mask.sum(1, /*keepdim=*/true), 1.0));
      q = at::exp(log_s + in.logprobs - in.logprobs.detach());
    }
    const at::Tensor clipped_ratio =
        at::clamp(q, 1.0 - options.clip_eps_low, 1.0 + options.clip_eps_high);
    const at::Tensor unclipped_obj = q * adv;
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
      const at::Tensor kl = KlPerToken(
          in.ref_logprobs.to(dtype).detach(),
          in.kl_logprobs.defined() ? in.kl_logprobs.to(dtype) : in.logprobs, options.kl_estimator);
      token_loss = token_loss + options.kl_coef * kl;
      result.ref_kl = MaskedMean(kl.detach(), mask, count);
    }
    if (options.entropy_coef > 0) {
      token_loss = token_loss - options.entropy_coef * in.entropy.to(dtype);
    }
    token_loss = token_loss * mask;
    if (options.aggregation == v1::LOSS_AGGREGATION_TOKEN_MEAN) {
      result.loss = token_loss.sum() / (options.loss_denominator > 0 ? options.loss_denominator
                                                                     : std::max(count, 1.0));
    } else {
      const at::Tensor per_seq_tokens = mask.sum(1);
      const at::Tensor has_tokens = per_seq_tokens > 0;
      const at::Tensor seq_loss = token_loss.sum(1) / at::clamp_min(per_seq_tokens, 1.0);
      const double sequences = Item(has_tokens.sum());
      result.loss =
          (seq_loss * has_tokens.to(dtype)).sum() /
          (options.loss_denominator > 0 ? options.loss_denominator : std::max(sequences, 1.0));
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

// The clipped surrogate against a token-by-token loop, and its gradient against finite
// differences.
#include "common/credit/policy_loss.h"

#include <cmath>
#include <random>

#include "ATen/ATen.h"
#include "gtest/gtest.h"

namespace rhythm::common::credit {
namespace {

struct Batch {
  int64_t b, t;
  std::vector<double> logp, old, behaviour, ref, adv, mask, entropy, preplan, anchor;
};

Batch RandomBatch(std::mt19937& rng, int64_t b, int64_t t) {
  std::normal_distribution<double> noise(0.0, 0.3);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  Batch x{b, t, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  for (int64_t i = 0; i < b * t; ++i) {
    const double old = -3.0 * unit(rng);
    x.old.push_back(old);
    x.logp.push_back(old + noise(rng));       // ratios spread on both sides of the clip range
    x.behaviour.push_back(old + noise(rng));  // some importance weights above the cap
    x.ref.push_back(old + noise(rng));
    x.adv.push_back((unit(rng) < 0.5 ? -1 : 1) * (0.5 + unit(rng)));
    x.entropy.push_back(2.0 * unit(rng));
    x.preplan.push_back(unit(rng) < 0.4);
    x.anchor.push_back(unit(rng) < 0.3);
  }
  // Ragged lengths; the last sequence may be entirely padding.
  for (int64_t s = 0; s < b; ++s) {
    const int64_t len = (s == b - 1 && b > 2) ? 0 : 1 + static_cast<int64_t>(rng() % t);
    for (int64_t i = 0; i < t; ++i) x.mask.push_back(i < len ? 1.0 : 0.0);
  }
  return x;
}

at::Tensor Tensor2D(const std::vector<double>& v, int64_t b, int64_t t) {
  return at::tensor(v, at::kDouble).view({b, t});
}

PolicyLossInputs Inputs(const Batch& x, const at::Tensor& logp) {
  PolicyLossInputs in;
  in.logprobs = logp;
  in.old_logprobs = Tensor2D(x.old, x.b, x.t);
  in.behaviour_logprobs = Tensor2D(x.behaviour, x.b, x.t);
  in.ref_logprobs = Tensor2D(x.ref, x.b, x.t);
  in.advantages = Tensor2D(x.adv, x.b, x.t);
  in.mask = Tensor2D(x.mask, x.b, x.t);
  in.entropy = Tensor2D(x.entropy, x.b, x.t);
  in.preplan_mask = Tensor2D(x.preplan, x.b, x.t);
  in.anchor_mask = Tensor2D(x.anchor, x.b, x.t);
  return in;
}

struct RefLoss {
  double loss = 0, clip_fraction = 0, mean_ratio = 0, approx_kl = 0, preplan_credit = 0,
         anchor_tokens = 0;
};

// The slow, obvious way: one token at a time.
RefLoss Reference(const Batch& x, const std::vector<double>& logp, const PolicyLossOptions& o) {
  RefLoss r;
  double total = 0, tokens = 0, clipped = 0, ratios = 0, kl = 0, credit = 0, preplan_credit = 0,
         anchors = 0;
  double seq_sum = 0, seqs = 0;
  for (int64_t s = 0; s < x.b; ++s) {
    double seq_loss = 0, seq_tokens = 0;
    for (int64_t i = 0; i < x.t; ++i) {
      const int64_t k = s * x.t + i;
      if (x.mask[k] == 0) continue;
      const double ratio = std::exp(logp[k] - x.old[k]);
      const double clipped_ratio =
          std::min(std::max(ratio, 1 - o.clip_eps_low), 1 + o.clip_eps_high);
      const double obj = std::min(ratio * x.adv[k], clipped_ratio * x.adv[k]);
      double w = 1;
      if (o.tis_cap > 0) w = std::min(std::exp(x.old[k] - x.behaviour[k]), o.tis_cap);
      double loss = -w * obj;
      if (o.kl_coef > 0) {
        const double d = x.ref[k] - logp[k];
        loss += o.kl_coef * (std::exp(d) - d - 1);
      }
      loss -= o.entropy_coef * x.entropy[k];
      seq_loss += loss;
      seq_tokens += 1;
      total += loss;
      tokens += 1;
      clipped += (clipped_ratio * x.adv[k] < ratio * x.adv[k]) ? 1 : 0;
      ratios += ratio;
      kl += ratio - 1 - std::log(ratio);
      credit += std::fabs(x.adv[k]);
      preplan_credit += x.preplan[k] * std::fabs(x.adv[k]);
      anchors += x.anchor[k];
    }
    if (seq_tokens > 0) {
      seq_sum += seq_loss / seq_tokens;
      seqs += 1;
    }
  }
  r.loss = o.aggregation == v1::LOSS_AGGREGATION_TOKEN_MEAN ? total / tokens : seq_sum / seqs;
  r.clip_fraction = clipped / tokens;
  r.mean_ratio = ratios / tokens;
  r.approx_kl = kl / tokens;
  r.preplan_credit = preplan_credit / credit;
  r.anchor_tokens = anchors / tokens;
  return r;
}

std::vector<PolicyLossOptions> OptionGrid() {
  std::vector<PolicyLossOptions> grid;
  for (auto agg : {v1::LOSS_AGGREGATION_SEQ_MEAN_TOKEN_MEAN, v1::LOSS_AGGREGATION_TOKEN_MEAN}) {
    for (double tis : {0.0, 1.5}) {
      for (double kl : {0.0, 0.1}) {
        PolicyLossOptions o;
        o.aggregation = agg;
        o.tis_cap = tis;
        o.kl_coef = kl;
        o.entropy_coef = kl > 0 ? 0.01 : 0.0;
        o.clip_eps_high = tis > 0 ? 0.28 : 0.2;  // clip-higher in half the cases
        grid.push_back(o);
      }
    }
  }
  return grid;
}

TEST(PolicyLoss, MatchesTokenLoopForEveryOptionCombination) {
  std::mt19937 rng(13554);
  for (const PolicyLossOptions& o : OptionGrid()) {
    for (int trial = 0; trial < 10; ++trial) {
      Batch x = RandomBatch(rng, 1 + rng() % 5, 1 + rng() % 12);
      absl::StatusOr<PolicyLossResult> got =
          ComputePolicyLoss(Inputs(x, Tensor2D(x.logp, x.b, x.t)), o);
      ASSERT_TRUE(got.ok()) << got.status();
      RefLoss want = Reference(x, x.logp, o);
      EXPECT_NEAR(got->loss.item<double>(), want.loss, 1e-9);
      EXPECT_NEAR(got->clip_fraction, want.clip_fraction, 1e-12);
      EXPECT_NEAR(got->mean_ratio, want.mean_ratio, 1e-12);
      EXPECT_NEAR(got->approx_kl, want.approx_kl, 1e-12);
      EXPECT_NEAR(got->preplan_credit_fraction, want.preplan_credit, 1e-12);
      EXPECT_NEAR(got->anchor_token_fraction, want.anchor_tokens, 1e-12);
    }
  }
}

TEST(PolicyLoss, ClippingActuallyHappensInTheseTests) {
  std::mt19937 rng(1);
  Batch x = RandomBatch(rng, 8, 32);
  PolicyLossResult r = *ComputePolicyLoss(Inputs(x, Tensor2D(x.logp, x.b, x.t)), {});
  EXPECT_GT(r.clip_fraction, 0.05);
  EXPECT_LT(r.clip_fraction, 0.95);
}

TEST(PolicyLoss, GradientMatchesFiniteDifferences) {
  std::mt19937 rng(42);
  for (const PolicyLossOptions& o : OptionGrid()) {
    Batch x = RandomBatch(rng, 3, 6);
    at::Tensor logp = Tensor2D(x.logp, x.b, x.t).requires_grad_(true);
    PolicyLossResult r = *ComputePolicyLoss(Inputs(x, logp), o);
    r.loss.backward();
    const at::Tensor grad = logp.grad();
    const double h = 1e-6;
    for (int64_t k = 0; k < x.b * x.t; ++k) {
      std::vector<double> plus = x.logp, minus = x.logp;
      plus[k] += h;
      minus[k] -= h;
      const double fd = (Reference(x, plus, o).loss - Reference(x, minus, o).loss) / (2 * h);
      // The same central difference through the tensor implementation.
      const double fd_impl =
          (ComputePolicyLoss(Inputs(x, Tensor2D(plus, x.b, x.t)), o)->loss.item<double>() -
           ComputePolicyLoss(Inputs(x, Tensor2D(minus, x.b, x.t)), o)->loss.item<double>()) /
          (2 * h);
      const double g = grad.view({-1})[k].item<double>();
      EXPECT_NEAR(g, fd, 1e-5) << "token " << k;
      EXPECT_NEAR(g, fd_impl, 1e-5) << "token " << k;
    }
  }
}

TEST(PolicyLoss, PaddingGetsNoGradientAndShapesAreChecked) {
  std::mt19937 rng(3);
  Batch x = RandomBatch(rng, 4, 5);
  at::Tensor logp = Tensor2D(x.logp, x.b, x.t).requires_grad_(true);
  ComputePolicyLoss(Inputs(x, logp), {})->loss.backward();
  const at::Tensor pad = Tensor2D(x.mask, x.b, x.t) == 0;
  EXPECT_EQ(logp.grad().masked_select(pad).abs().sum().item<double>(), 0.0);

  PolicyLossInputs bad = Inputs(x, logp);
  bad.advantages = at::zeros({4, 4}, at::kDouble);
  absl::StatusOr<PolicyLossResult> r = ComputePolicyLoss(bad, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("advantages: shape [4, 4] differs from logprobs' [4, 5]"),
            std::string::npos)
      << r.status();
  bad = Inputs(x, logp);
  bad.behaviour_logprobs = at::Tensor();
  r = ComputePolicyLoss(bad, {});  // tis_cap 2.0 by default needs behaviour log-probs
  EXPECT_NE(r.status().message().find("behaviour_logprobs: missing"), std::string::npos);
}

TEST(PolicyLoss, OnPolicyZeroAdvantageIsZeroLoss) {
  std::mt19937 rng(9);
  Batch x = RandomBatch(rng, 2, 4);
  x.logp = x.old;
  std::fill(x.adv.begin(), x.adv.end(), 0.0);
  PolicyLossResult r = *ComputePolicyLoss(Inputs(x, Tensor2D(x.logp, x.b, x.t)), {});
  EXPECT_EQ(r.loss.item<double>(), 0.0);
  EXPECT_DOUBLE_EQ(r.mean_ratio, 1.0);
  EXPECT_EQ(r.clip_fraction, 0.0);
  EXPECT_EQ(r.preplan_credit_fraction, 0.0) << "no credit at all: share defined as 0";
}

}  // namespace
}  // namespace rhythm::common::credit

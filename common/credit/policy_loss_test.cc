// The clipped surrogate against a token-by-token loop, and its gradient against finite
// differences.
#include "common/credit/policy_loss.h"

#include <algorithm>
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

double KlRef(double ref, double logp, v1::KlEstimator e) {
  const double log_r = ref - logp;
  if (e == v1::KL_ESTIMATOR_K1) return -log_r;
  if (e == v1::KL_ESTIMATOR_K2) return log_r * log_r / 2;
  return std::exp(log_r) - 1 - log_r;
}

// GSPO's sequence ratio the way the paper writes it: (pi_theta(y|x) / pi_old(y|x))^(1/|y|),
// over sequence s's masked tokens.
double SequenceRatio(const Batch& x, const std::vector<double>& logp, int64_t s) {
  double p_theta = 1, p_old = 1, n = 0;
  for (int64_t i = 0; i < x.t; ++i) {
    const int64_t k = s * x.t + i;
    if (x.mask[k] == 0) continue;
    p_theta *= std::exp(logp[k]);
    p_old *= std::exp(x.old[k]);
    n += 1;
  }
  return n > 0 ? std::pow(p_theta / p_old, 1.0 / n) : 1.0;
}

// The slow, obvious way: one token at a time.
RefLoss Reference(const Batch& x, const std::vector<double>& logp, const PolicyLossOptions& o) {
  RefLoss r;
  double total = 0, tokens = 0, clipped = 0, ratios = 0, kl = 0, credit = 0, preplan_credit = 0,
         anchors = 0;
  double seq_sum = 0, seqs = 0;
  for (int64_t s = 0; s < x.b; ++s) {
    double seq_loss = 0, seq_tokens = 0;
    const double seq_ratio = SequenceRatio(x, logp, s);
    for (int64_t i = 0; i < x.t; ++i) {
      const int64_t k = s * x.t + i;
      if (x.mask[k] == 0) continue;
      const double token_ratio = std::exp(logp[k] - x.old[k]);
      const double ratio = o.ratio_level == v1::RATIO_LEVEL_SEQUENCE ? seq_ratio : token_ratio;
      const double clipped_ratio =
          std::min(std::max(ratio, 1 - o.clip_eps_low), 1 + o.clip_eps_high);
      const double obj = std::min(ratio * x.adv[k], clipped_ratio * x.adv[k]);
      double w = 1;
      if (o.tis_cap > 0) w = std::min(std::exp(x.old[k] - x.behaviour[k]), o.tis_cap);
      double loss = -w * obj;
      if (o.kl_coef > 0) loss += o.kl_coef * KlRef(x.ref[k], logp[k], o.kl_estimator);
      loss -= o.entropy_coef * x.entropy[k];
      seq_loss += loss;
      seq_tokens += 1;
      total += loss;
      tokens += 1;
      clipped += (clipped_ratio * x.adv[k] < ratio * x.adv[k]) ? 1 : 0;
      ratios += token_ratio;
      kl += token_ratio - 1 - std::log(token_ratio);
      credit += std::fabs(x.adv[k]);
      preplan_credit += x.preplan[k] * std::fabs(x.adv[k]);
      anchors += x.anchor[k];
    }
    if (seq_tokens > 0) {
      seq_sum += seq_loss / seq_tokens;
      seqs += 1;
    }
  }
  const bool token_mean = o.aggregation == v1::LOSS_AGGREGATION_TOKEN_MEAN;
  const double denominator =
      o.loss_denominator > 0 ? o.loss_denominator : (token_mean ? tokens : seqs);
  r.loss = (token_mean ? total : seq_sum) / denominator;
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
        // The other estimators and GSPO's sequence ratio, on the same grid.
        if (kl > 0) {
          o.kl_estimator = tis > 0 ? v1::KL_ESTIMATOR_K1 : v1::KL_ESTIMATOR_K2;
          grid.push_back(o);
        }
        o.ratio_level = v1::RATIO_LEVEL_SEQUENCE;
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

// GSPO (Zheng et al. 2025, eq. 5-7) written out per response: with one advantage per response
// and no importance weight, seq-mean-token-mean is -(1/G) sum_i min(s_i A_i, clip(s_i) A_i).
TEST(PolicyLoss, SequenceRatioIsGspo) {
  std::mt19937 rng(77);
  int clipped_responses = 0;
  double token_level_differs = 0;
  for (int trial = 0; trial < 20; ++trial) {
    Batch x = RandomBatch(rng, 2 + rng() % 5, 2 + rng() % 10);
    for (int64_t k = 0; k < x.b * x.t; ++k) x.adv[k] = x.adv[(k / x.t) * x.t];
    PolicyLossOptions o;
    o.tis_cap = 0;
    o.ratio_level = v1::RATIO_LEVEL_SEQUENCE;
    o.clip_eps_low = 0.03;  // GSPO's ranges are narrow: the sequence ratio moves less
    o.clip_eps_high = 0.04;
    double sum = 0, responses = 0;
    for (int64_t i = 0; i < x.b; ++i) {
      if (x.mask[i * x.t] == 0) continue;
      const double s_i = SequenceRatio(x, x.logp, i), a = x.adv[i * x.t];
      const double clipped = std::clamp(s_i, 1 - o.clip_eps_low, 1 + o.clip_eps_high);
      sum += std::min(s_i * a, clipped * a);
      responses += 1;
      clipped_responses += clipped * a < s_i * a;
    }
    PolicyLossResult r = *ComputePolicyLoss(Inputs(x, Tensor2D(x.logp, x.b, x.t)), o);
    EXPECT_NEAR(r.loss.item<double>(), -sum / responses, 1e-9);
    // The token-level ratio gives another loss (equal only where every response has one token).
    o.ratio_level = v1::RATIO_LEVEL_TOKEN;
    token_level_differs +=
        std::abs(ComputePolicyLoss(Inputs(x, Tensor2D(x.logp, x.b, x.t)), o)->loss.item<double>() +
                 sum / responses);
  }
  EXPECT_GT(clipped_responses, 5) << "the sequence clip binds in some of these cases";
  EXPECT_GT(token_level_differs, 0.1);
}

// With token-varying shaped advantages and importance weights, the sequence ratio's gradient is
// GSPO-token's: d loss / d logp_t = -(1/G)(1/|y_i|) w_t A~_t s_i where the unclipped term is
// taken, 0 where the clip binds.
TEST(PolicyLoss, GspoTokenGradient) {
  std::mt19937 rng(78);
  for (auto agg : {v1::LOSS_AGGREGATION_SEQ_MEAN_TOKEN_MEAN, v1::LOSS_AGGREGATION_TOKEN_MEAN}) {
    Batch x = RandomBatch(rng, 5, 7);
    PolicyLossOptions o;
    o.aggregation = agg;
    o.tis_cap = 1.5;
    o.ratio_level = v1::RATIO_LEVEL_SEQUENCE;
    o.clip_eps_low = o.clip_eps_high = 0.05;
    at::Tensor logp = Tensor2D(x.logp, x.b, x.t).requires_grad_(true);
    ComputePolicyLoss(Inputs(x, logp), o)->loss.backward();
    double responses = 0, tokens = 0;
    for (int64_t i = 0; i < x.b; ++i) {
      responses += x.mask[i * x.t];
      for (int64_t t = 0; t < x.t; ++t) tokens += x.mask[i * x.t + t];
    }
    int nonzero = 0;
    for (int64_t i = 0; i < x.b; ++i) {
      const double s_i = SequenceRatio(x, x.logp, i);
      double n = 0;
      for (int64_t t = 0; t < x.t; ++t) n += x.mask[i * x.t + t];
      for (int64_t t = 0; t < x.t; ++t) {
        const int64_t k = i * x.t + t;
        double want = 0;
        const double a = x.adv[k];
        const bool binds =
            (a > 0 && s_i > 1 + o.clip_eps_high) || (a < 0 && s_i < 1 - o.clip_eps_low);
        if (x.mask[k] > 0 && !binds) {
          const double w = std::min(std::exp(x.old[k] - x.behaviour[k]), o.tis_cap);
          want = -w * a * s_i / (agg == v1::LOSS_AGGREGATION_TOKEN_MEAN ? tokens : n * responses);
        }
        nonzero += want != 0;
        EXPECT_NEAR(logp.grad().view({-1})[k].item<double>(), want, 1e-12) << "token " << k;
      }
    }
    EXPECT_GT(nonzero, 3);
  }
}

TEST(PolicyLoss, MicroBatchesWithTheMiniBatchDenominatorAddUp) {
  std::mt19937 rng(5);
  for (auto agg : {v1::LOSS_AGGREGATION_SEQ_MEAN_TOKEN_MEAN, v1::LOSS_AGGREGATION_TOKEN_MEAN}) {
    Batch x = RandomBatch(rng, 6, 5);
    PolicyLossOptions o;
    o.aggregation = agg;
    const double whole =
        ComputePolicyLoss(Inputs(x, Tensor2D(x.logp, x.b, x.t)), o)->loss.item<double>();
    double tokens = 0, responses = 0;
    for (int64_t i = 0; i < x.b; ++i) {
      double n = 0;
      for (int64_t t = 0; t < x.t; ++t) n += x.mask[i * x.t + t];
      tokens += n;
      responses += n > 0;
    }
    o.loss_denominator = agg == v1::LOSS_AGGREGATION_TOKEN_MEAN ? tokens : responses;
    PolicyLossInputs all = Inputs(x, Tensor2D(x.logp, x.b, x.t));
    double parts = 0;
    for (int64_t begin : {0, 2}) {
      const int64_t len = begin == 0 ? 2 : 4;
      PolicyLossInputs in;
      for (auto [dst, src] : std::vector<std::pair<at::Tensor*, at::Tensor*>>{
               {&in.logprobs, &all.logprobs},
               {&in.old_logprobs, &all.old_logprobs},
               {&in.behaviour_logprobs, &all.behaviour_logprobs},
               {&in.advantages, &all.advantages},
               {&in.mask, &all.mask}}) {
        *dst = src->narrow(0, begin, len);
      }
      parts += ComputePolicyLoss(in, o)->loss.item<double>();
    }
    EXPECT_NEAR(parts, whole, 1e-12);
  }
}

// The masks against a token-by-token loop.
TEST(OffPolicyMask, MatchesTokenLoop) {
  std::mt19937 rng(21);
  std::vector<OffPolicyMaskOptions> grid = {{},
                                            {0.8, 0, 0, 0, 2.0},
                                            {0, 1.2, 0, 0, 0},
                                            {0.8, 1.25, 0, 0, 1.1},
                                            {0, 0, 0.9, 1.1, 0},
                                            {0, 0, 0, 1.05, 0},
                                            {0.7, 1.4, 0.95, 1.05, 1.5}};
  int64_t masked_tokens = 0, masked_sequences = 0;
  for (const OffPolicyMaskOptions& o : grid) {
    for (int trial = 0; trial < 10; ++trial) {
      Batch x = RandomBatch(rng, 1 + rng() % 6, 1 + rng() % 10);
      const OffPolicyMask got =
          *ComputeOffPolicyMask(Tensor2D(x.old, x.b, x.t), Tensor2D(x.behaviour, x.b, x.t),
                                Tensor2D(x.mask, x.b, x.t), o);
      int64_t want_tokens = 0, want_seqs = 0, tokens = 0, capped = 0;
      double weight_sum = 0;
      for (int64_t s = 0; s < x.b; ++s) {
        double log_sum = 0, n = 0;
        for (int64_t i = 0; i < x.t; ++i) {
          const int64_t k = s * x.t + i;
          if (x.mask[k] == 0) continue;
          log_sum += x.old[k] - x.behaviour[k];
          n += 1;
        }
        const double geo = n > 0 ? std::exp(log_sum / n) : 1;
        const bool seq_out = n > 0 && ((o.sequence_low > 0 && geo < o.sequence_low) ||
                                       (o.sequence_high > 0 && geo > o.sequence_high));
        want_seqs += seq_out;
        for (int64_t i = 0; i < x.t; ++i) {
          const int64_t k = s * x.t + i;
          const double w = std::exp(x.old[k] - x.behaviour[k]);
          const bool tok_out =
              (o.token_low > 0 && w < o.token_low) || (o.token_high > 0 && w > o.token_high);
          const bool keep = x.mask[k] > 0 && !seq_out && !tok_out;
          EXPECT_EQ(got.keep[s][i].item<double>(), keep ? 1.0 : 0.0) << s << "," << i;
          if (x.mask[k] == 0) continue;
          ++tokens;
          weight_sum += w;
          capped += o.tis_cap > 0 && w > o.tis_cap;
          want_tokens += !seq_out && tok_out;
        }
      }
      EXPECT_EQ(got.masked_tokens, want_tokens);
      EXPECT_EQ(got.masked_sequences, want_seqs);
      EXPECT_EQ(got.tokens, tokens);
      EXPECT_EQ(got.capped_tokens, capped);
      EXPECT_NEAR(got.weight_sum, weight_sum, 1e-9);
      masked_tokens += got.masked_tokens;
      masked_sequences += got.masked_sequences;
    }
  }
  EXPECT_GT(masked_tokens, 20) << "the bounds bind in these cases";
  EXPECT_GT(masked_sequences, 5);
  absl::StatusOr<OffPolicyMask> bad =
      ComputeOffPolicyMask(at::zeros({2, 3}), at::zeros({2, 2}), at::ones({2, 3}), {});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("behaviour_logprobs: shape [2, 2]"), std::string::npos);
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
    if (o.ratio_level == v1::RATIO_LEVEL_SEQUENCE) {
      // GSPO's objective proper: one advantage per response and a weight that does not vary
      // along it (GSPO-token's gradient is the objective's only then; see GspoTokenGradient).
      for (int64_t k = 0; k < x.b * x.t; ++k) {
        x.adv[k] = x.adv[(k / x.t) * x.t];
        x.behaviour[k] = x.old[k];
      }
    }
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

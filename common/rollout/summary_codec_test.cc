#include "common/rollout/summary_codec.h"

#include <cmath>
#include <random>

#include "ATen/ATen.h"
#include "common/credit/token_credit.h"
#include "gtest/gtest.h"

namespace rhythm::common::rollout {
namespace {

SummaryFields Random(int64_t n, uint32_t seed, bool fp16_exact) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 4.0f);
  SummaryFields f;
  for (int64_t t = 0; t < n; ++t) {
    // Multiples of 1/64 below 4 are exact in fp16; arbitrary floats are not.
    const float w = fp16_exact ? std::floor(u(rng) * 64) / 64 : u(rng);
    const float a = fp16_exact ? std::floor(u(rng) * 64) / 64 : u(rng);
    f.waad.push_back(w);
    f.fai.push_back(t >= n - 3 ? NAN : a);  // the last tokens have no band: undefined
  }
  f.window = 4;
  f.band_lo = 3;
  f.band_hi = 12;
  f.tap_layers = {1, 3};
  f.heads_per_layer = 4;
  f.local_heads = {0, 2, 5};
  f.global_heads = {1, 3, 4, 6, 7};
  return f;
}

TEST(SummaryCodecTest, RoundTripsEveryFieldWithinFp16Rounding) {
  const SummaryFields in = Random(50, 1, /*fp16_exact=*/false);
  v1::AttentionSummary wire = EncodeSummary(in);
  std::string bytes;
  ASSERT_TRUE(wire.SerializeToString(&bytes));
  v1::AttentionSummary read;
  ASSERT_TRUE(read.ParseFromString(bytes));
  const SummaryFields out = DecodeSummary(read);
  ASSERT_EQ(out.waad.size(), in.waad.size());
  ASSERT_EQ(out.fai.size(), in.fai.size());
  for (size_t t = 0; t < in.waad.size(); ++t) {
    EXPECT_NEAR(out.waad[t], in.waad[t], std::ldexp(std::fabs(in.waad[t]), -11)) << t;
    if (std::isnan(in.fai[t])) {
      EXPECT_TRUE(std::isnan(out.fai[t])) << "undefined stays undefined at " << t;
    } else {
      EXPECT_NEAR(out.fai[t], in.fai[t], std::ldexp(std::fabs(in.fai[t]), -11)) << t;
    }
  }
  EXPECT_EQ(out.window, 4);
  EXPECT_EQ(out.band_lo, 3);
  EXPECT_EQ(out.band_hi, 12);
  EXPECT_EQ(out.tap_layers, in.tap_layers);
  EXPECT_EQ(out.heads_per_layer, 4);
  EXPECT_EQ(out.local_heads, in.local_heads);
  EXPECT_EQ(out.global_heads, in.global_heads);
  EXPECT_EQ(wire.waad_f16().size(), 2 * in.waad.size()) << "two bytes a value";
}

TEST(SummaryCodecTest, CreditOnDecodedSummariesEqualsCreditOnTheOriginals) {
  // With values fp16 holds exactly the decoded series equal the originals, so the credit must
  // be identical; with arbitrary values every gamma stays within the rounding's reach.
  for (bool exact : {true, false}) {
    const SummaryFields in = Random(64, 7, exact);
    const SummaryFields out = DecodeSummary(EncodeSummary(in));
    std::vector<float> entropy(64);
    for (size_t t = 0; t < entropy.size(); ++t) entropy[t] = 0.5f + 0.03f * static_cast<float>(t % 17);
    credit::TokenCreditOptions o;
    auto a = credit::ComputeTokenCredit({at::tensor(in.waad), at::tensor(in.fai),
                                         at::tensor(entropy)}, o);
    auto b = credit::ComputeTokenCredit({at::tensor(out.waad), at::tensor(out.fai),
                                         at::tensor(entropy)}, o);
    ASSERT_TRUE(a.ok() && b.ok());
    if (exact) {
      EXPECT_TRUE(at::equal(a->gamma, b->gamma));
      EXPECT_EQ(a->preplan, b->preplan);
      EXPECT_EQ(a->anchor, b->anchor);
    } else {
      // Selection is by rank, so a near tie may swap one token; the rest must agree.
      const int64_t differ = (a->gamma - b->gamma).abs().gt(1e-6).sum().item<int64_t>();
      EXPECT_LE(differ, 2) << "fp16 rounding may only swap a near tie";
    }
  }
}

}  // namespace
}  // namespace rhythm::common::rollout

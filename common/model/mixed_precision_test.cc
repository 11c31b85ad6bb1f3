// fp32 master weights with bf16 compute: one AdamW step through the masters against the same
// step computed in fp32 throughout, the dtypes of masters and moments, and why masters exist
// (updates below bf16's resolution accumulate in them and round away without them).
#include "common/model/mixed_precision.h"

#include <cmath>
#include <memory>

#include "ATen/ATen.h"
#include "common/model/adamw.h"
#include "gtest/gtest.h"

namespace rhythm::common::model {
namespace {

ModelConfig Tiny() {
  ModelConfig c;
  c.architecture = Architecture::kQwen2;
  c.vocab_size = 37;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 48;
  c.max_position_embeddings = 64;
  c.qkv_bias = true;
  return c;
}

// A bf16 model and an fp32 model holding the same (bf16-representable) weights.
struct Pair {
  std::unique_ptr<Transformer> bf16, fp32;
};
Pair MakePair() {
  Pair p;
  p.bf16 = *Transformer::RandomInit(Tiny(), 11, at::kBFloat16);
  p.fp32 = *Transformer::RandomInit(Tiny(), 12, at::kFloat);
  at::NoGradGuard no_grad;
  const TensorMap src = p.bf16->NamedParameters();
  for (auto& [name, t] : p.fp32->NamedParameters()) t.copy_(src.at(name));
  p.bf16->SetRequiresGrad(true);
  p.fp32->SetRequiresGrad(true);
  return p;
}

// A scalar loss of the logits: mean log-softmax of fixed targets over a [2, 12] batch.
at::Tensor Loss(const Transformer& m) {
  at::Tensor ids = at::arange(24, at::kLong).remainder(37).view({2, 12});
  at::Tensor mask = at::ones({2, 12}, at::kLong);
  at::Tensor logits = m.Forward(ids, mask).value().logits.to(at::kFloat);
  at::Tensor targets = (ids * 7 + 3).remainder(37);
  return -at::log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).mean();
}

TEST(MasterWeights, AreExactFp32CopiesAndCopyToRoundsBack) {
  Pair p = MakePair();
  auto masters = MasterWeights::From(*p.bf16);
  const TensorMap compute = p.bf16->NamedParameters();
  ASSERT_EQ(masters->parameters().size(), compute.size());
  for (const auto& [name, m] : masters->parameters()) {
    EXPECT_EQ(m.scalar_type(), at::kFloat) << name;
    EXPECT_TRUE(at::equal(m, compute.at(name).to(at::kFloat))) << name;
    EXPECT_NE(m.data_ptr(), compute.at(name).data_ptr()) << name << " shares storage";
  }
  {
    at::NoGradGuard no_grad;
    for (const auto& [name, m] : masters->parameters()) m.add_(1e-3);
  }
  masters->CopyTo(*p.bf16);
  for (const auto& [name, t] : p.bf16->NamedParameters()) {
    EXPECT_EQ(t.scalar_type(), at::kBFloat16) << name;
    EXPECT_TRUE(at::equal(t, masters->parameters().at(name).to(at::kBFloat16))) << name;
  }
}

TEST(MasterWeights, OneBf16StepEqualsTheFp32StepWithinBf16Tolerance) {
  Pair p = MakePair();
  auto masters = MasterWeights::From(*p.bf16);
  AdamW mixed(masters->parameters(), {});
  AdamW plain(p.fp32->NamedParameters(), {});
  Loss(*p.bf16).backward();
  Loss(*p.fp32).backward();
  masters->AccumulateGrads(*p.bf16);
  // The gradients: bf16 compute against fp32, per tensor, relative to its largest entry.
  double worst_grad = 0;
  for (const auto& [name, t] : p.fp32->NamedParameters()) {
    const at::Tensor g32 = t.grad(), g16 = masters->parameters().at(name).grad();
    ASSERT_TRUE(g16.defined()) << name;
    EXPECT_EQ(g16.scalar_type(), at::kFloat) << name;
    const double scale = g32.abs().max().item<double>() + 1e-12;
    worst_grad = std::max(worst_grad, (g16 - g32).abs().max().item<double>() / scale);
  }
  for (const auto& [name, t] : p.bf16->NamedParameters()) {
    EXPECT_FALSE(t.grad().defined()) << name << ": AccumulateGrads leaves no compute gradient";
  }
  EXPECT_LT(worst_grad, 0.1) << "bf16 gradient error relative to the tensor's largest entry";
  const double lr = 1e-3;
  mixed.Step(lr);
  plain.Step(lr);
  masters->CopyTo(*p.bf16);
  // A first AdamW step moves every element by about lr * sign(g): the two agree except where
  // bf16 flips the sign of a near-zero gradient (then by at most 2 lr).
  double sum_diff = 0, max_diff = 0;
  int64_t n = 0;
  for (const auto& [name, t] : p.fp32->NamedParameters()) {
    const at::Tensor d = (masters->parameters().at(name) - t).abs();
    sum_diff += d.sum().item<double>();
    max_diff = std::max(max_diff, d.max().item<double>());
    n += d.numel();
  }
  EXPECT_LE(max_diff, 2 * lr * 1.01);
  EXPECT_LT(sum_diff / n, 0.05 * lr) << "mean |w_bf16 - w_fp32| after one step";
  for (const auto& [name, t] : mixed.State()) {
    EXPECT_EQ(t.scalar_type(), at::kFloat) << name << ": the moments are fp32";
  }
  for (const auto& [name, m] : masters->parameters()) {
    EXPECT_EQ(m.scalar_type(), at::kFloat) << name << ": the masters stay fp32";
    EXPECT_TRUE(std::isfinite(m.abs().max().item<double>())) << name;
  }
  std::printf("bf16 vs fp32 step: worst gradient error %.4f of the tensor's max, mean |dw| "
              "%.3g lr, max |dw| %.3g lr\n",
              worst_grad, sum_diff / n / lr, max_diff / lr);
}

// Micro-batches: each backward's bf16 gradients are added to the masters' in fp32, so the
// mini-batch's gradient is the fp32 sum of the micro-batches' (what bf16 accumulation in the
// compute model's .grad would round at every add).
TEST(MasterWeights, AccumulateGradsSumsTheMicroBatchesInFp32) {
  Pair p = MakePair();
  auto masters = MasterWeights::From(*p.bf16);
  std::vector<TensorMap> micro;
  for (double scale : {1.0, 0.37, 2.5}) {
    (Loss(*p.bf16) * scale).backward();
    TensorMap g;
    for (const auto& [name, t] : p.bf16->NamedParameters()) g[name] = t.grad().clone();
    micro.push_back(g);
    masters->AccumulateGrads(*p.bf16);
  }
  int64_t rounded_apart = 0;
  for (const auto& [name, t] : p.bf16->NamedParameters()) {
    EXPECT_FALSE(t.grad().defined()) << name;
    const at::Tensor expected = micro[0].at(name).to(at::kFloat) + micro[1].at(name).to(at::kFloat) +
                                micro[2].at(name).to(at::kFloat);
    EXPECT_TRUE(at::equal(masters->parameters().at(name).grad(), expected)) << name;
    const at::Tensor in_bf16 = micro[0].at(name) + micro[1].at(name) + micro[2].at(name);
    rounded_apart += (in_bf16.to(at::kFloat) != expected).sum().item<int64_t>();
  }
  EXPECT_GT(rounded_apart, 0) << "summing in bf16 would have rounded some gradients";
}

TEST(MasterWeights, UpdatesBelowBf16ResolutionAccumulateInTheMasters) {
  // The RMSNorm weights start at 1, where a bf16 step is 2^-7 = 0.0078: ten AdamW steps of
  // lr 1e-4 (about 1e-4 each) move a bf16 parameter not at all and the masters by ~1e-3.
  Pair p = MakePair();
  auto masters = MasterWeights::From(*p.bf16);
  AdamW mixed(masters->parameters(), {});
  std::unique_ptr<Transformer> alone = *Transformer::RandomInit(Tiny(), 11, at::kBFloat16);
  {
    at::NoGradGuard no_grad;
    const TensorMap src = p.bf16->NamedParameters();
    for (auto& [name, t] : alone->NamedParameters()) t.copy_(src.at(name));
  }
  alone->SetRequiresGrad(true);
  AdamW bf16_only(alone->NamedParameters(), {});
  const std::string norm = "model.norm.weight";
  for (int step = 0; step < 10; ++step) {
    Loss(*p.bf16).backward();
    masters->AccumulateGrads(*p.bf16);
    mixed.Step(1e-4);
    mixed.ZeroGrad();
    masters->CopyTo(*p.bf16);
    Loss(*alone).backward();
    bf16_only.Step(1e-4);
    bf16_only.ZeroGrad();
  }
  const at::Tensor moved = (masters->parameters().at(norm) - 1.0).abs();
  EXPECT_GT(moved.mean().item<double>(), 5e-4) << "the masters moved by ~10 lr";
  EXPECT_TRUE(at::equal(alone->NamedParameters().at(norm).to(at::kFloat),
                        at::ones_like(moved)))
      << "without masters every update rounded away";
}

}  // namespace
}  // namespace rhythm::common::model

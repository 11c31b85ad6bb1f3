// The long-sequence training paths against the explicit one:
// - BlockAttention against a reference written the slow, obvious way (one query, one head, one
//   key at a time, in double precision), and its gradient against autograd through the
//   explicit ops (expand the key/value heads, full [T, T] mask, softmax, matmul);
// - Transformer::Forward with chunked attention, activation checkpointing and both against the
//   explicit path: logits and the gradient of every parameter within 1e-5 of the reference's
//   largest entry (float32 rounding of reordered sums is ~1e-7 of it), on right- and
//   left-padded batches, grouped-query and plain heads, chunks that do and do not divide T,
//   T = 1;
// - what the forward keeps for backward, from the CPU allocator's own counts.
#include "common/model/block_attention.h"

#include <cmath>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "common/model/cpu_memory_meter.h"
#include "common/model/transformer.h"
#include "gtest/gtest.h"

namespace rhythm::common::model {
namespace {

// ---- BlockAttention ------------------------------------------------------------------------

// key_mask bool [B, T]: row 0 all real, row 1 left-padded by 2, row 2 right-padded by 3.
at::Tensor MixedPaddingMask(int64_t t) {
  at::Tensor m = at::ones({3, t}, at::kBool);
  m[1].narrow(0, 0, std::min<int64_t>(2, t - 1)).fill_(false);
  if (t > 3) m[2].narrow(0, t - 3, 3).fill_(false);
  return m;
}

// out [B, H, T, D] the slow way, in double.
at::Tensor BruteForceAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& key_mask, double scale) {
  const int64_t b = q.size(0), h = q.size(1), t = q.size(2), d = q.size(3);
  const int64_t groups = h / k.size(1);
  const at::Tensor qd = q.to(at::kDouble), kd = k.to(at::kDouble), vd = v.to(at::kDouble);
  at::Tensor out = at::zeros({b, h, t, d}, at::kDouble);
  auto qa = qd.accessor<double, 4>(), ka = kd.accessor<double, 4>(), va = vd.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  auto ma = key_mask.accessor<bool, 2>();
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t hi = 0; hi < h; ++hi) {
      const int64_t kv = hi / groups;
      for (int64_t i = 0; i < t; ++i) {
        std::vector<double> s(t, -std::numeric_limits<double>::infinity());
        double top = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < t; ++j) {
          if (!((j <= i && ma[bi][j]) || j == i)) continue;
          double dot = 0;
          for (int64_t x = 0; x < d; ++x) dot += qa[bi][hi][i][x] * ka[bi][kv][j][x];
          s[j] = dot * scale;
          top = std::max(top, s[j]);
        }
        double total = 0;
        for (int64_t j = 0; j < t; ++j) total += std::isinf(s[j]) ? 0 : std::exp(s[j] - top);
        for (int64_t j = 0; j < t; ++j) {
          if (std::isinf(s[j])) continue;
          const double p = std::exp(s[j] - top) / total;
          for (int64_t x = 0; x < d; ++x) oa[bi][hi][i][x] += p * va[bi][kv][j][x];
        }
      }
    }
  }
  return out;
}

// The explicit path's ops, differentiable by autograd.
at::Tensor ExplicitAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& key_mask, double scale) {
  const int64_t b = q.size(0), h = q.size(1), t = q.size(2), d = q.size(3), kvh = k.size(1);
  const at::Tensor ke = k.unsqueeze(2).expand({b, kvh, h / kvh, t, d}).reshape({b, h, t, d});
  const at::Tensor ve = v.unsqueeze(2).expand({b, kvh, h / kvh, t, d}).reshape({b, h, t, d});
  const at::Tensor allowed = at::ones({t, t}, at::kBool)
                                 .tril()
                                 .unsqueeze(0)
                                 .logical_and(key_mask.unsqueeze(1))
                                 .logical_or(at::eye(t, at::kBool).unsqueeze(0))
                                 .unsqueeze(1);
  at::Tensor s = at::matmul(q, ke.transpose(-1, -2)).to(at::kFloat) * scale;
  s = s.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  return at::matmul(at::softmax(s, -1).to(q.scalar_type()), ve);
}

double MaxAbs(const at::Tensor& t) { return t.abs().max().item<double>(); }
double MaxDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(BlockAttention, MatchesBruteForceForEveryBlockSize) {
  at::manual_seed(3);
  const int64_t t = 7;
  const at::Tensor q = at::randn({3, 4, t, 8}), k = at::randn({3, 2, t, 8}),
                   v = at::randn({3, 2, t, 8});
  const at::Tensor mask = MixedPaddingMask(t);
  const at::Tensor ref = BruteForceAttention(q, k, v, mask, 0.35);
  for (int64_t block : {1, 2, 3, 7, 10}) {
    const at::Tensor out = BlockAttention(q, k, v, mask, block, 0.35);
    EXPECT_LT(MaxDiff(out, ref), 1e-5) << "block " << block;
  }
}

TEST(BlockAttention, GradientMatchesAutogradThroughTheExplicitOps) {
  at::manual_seed(4);
  for (const auto& [heads, kv_heads] : std::vector<std::pair<int64_t, int64_t>>{{4, 2}, {3, 3}}) {
    for (int64_t t : {1, 6, 11}) {
      const at::Tensor q0 = at::randn({3, heads, t, 8}), k0 = at::randn({3, kv_heads, t, 8}),
                       v0 = at::randn({3, kv_heads, t, 8}), w = at::randn({3, heads, t, 8});
      const at::Tensor mask = MixedPaddingMask(t);
      auto grads = [&](int64_t block) {
        at::Tensor q = q0.clone().requires_grad_(), k = k0.clone().requires_grad_(),
                   v = v0.clone().requires_grad_();
        const at::Tensor out = block == 0 ? ExplicitAttention(q, k, v, mask, 0.3)
                                          : BlockAttention(q, k, v, mask, block, 0.3);
        (out * w).sum().backward();
        return std::vector<at::Tensor>{out.detach(), q.grad(), k.grad(), v.grad()};
      };
      const std::vector<at::Tensor> ref = grads(0);
      for (int64_t block : {1, 4, 5, 16}) {
        const std::vector<at::Tensor> got = grads(block);
        for (size_t i = 0; i < ref.size(); ++i) {
          EXPECT_LE(MaxDiff(got[i], ref[i]), 1e-5 * std::max(1.0, MaxAbs(ref[i])))
              << "tensor " << i << " (out, dq, dk, dv), heads " << heads << "/" << kv_heads
              << ", T " << t << ", block " << block;
        }
      }
    }
  }
}

TEST(BlockAttention, Bf16FollowsTheExplicitBf16Path) {
  at::manual_seed(5);
  const int64_t t = 9;
  const at::Tensor mask = MixedPaddingMask(t);
  const at::Tensor q0 = at::randn({3, 4, t, 8}).to(at::kBFloat16),
                   k0 = at::randn({3, 2, t, 8}).to(at::kBFloat16),
                   v0 = at::randn({3, 2, t, 8}).to(at::kBFloat16);
  const at::Tensor w = at::randn({3, 4, t, 8}).to(at::kBFloat16);
  std::vector<at::Tensor> got[2];
  for (int path = 0; path < 2; ++path) {
    at::Tensor q = q0.clone().requires_grad_(), k = k0.clone().requires_grad_(),
               v = v0.clone().requires_grad_();
    const at::Tensor out =
        path == 0 ? ExplicitAttention(q, k, v, mask, 0.3) : BlockAttention(q, k, v, mask, 4, 0.3);
    EXPECT_EQ(out.scalar_type(), at::kBFloat16);
    (out * w).sum().backward();
    got[path] = {out.detach(), q.grad(), k.grad(), v.grad()};
  }
  for (size_t i = 0; i < got[0].size(); ++i) {
    EXPECT_EQ(got[1][i].scalar_type(), at::kBFloat16);
    // bf16 has 8 significant bits: 2^-7 of the largest entry, plus the reorder of sums.
    EXPECT_LE(MaxDiff(got[1][i], got[0][i]), 2e-2 * std::max(1.0, MaxAbs(got[0][i])))
        << "tensor " << i << " (out, dq, dk, dv)";
  }
}

TEST(BlockAttention, RejectsMismatchedShapes) {
  const at::Tensor q = at::randn({1, 4, 5, 8}), k = at::randn({1, 3, 5, 8});
  EXPECT_THROW(BlockAttention(q, k, k, at::ones({1, 5}, at::kBool), 2, 1.0), c10::Error);
  const at::Tensor k2 = at::randn({1, 2, 5, 8});
  EXPECT_THROW(BlockAttention(q, k2, k2, at::ones({1, 5}, at::kBool), 0, 1.0), c10::Error);
}

// ---- Transformer::Forward ------------------------------------------------------------------

ModelConfig SmallConfig(Architecture arch, int64_t kv_heads) {
  ModelConfig c;
  c.architecture = arch;
  c.vocab_size = 37;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = kv_heads;
  c.head_dim = arch == Architecture::kQwen3 ? 16 : 8;
  c.intermediate_size = 48;
  c.max_position_embeddings = 1024;
  c.rope_theta = 10000;
  c.rms_norm_eps = 1e-6;
  c.qkv_bias = arch == Architecture::kQwen2;
  c.qk_norm = arch == Architecture::kQwen3;
  c.tie_word_embeddings = arch != Architecture::kLlama;
  c.initializer_range = 0.2;
  return c;
}

std::unique_ptr<Transformer> TrainableModel(const ModelConfig& c) {
  auto m = Transformer::RandomInit(c, 7);
  EXPECT_TRUE(m.ok()) << m.status();
  at::manual_seed(7);
  for (const auto& [name, t] : (*m)->NamedParameters()) {
    if (name.find("norm") != std::string::npos) t.copy_(1 + 0.3 * at::randn_like(t));
    if (name.find("bias") != std::string::npos) t.copy_(0.3 * at::randn_like(t));
  }
  (*m)->SetRequiresGrad(true);
  return *std::move(m);
}

struct Batch {
  at::Tensor ids, mask;
};

// 3 rows of t tokens: full, left-padded by 2 or right-padded by 3 (the padding rows get
// token 0), per `left`.
Batch PaddedBatch(int64_t t, bool left, uint64_t seed) {
  at::manual_seed(seed);
  Batch b;
  b.ids = at::randint(1, 37, {3, t}, at::kLong);
  b.mask = at::ones({3, t}, at::kLong);
  const int64_t pad = std::min<int64_t>(left ? 2 : 3, t - 1);
  for (int64_t r = 1; r < 3 && pad > 0; ++r) {
    b.mask[r].narrow(0, left ? 0 : t - pad, pad).fill_(0);
    b.ids[r].narrow(0, left ? 0 : t - pad, pad).fill_(0);
  }
  return b;
}

struct Result {
  at::Tensor logits;
  std::vector<at::Tensor> attention;
  std::map<std::string, at::Tensor> grads;
};

void ClearGrads(Transformer& m) {
  for (const auto& [name, p] : m.NamedParameters()) p.mutable_grad() = at::Tensor();
}

// Logits and the gradient of sum(logits · w) for every parameter, after `passes`
// forward-backward passes without clearing in between.
Result TrainStep(Transformer& m, const Batch& b, const ForwardOptions& options, int passes = 1) {
  ClearGrads(m);
  Result r;
  for (int i = 0; i < passes; ++i) {
    absl::StatusOr<ForwardOutput> out = m.Forward(b.ids, b.mask, options);
    EXPECT_TRUE(out.ok()) << out.status();
    at::manual_seed(11);
    (out->logits * at::randn(out->logits.sizes())).sum().backward();
    r.logits = out->logits.detach();
    r.attention = out->attention;
  }
  for (const auto& [name, p] : m.NamedParameters()) r.grads[name] = p.grad().clone();
  return r;
}

void ExpectMatches(const Result& got, const Result& ref, const std::string& what) {
  EXPECT_LE(MaxDiff(got.logits, ref.logits), 1e-5 * MaxAbs(ref.logits)) << what << ": logits";
  ASSERT_EQ(got.grads.size(), ref.grads.size());
  for (const auto& [name, g] : ref.grads) {
    const at::Tensor& other = got.grads.at(name);
    ASSERT_TRUE(other.defined()) << what << ": no gradient for " << name;
    // With one token every softmax is 1: q and k get no gradient; otherwise all do.
    if (ref.logits.size(1) > 1) EXPECT_GT(MaxAbs(g), 0) << name;
    EXPECT_LE(MaxDiff(other, g), 1e-5 * MaxAbs(g)) << what << ": gradient of " << name;
  }
}

ForwardOptions Options(int64_t chunk, bool checkpointing, std::vector<int64_t> capture = {}) {
  ForwardOptions o = ForwardOptions::Training(chunk, checkpointing);
  o.capture_layers = std::move(capture);
  return o;
}

TEST(LongSequenceTraining, GradientsMatchTheExplicitPath) {
  struct Arch {
    Architecture arch;
    int64_t kv_heads;
  };
  for (const Arch& a : {Arch{Architecture::kQwen2, 2}, Arch{Architecture::kLlama, 4},
                        Arch{Architecture::kQwen3, 1}}) {
    std::unique_ptr<Transformer> m = TrainableModel(SmallConfig(a.arch, a.kv_heads));
    for (bool left : {false, true}) {
      for (int64_t t : {1, 13}) {
        const Batch b = PaddedBatch(t, left, 20 + t);
        const Result ref = TrainStep(*m, b, ForwardOptions{});
        for (const ForwardOptions& o :
             {Options(4, false), Options(5, false), Options(13, false), Options(64, false),
              Options(1, false), Options(0, true), Options(4, true), Options(1, true)}) {
          ExpectMatches(
              TrainStep(*m, b, o), ref,
              absl::StrCat(ArchitectureName(a.arch), " kv_heads ", a.kv_heads,
                           left ? " left" : " right", "-padded, T ", t, ", chunk ",
                           o.attention_chunk, o.activation_checkpointing ? ", checkpointed" : ""));
        }
      }
    }
  }
}

TEST(LongSequenceTraining, CheckpointedGradientsAccumulateAcrossPasses) {
  std::unique_ptr<Transformer> m = TrainableModel(SmallConfig(Architecture::kQwen2, 2));
  const Batch b = PaddedBatch(10, true, 31);
  const Result once = TrainStep(*m, b, ForwardOptions{});
  const Result ref = TrainStep(*m, b, ForwardOptions{}, 2);
  const Result got = TrainStep(*m, b, Options(3, true), 2);
  ExpectMatches(got, ref, "two checkpointed passes");
  for (const auto& [name, g] : once.grads) {
    EXPECT_LE(MaxDiff(got.grads.at(name), 2 * g), 1e-5 * MaxAbs(g)) << name << " is not 2x";
  }
}

TEST(LongSequenceTraining, CapturedLayersKeepTheirProbabilities) {
  std::unique_ptr<Transformer> m = TrainableModel(SmallConfig(Architecture::kQwen2, 2));
  const Batch b = PaddedBatch(12, false, 41);
  const Result ref = TrainStep(*m, b, Options(0, false, {1}));
  ASSERT_EQ(ref.attention.size(), 1u);
  for (const ForwardOptions& o : {Options(5, false, {1}), Options(5, true, {1})}) {
    const Result got = TrainStep(*m, b, o);
    ExpectMatches(got, ref, "capture layer 1");
    ASSERT_EQ(got.attention.size(), 1u);
    EXPECT_EQ(got.attention[0].sizes(), ref.attention[0].sizes());
    EXPECT_LE(MaxDiff(got.attention[0], ref.attention[0]), 1e-6);
  }
}

TEST(LongSequenceTraining, NegativeChunkIsRejected) {
  std::unique_ptr<Transformer> m = TrainableModel(SmallConfig(Architecture::kQwen2, 2));
  const Batch b = PaddedBatch(4, false, 1);
  absl::StatusOr<ForwardOutput> out = m->Forward(b.ids, b.mask, Options(-1, false));
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("attention_chunk: -1"), std::string::npos) << out.status();
}

// Bytes the forward leaves allocated for backward and the peak of forward + backward, by the
// CPU allocator's counts.
struct Held {
  int64_t kept = 0, peak = 0;
};

Held Measure(Transformer& m, const Batch& b, const ForwardOptions& o) {
  ClearGrads(m);
  auto meter = std::make_shared<CpuMemoryMeter>();
  Held h;
  {
    c10::DebugInfoGuard guard(c10::DebugInfoKind::PROFILER_STATE, meter);
    absl::StatusOr<ForwardOutput> out = m.Forward(b.ids, b.mask, o);
    EXPECT_TRUE(out.ok()) << out.status();
    // What the graph holds: everything still allocated but the logits.
    h.kept = meter->current() - static_cast<int64_t>(out->logits.nbytes());
    out->logits.sum().backward();
    h.peak = meter->peak();
  }
  return h;
}

TEST(LongSequenceTraining, ChunkedLayersKeepNoLxLTensorForBackward) {
  ModelConfig c = SmallConfig(Architecture::kQwen2, 2);
  std::unique_ptr<Transformer> m = TrainableModel(c);
  // What is kept grows as T for the chunked path and as T^2 for the explicit one: measured at
  // T and 2T. One layer's probabilities at 2T = 512: float32 [3, 4, 512, 512] = 12.6 MB.
  const int64_t t = 256;
  const int64_t probs = 3 * c.num_heads * (2 * t) * (2 * t) * 4;
  const Batch b1 = PaddedBatch(t, true, 51), b2 = PaddedBatch(2 * t, true, 51);
  const Held explicit1 = Measure(*m, b1, ForwardOptions{});
  const Held explicit2 = Measure(*m, b2, ForwardOptions{});
  const Held chunked1 = Measure(*m, b1, Options(64, false));
  const Held chunked2 = Measure(*m, b2, Options(64, false));
  const Held both2 = Measure(*m, b2, Options(64, true));
  std::cout << "T = 512, kept for backward / peak of forward + backward, bytes: explicit "
            << explicit2.kept << " / " << explicit2.peak << ", chunked " << chunked2.kept << " / "
            << chunked2.peak << ", chunked + checkpointed " << both2.kept << " / " << both2.peak
            << "; one [B, heads, T, T] fp32 = " << probs << "; kept at T = 256: " << explicit1.kept
            << " explicit, " << chunked1.kept << " chunked\n";
  EXPECT_GE(explicit2.kept - chunked2.kept, c.num_layers * probs)
      << "the explicit path keeps every layer's probabilities, the chunked none";
  EXPECT_LT(chunked2.kept, probs) << "all the chunked layers keep less than one [T, T]";
  EXPECT_LT(chunked2.kept, 2.2 * chunked1.kept) << "chunked: kept grows as T";
  EXPECT_GT(explicit2.kept, 3.0 * explicit1.kept) << "explicit: kept grows as T^2";
  EXPECT_LT(both2.kept, chunked2.kept / 2) << "a checkpointed layer keeps only its input";
  EXPECT_LT(chunked2.peak, explicit2.peak / 2);
}

}  // namespace
}  // namespace rhythm::common::model

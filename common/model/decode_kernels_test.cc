// Each decode kernel against the ATen ops it replaces, on random data with awkward sizes (not
// multiples of the vector width) and idle slots.
#include "common/model/decode_kernels.h"

#include <cmath>

#include "ATen/ATen.h"
#include "gtest/gtest.h"

namespace rhythm::common::model::kernels {
namespace {

double MaxDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

TEST(DecodeKernels, RmsNormRowsIsHuggingFacesRmsNorm) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({5, 37});
  const at::Tensor w = at::randn({37});
  at::Tensor out = at::empty_like(x);
  RmsNormRows(x.data_ptr<float>(), w.data_ptr<float>(), 1e-6, 5, 37, out.data_ptr<float>());
  const at::Tensor want = w * (x * at::rsqrt(x.pow(2).mean(-1, true) + 1e-6));
  EXPECT_LT(MaxDiff(out, want), 1e-5);
}

TEST(DecodeKernels, LinearPackedIsXTimesWTransposedPlusBiasPlusOut) {
  at::manual_seed(2);
  for (int64_t m : {1, 3, 4, 7, 16}) {
    const int64_t k = 45, n = 130;  // two full panels and a padded one
    const at::Tensor x = at::randn({m, k}), w = at::randn({n, k}), b = at::randn({n});
    PackedWeight packed;
    PackWeight(w.data_ptr<float>(), n, k, &packed);
    at::Tensor out = at::full({m, n}, 123.0);
    LinearPacked(x.data_ptr<float>(), m, packed, b.data_ptr<float>(), false,
                 out.data_ptr<float>());
    EXPECT_LT(MaxDiff(out, at::addmm(b, x, w.t())), 1e-4) << "m " << m;
    const at::Tensor before = at::randn({m, n});
    out.copy_(before);
    LinearPacked(x.data_ptr<float>(), m, packed, nullptr, true, out.data_ptr<float>());
    EXPECT_LT(MaxDiff(out, before + at::mm(x, w.t())), 1e-4) << "accumulate, m " << m;
  }
}

TEST(DecodeKernels, SiluMulRows) {
  at::manual_seed(4);
  const at::Tensor gu = at::randn({3, 2 * 19}) * 4;
  at::Tensor out = at::empty({3, 19});
  SiluMulRows(gu.data_ptr<float>(), 3, 19, out.data_ptr<float>());
  const at::Tensor want = at::silu(gu.narrow(1, 0, 19)) * gu.narrow(1, 19, 19);
  EXPECT_LT(MaxDiff(out, want), 1e-5);
}

struct Shape {
  int64_t slots = 3, heads = 4, kv = 2, hd = 10, cap = 13;
};

TEST(DecodeKernels, RopeAndStoreRotatesNormalisesAndWritesOnlyActiveSlots) {
  at::manual_seed(5);
  const Shape s;
  const int64_t half = s.hd / 2;
  const at::Tensor qkv = at::randn({s.slots, (s.heads + 2 * s.kv) * s.hd});
  const at::Tensor inv = at::rand({half});
  const at::Tensor ang = at::arange(s.cap, at::kFloat).unsqueeze(1) * inv;
  const at::Tensor cos = ang.cos().contiguous(), sin = ang.sin().contiguous();
  const at::Tensor qn = at::randn({s.hd}), kn = at::randn({s.hd});
  std::vector<uint8_t> active = {1, 0, 1};
  std::vector<int64_t> pos = {4, 7, 12};
  at::Tensor q_out = at::zeros({s.slots, s.heads, s.hd});
  at::Tensor kc = at::zeros({s.slots, s.kv, s.cap, s.hd}), vc = at::zeros_like(kc);
  RopeStoreArgs a;
  a.qkv = qkv.data_ptr<float>();
  a.slots = s.slots;
  a.heads = s.heads;
  a.kv_heads = s.kv;
  a.head_dim = s.hd;
  a.capacity = s.cap;
  a.active = active.data();
  a.pos = pos.data();
  a.cos = cos.data_ptr<float>();
  a.sin = sin.data_ptr<float>();
  a.q_norm = qn.data_ptr<float>();
  a.k_norm = kn.data_ptr<float>();
  a.q_out = q_out.data_ptr<float>();
  a.k_cache = kc.data_ptr<float>();
  a.v_cache = vc.data_ptr<float>();
  RopeAndStore(a);
  auto norm = [](const at::Tensor& x, const at::Tensor& w) {
    return w * (x * at::rsqrt(x.pow(2).mean(-1, true) + 1e-6));
  };
  auto rope = [&](const at::Tensor& x, int64_t p) {  // x [heads, hd]
    const at::Tensor c = at::cat({cos[p], cos[p]}), sn = at::cat({sin[p], sin[p]});
    const at::Tensor rot = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
    return x * c + rot * sn;
  };
  for (int64_t r = 0; r < s.slots; ++r) {
    const at::Tensor row = qkv[r];
    const at::Tensor q = row.narrow(0, 0, s.heads * s.hd).view({s.heads, s.hd});
    const at::Tensor k = row.narrow(0, s.heads * s.hd, s.kv * s.hd).view({s.kv, s.hd});
    const at::Tensor v = row.narrow(0, (s.heads + s.kv) * s.hd, s.kv * s.hd).view({s.kv, s.hd});
    if (!active[r]) {
      EXPECT_EQ(kc[r].abs().sum().item<double>(), 0.0) << "idle slot untouched";
      continue;
    }
    EXPECT_LT(MaxDiff(q_out[r], rope(norm(q, qn), pos[r])), 1e-5);
    EXPECT_LT(MaxDiff(kc[r].select(1, pos[r]), rope(norm(k, kn), pos[r])), 1e-5);
    EXPECT_LT(MaxDiff(vc[r].select(1, pos[r]), v), 0.0 + 1e-7);
    EXPECT_EQ(kc[r].narrow(1, 0, pos[r]).abs().sum().item<double>(), 0.0) << "other positions";
  }
}

TEST(DecodeKernels, DecodeAttentionIsMaskedSoftmaxOverTheSlotsKeys) {
  at::manual_seed(6);
  const Shape s;
  const at::Tensor q = at::randn({s.slots, s.heads, s.hd}) * 2;
  const at::Tensor kc = at::randn({s.slots, s.kv, s.cap, s.hd});
  const at::Tensor vc = at::randn({s.slots, s.kv, s.cap, s.hd});
  std::vector<uint8_t> active = {1, 1, 0};
  std::vector<int64_t> length = {1, 9, 13};
  at::Tensor out = at::zeros({s.slots, s.heads * s.hd});
  at::Tensor probs = at::full({s.slots, s.heads, s.cap}, -1.0);
  DecodeAttentionArgs a;
  a.q = q.data_ptr<float>();
  a.k_cache = kc.data_ptr<float>();
  a.v_cache = vc.data_ptr<float>();
  a.slots = s.slots;
  a.heads = s.heads;
  a.kv_heads = s.kv;
  a.head_dim = s.hd;
  a.capacity = s.cap;
  a.active = active.data();
  a.length = length.data();
  a.scale = 0.37;
  a.out = out.data_ptr<float>();
  a.probs = probs.data_ptr<float>();
  DecodeAttention(a);
  for (int64_t r = 0; r < s.slots; ++r) {
    for (int64_t h = 0; h < s.heads; ++h) {
      if (!active[r]) {
        EXPECT_EQ(out[r].abs().sum().item<double>(), 0.0);
        continue;
      }
      const int64_t n = length[r], g = h / (s.heads / s.kv);
      const at::Tensor keys = kc[r][g].narrow(0, 0, n), vals = vc[r][g].narrow(0, 0, n);
      const at::Tensor p = at::softmax(at::mv(keys, q[r][h]) * 0.37, 0);
      EXPECT_LT(MaxDiff(probs[r][h].narrow(0, 0, n), p), 1e-6);
      EXPECT_LT(MaxDiff(out[r].narrow(0, h * s.hd, s.hd), at::mv(vals.t(), p)), 1e-5);
      if (n < s.cap) {
        EXPECT_EQ(probs[r][h][n].item<float>(), -1.0f) << "past the keys: untouched";
      }
    }
  }
}

}  // namespace
}  // namespace rhythm::common::model::kernels

#include "common/model/block_attention.h"

#include <algorithm>
#include <limits>

#include "ATen/ATen.h"
#include "torch/csrc/autograd/custom_function.h"

namespace rhythm::common::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows [r0, r0 + n) of x [B, heads, T, D] as [B, kv_heads, groups · n, D]: the query heads
// that share key/value head g stacked, so one matmul against that head's keys serves them.
at::Tensor GroupRows(const at::Tensor& x, int64_t r0, int64_t n, int64_t kv_heads) {
  const int64_t b = x.size(0), groups = x.size(1) / kv_heads, d = x.size(3);
  return x.narrow(2, r0, n).reshape({b, kv_heads, groups * n, d});
}

// The inverse of GroupRows for one block's result: [B, kv_heads, groups · n, D] -> [B, heads,
// n, D].
at::Tensor UngroupRows(const at::Tensor& x, int64_t heads, int64_t n) {
  return x.view({x.size(0), heads, n, x.size(3)});
}

// The explicit path's mask for query rows [r0, r0 + n) and keys [0, r1): key j is visible to
// query i when j <= i and it is a real token, and always to itself. bool [B, 1, 1, n, r1]
// (broadcast over kv heads and groups).
at::Tensor BlockAllowed(const at::Tensor& key_mask, int64_t r0, int64_t n, int64_t r1) {
  const auto opts = at::TensorOptions().dtype(at::kLong).device(key_mask.device());
  const at::Tensor qi = at::arange(r0, r0 + n, opts).view({n, 1});
  const at::Tensor kj = at::arange(r1, opts).view({1, r1});
  return kj.le(qi)
      .unsqueeze(0)
      .logical_and(key_mask.narrow(1, 0, r1).unsqueeze(1))
      .logical_or(kj.eq(qi).unsqueeze(0))
      .view({key_mask.size(0), 1, 1, n, r1});
}

// One block's probabilities, fp32 [B, kv_heads, groups · n, r1], from the grouped query rows
// and the block's keys, by the explicit path's ops (matmul in the input dtype, then scale, mask
// and softmax in fp32). Forward and backward both call this, so backward's P is the forward's.
at::Tensor BlockProbs(const at::Tensor& q_rows, const at::Tensor& k_keys,
                      const at::Tensor& key_mask, int64_t r0, int64_t n, double scale) {
  const int64_t b = q_rows.size(0), kv = q_rows.size(1), groups = q_rows.size(2) / n;
  const int64_t r1 = k_keys.size(2);
  at::Tensor s = at::matmul(q_rows, k_keys.transpose(-1, -2)).to(at::kFloat) * scale;
  s = s.view({b, kv, groups, n, r1})
          .masked_fill(BlockAllowed(key_mask, r0, n, r1).logical_not(),
                       -std::numeric_limits<float>::infinity());
  return at::softmax(s, -1).view({b, kv, groups * n, r1});
}

class BlockAttentionFunction : public torch::autograd::Function<BlockAttentionFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const at::Tensor& key_mask, int64_t block,
                            double scale) {
    const int64_t t = q.size(2), heads = q.size(1), kv = k.size(1);
    at::Tensor out = at::empty(q.sizes(), q.options());
    for (int64_t r0 = 0; r0 < t; r0 += block) {
      const int64_t n = std::min(block, t - r0), r1 = r0 + n;
      const at::Tensor p =
          BlockProbs(GroupRows(q, r0, n, kv), k.narrow(2, 0, r1), key_mask, r0, n, scale);
      out.narrow(2, r0, n).copy_(
          UngroupRows(at::matmul(p.to(q.scalar_type()), v.narrow(2, 0, r1)), heads, n));
    }
    ctx->save_for_backward({q, k, v, key_mask});
    ctx->saved_data["block"] = block;
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &key_mask = saved[3];
    const int64_t block = ctx->saved_data["block"].toInt();
    const double scale = ctx->saved_data["scale"].toDouble();
    const at::Tensor& grad_out = grads[0];
    const int64_t t = q.size(2), heads = q.size(1), kv = k.size(1);
    const at::ScalarType dtype = q.scalar_type();
    // dK and dV collect every block's share: in fp32 so that a bf16 model does not round at
    // each block.
    at::Tensor dq = at::empty(q.sizes(), q.options());
    at::Tensor dk = at::zeros(k.sizes(), k.options().dtype(at::kFloat));
    at::Tensor dv = at::zeros(v.sizes(), v.options().dtype(at::kFloat));
    for (int64_t r0 = 0; r0 < t; r0 += block) {
      const int64_t n = std::min(block, t - r0), r1 = r0 + n;
      const at::Tensor q_rows = GroupRows(q, r0, n, kv);
      const at::Tensor k_keys = k.narrow(2, 0, r1), v_keys = v.narrow(2, 0, r1);
      const at::Tensor p = BlockProbs(q_rows, k_keys, key_mask, r0, n, scale);
      const at::Tensor d_out = GroupRows(grad_out, r0, n, kv);
      dv.narrow(2, 0, r1).add_(at::matmul(p.to(dtype).transpose(-1, -2), d_out).to(at::kFloat));
      const at::Tensor dp = at::matmul(d_out, v_keys.transpose(-1, -2)).to(at::kFloat);
      // Softmax backward as autograd forms it; masked entries have P = 0, so dS = 0 there.
      const at::Tensor ds = ((dp - (dp * p).sum(-1, /*keepdim=*/true)) * p * scale).to(dtype);
      dq.narrow(2, r0, n).copy_(UngroupRows(at::matmul(ds, k_keys), heads, n));
      dk.narrow(2, 0, r1).add_(at::matmul(ds.transpose(-1, -2), q_rows).to(at::kFloat));
    }
    return {dq, dk.to(dtype), dv.to(dtype), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor BlockAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& key_mask, int64_t block, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes(),
              "block attention: q must be [B, heads, T, D], k and v [B, kv_heads, T, D]");
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3) &&
                  k.size(1) > 0 && q.size(1) % k.size(1) == 0,
              "block attention: q ", q.sizes(), " does not match k ", k.sizes());
  TORCH_CHECK(key_mask.dim() == 2 && key_mask.size(0) == q.size(0) && key_mask.size(1) == q.size(2),
              "block attention: key_mask must be bool [B, T]");
  TORCH_CHECK(block >= 1, "block attention: block = ", block, " must be at least 1");
  return BlockAttentionFunction::apply(q, k, v, key_mask.to(at::kBool), block, scale);
}

}  // namespace rhythm::common::model

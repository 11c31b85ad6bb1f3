#include "common/model/decode_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ATen/Parallel.h"

// The per-row bodies are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time
// by the CPU (GCC function multiversioning), so one binary runs anywhere and vectorises where
// it can; reductions use `omp simd` (built with -fopenmp-simd, no OpenMP runtime).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RHYTHM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RHYTHM_CLONES
#endif

namespace rhythm::common::model::kernels {
namespace {

RHYTHM_CLONES void NormRow(const float* x, const float* w, double eps, int64_t d, float* out) {
  float ss = 0;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < d; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(d) + static_cast<float>(eps));
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) out[i] = w[i] * (x[i] * inv);
}

// Rotates one head of `d` values at one position: (x1, x2) -> (x1 c - x2 s, x2 c + x1 s).
RHYTHM_CLONES void RotateRow(const float* x, const float* c, const float* s, int64_t d,
                             float* out) {
  const int64_t half = d / 2;
#pragma omp simd
  for (int64_t i = 0; i < half; ++i) {
    const float x1 = x[i], x2 = x[i + half];
    out[i] = x1 * c[i] - x2 * s[i];
    out[i + half] = x2 * c[i] + x1 * s[i];
  }
}

RHYTHM_CLONES void AttendOne(const float* q, const float* k, const float* v, int64_t n,
                             int64_t d, float scale, float* scores, float* out) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t s = 0; s < n; ++s) {
    const float* ks = k + s * d;
    float dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int64_t i = 0; i < d; ++i) dot += q[i] * ks[i];
    scores[s] = dot * scale;
    mx = std::max(mx, scores[s]);
  }
  float sum = 0;
  for (int64_t s = 0; s < n; ++s) {
    scores[s] = std::exp(scores[s] - mx);
    sum += scores[s];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) out[i] = 0;
  for (int64_t s = 0; s < n; ++s) {
    scores[s] *= inv;
    const float p = scores[s];
    const float* vs = v + s * d;
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) out[i] += p * vs[i];
  }
}

// 16 floats: one AVX-512 register (two AVX2 ones) through GCC's vector extension.
typedef float V16 __attribute__((vector_size(64)));

// Rows [m0, m0 + rows) of x (rows <= 4) against one packed panel of `cols` columns at j0.
RHYTHM_CLONES void PanelBlock(const float* x, int64_t m0, int64_t rows, int64_t k,
                              const float* panel, int64_t j0, int64_t cols, int64_t n,
                              const float* bias, bool accumulate, float* out) {
  const float* xr[4];
  for (int64_t r = 0; r < 4; ++r) xr[r] = x + (m0 + std::min<int64_t>(r, rows - 1)) * k;
  V16 a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {};
  V16 c0 = {}, c1 = {}, c2 = {}, c3 = {}, d0 = {}, d1 = {}, d2 = {}, d3 = {};
  for (int64_t i = 0; i < k; ++i) {
    V16 w0, w1, w2, w3;
    const float* p = panel + i * kPanel;
    __builtin_memcpy(&w0, p, 64);
    __builtin_memcpy(&w1, p + 16, 64);
    __builtin_memcpy(&w2, p + 32, 64);
    __builtin_memcpy(&w3, p + 48, 64);
    const float s0 = xr[0][i], s1 = xr[1][i], s2 = xr[2][i], s3 = xr[3][i];
    a0 += w0 * s0; a1 += w1 * s0; a2 += w2 * s0; a3 += w3 * s0;
    b0 += w0 * s1; b1 += w1 * s1; b2 += w2 * s1; b3 += w3 * s1;
    c0 += w0 * s2; c1 += w1 * s2; c2 += w2 * s2; c3 += w3 * s2;
    d0 += w0 * s3; d1 += w1 * s3; d2 += w2 * s3; d3 += w3 * s3;
  }
  const V16 acc[4][4] = {{a0, a1, a2, a3}, {b0, b1, b2, b3}, {c0, c1, c2, c3}, {d0, d1, d2, d3}};
  for (int64_t r = 0; r < rows; ++r) {
    float* o = out + (m0 + r) * n + j0;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = acc[r][c / 16][c % 16] + (bias != nullptr ? bias[j0 + c] : 0.0f);
      o[c] = accumulate ? o[c] + v : v;
    }
  }
}

RHYTHM_CLONES void SiluMulRow(const float* g, const float* u, int64_t n, float* out) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

// Rows per parallel task: enough work per task that the pool's hand-off does not dominate.
int64_t Grain(int64_t work_per_row) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_row));
}

}  // namespace

void PackWeight(const float* w, int64_t n, int64_t k, PackedWeight* out) {
  const int64_t panels = (n + kPanel - 1) / kPanel;
  out->n = n;
  out->k = k;
  out->data.assign(panels * k * kPanel, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    float* dst = out->data.data() + (j / kPanel) * k * kPanel + j % kPanel;
    for (int64_t i = 0; i < k; ++i) dst[i * kPanel] = w[j * k + i];
  }
}

void LinearPacked(const float* x, int64_t m, const PackedWeight& w, const float* bias,
                  bool accumulate, float* out) {
  const int64_t panels = (w.n + kPanel - 1) / kPanel;
  at::parallel_for(0, panels, Grain(m * w.k * kPanel / 64), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t j0 = p * kPanel, cols = std::min(kPanel, w.n - j0);
      for (int64_t m0 = 0; m0 < m; m0 += 4) {
        PanelBlock(x, m0, std::min<int64_t>(4, m - m0), w.k, w.data.data() + p * w.k * kPanel, j0,
                   cols, w.n, bias, accumulate, out);
      }
    }
  });
}

void RmsNormRows(const float* x, const float* weight, double eps, int64_t rows, int64_t d,
                 float* out) {
  at::parallel_for(0, rows, Grain(d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) NormRow(x + r * d, weight, eps, d, out + r * d);
  });
}

void RopeAndStore(const RopeStoreArgs& a) {
  const int64_t hd = a.head_dim, half = hd / 2;
  const int64_t width = (a.heads + 2 * a.kv_heads) * hd;
  at::parallel_for(0, a.slots, Grain(width), [&](int64_t begin, int64_t end) {
    float normed[1024];  // head_dim is validated to be at most 1024 by the caller
    for (int64_t r = begin; r < end; ++r) {
      if (!a.active[r]) continue;
      const float* row = a.qkv + r * width;
      const float* c = a.cos + a.pos[r] * half;
      const float* s = a.sin + a.pos[r] * half;
      for (int64_t h = 0; h < a.heads; ++h) {
        const float* q = row + h * hd;
        if (a.q_norm != nullptr) {
          NormRow(q, a.q_norm, a.eps, hd, normed);
          q = normed;
        }
        RotateRow(q, c, s, hd, a.q_out + (r * a.heads + h) * hd);
      }
      for (int64_t h = 0; h < a.kv_heads; ++h) {
        const float* k = row + (a.heads + h) * hd;
        const float* v = row + (a.heads + a.kv_heads + h) * hd;
        const int64_t at_slot = ((r * a.kv_heads + h) * a.capacity + a.pos[r]) * hd;
        if (a.k_norm != nullptr) {
          NormRow(k, a.k_norm, a.eps, hd, normed);
          k = normed;
        }
        RotateRow(k, c, s, hd, a.k_cache + at_slot);
        std::copy(v, v + hd, a.v_cache + at_slot);
      }
    }
  });
}

void DecodeAttention(const DecodeAttentionArgs& a) {
  const int64_t hd = a.head_dim, groups = a.heads / a.kv_heads;
  at::parallel_for(0, a.slots * a.heads, Grain(a.capacity * hd), [&](int64_t begin, int64_t end) {
    std::vector<float> local;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r = i / a.heads, h = i % a.heads;
      if (!a.active[r]) continue;
      const int64_t n = a.length[r];
      float* scores;
      if (a.probs != nullptr) {
        scores = a.probs + (r * a.heads + h) * a.capacity;
      } else {
        if (static_cast<int64_t>(local.size()) < n) local.resize(a.capacity);
        scores = local.data();
      }
      const int64_t kv = ((r * a.kv_heads + h / groups) * a.capacity) * hd;
      AttendOne(a.q + (r * a.heads + h) * hd, a.k_cache + kv, a.v_cache + kv, n, hd,
                static_cast<float>(a.scale), scores, a.out + (r * a.heads + h) * hd);
    }
  });
}

void SiluMulRows(const float* gate_up, int64_t rows, int64_t n, float* out) {
  at::parallel_for(0, rows, Grain(2 * n), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      SiluMulRow(gate_up + r * 2 * n, gate_up + r * 2 * n + n, n, out + r * n);
    }
  });
}

}  // namespace rhythm::common::model::kernels

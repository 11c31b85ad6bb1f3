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

// Rows [n_begin, n_end) of W against rows [m0, m0 + rows) of x, rows <= 4: two rows of W at a
// time against four of x, eight accumulators, so each loaded vector feeds two or four FMAs.
RHYTHM_CLONES void LinearBlock(const float* x, int64_t m0, int64_t rows, int64_t k,
                               const float* w, int64_t n_begin, int64_t n_end, int64_t n,
                               const float* bias, bool accumulate, float* out) {
  const float* x0 = x + m0 * k;
  const float* x1 = rows > 1 ? x0 + k : x0;
  const float* x2 = rows > 2 ? x0 + 2 * k : x0;
  const float* x3 = rows > 3 ? x0 + 3 * k : x0;
  auto store = [&](int64_t j, const float (&acc)[4]) {
    const float b = bias != nullptr ? bias[j] : 0.0f;
    for (int64_t r = 0; r < rows; ++r) {
      float& o = out[(m0 + r) * n + j];
      o = (accumulate ? o : 0.0f) + (acc[r] + b);
    }
  };
  int64_t j = n_begin;
  for (; j + 1 < n_end; j += 2) {
    const float* wa = w + j * k;
    const float* wb = wa + k;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3, b0, b1, b2, b3)
    for (int64_t i = 0; i < k; ++i) {
      const float u = wa[i], v = wb[i];
      const float y0 = x0[i], y1 = x1[i], y2 = x2[i], y3 = x3[i];
      a0 += y0 * u;
      a1 += y1 * u;
      a2 += y2 * u;
      a3 += y3 * u;
      b0 += y0 * v;
      b1 += y1 * v;
      b2 += y2 * v;
      b3 += y3 * v;
    }
    store(j, {a0, a1, a2, a3});
    store(j + 1, {b0, b1, b2, b3});
  }
  for (; j < n_end; ++j) {
    const float* wj = w + j * k;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int64_t i = 0; i < k; ++i) {
      const float u = wj[i];
      a0 += x0[i] * u;
      a1 += x1[i] * u;
      a2 += x2[i] * u;
      a3 += x3[i] * u;
    }
    store(j, {a0, a1, a2, a3});
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

void LinearRows(const float* x, int64_t m, int64_t k, const float* w, int64_t n,
                const float* bias, bool accumulate, float* out) {
  // Parallel over W's rows: each task streams its share of W once for all of x.
  // Tiles of W small enough to stay in L1 while every block of four x rows passes over them.
  const int64_t tile = std::max<int64_t>(1, 8192 / k);
  at::parallel_for(0, n, Grain(m * k), [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; j += tile) {
      const int64_t j_end = std::min(end, j + tile);
      for (int64_t m0 = 0; m0 < m; m0 += 4) {
        LinearBlock(x, m0, std::min<int64_t>(4, m - m0), k, w, j, j_end, n, bias, accumulate,
                    out);
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

// The training attention of layers whose probabilities nobody reads: causal, padded, grouped-
// query softmax attention computed one block of query rows at a time, keeping only Q, K and V
// for backward. Backward recomputes each block's probabilities from them.
//
//   for each block of rows [r0, r1) (r1 - r0 = block, the last block shorter):
//     S = Q[r0:r1] K[0:r1]^T · scale      fp32 [B, kv_heads, groups · rows, r1]
//     P = softmax(masked S)               keys past r1 are never touched (causal)
//     O[r0:r1] = P V[0:r1]
//
// Why a custom autograd function: written with ATen ops under autograd, each block's S and P
// would be saved for backward, so the blocks together would hold the whole [B, heads, L, L]
// again. Here autograd sees one node that saves Q, K, V (O(L) memory); backward recomputes
// S and P block by block with the very ops of the forward (so P is bitwise the forward's) and
// forms dV += P^T dO, dP = dO V^T, dS = P ⊙ (dP − rowsum(dP ⊙ P)) · scale, dQ = dS K,
// dK += dS^T Q. Memory while it runs: one block's S, P and dS, fp32 [B, heads, block, L].
// Cost: one more Q K^T per block in backward; about half the FLOPs of the full L × L forward
// because blocks stop at their last row's key. Grouped-query heads share K and V without the
// expand-and-copy of the explicit path (query head h reads key/value head h / groups; the
// groups' rows are stacked so one matmul per block serves them); dK, dV sum over the groups.
//
// Numerics are those of Transformer's explicit path: the score matmul in the input dtype, the
// scale, mask and softmax in fp32, P cast to the input dtype for P V; gradients of bf16 inputs
// are accumulated across blocks in fp32 and cast once. The mask is the explicit path's: key j
// is visible to query i when j <= i and key_mask[b, j], and a query always sees itself (a
// padding query's row is never empty).
//
// Requires at::GradMode and inputs that require grad for a backward node, as any ATen op.
// Thread-safety: a pure function; concurrent calls are independent.
#pragma once

#include <cstdint>

#include "ATen/core/Tensor.h"

namespace rhythm::common::model {

// q [B, heads, T, head_dim], k and v [B, kv_heads, T, head_dim] (heads a multiple of
// kv_heads), one dtype; key_mask bool [B, T] (true = a real token); block >= 1 query rows per
// block (block >= T is one block). Returns [B, heads, T, head_dim] in q's dtype.
// Differentiable in q, k and v. Throws c10::Error on mismatched shapes (callers validate).
at::Tensor BlockAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& key_mask, int64_t block, double scale);

}  // namespace rhythm::common::model

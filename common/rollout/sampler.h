// Next-token sampling for the rollout engine: temperature, top-k, top-p (nucleus), greedy.
// Runs on the logits' device; returns device tensors (no host copies).
#pragma once

#include <cstdint>

#include "ATen/core/Generator.h"
#include "ATen/core/Tensor.h"

namespace rhythm::common::rollout {

struct SamplingOptions {
  // 0 = greedy.
  double temperature = 1.0;
  // Keep the k most likely tokens; 0 = all.
  int64_t top_k = 0;
  // Keep the smallest set of most likely tokens whose mass reaches top_p; 1 = all.
  double top_p = 1.0;
};

struct SampledTokens {
  at::Tensor ids;       // int64 [B]
  at::Tensor logprobs;  // float [B]: log-prob of the id under the distribution sampled from
  at::Tensor entropy;   // float [B]: entropy (nats) of that distribution
};

// The top-k / top-p filter the sampler applies, for any [..., V] logits already divided by the
// temperature: entries outside the k most likely, then outside the smallest set of most likely
// tokens whose mass (renormalised over the top k) reaches top_p, become -inf (the first token
// is always kept). top_k 0 and top_p 1 disable each. The learner replays it on its own logits
// (learner/trainer.cc) so that its log-probs come from the distribution the actor sampled from:
// one function, so the two cannot drift apart.
at::Tensor FilterLogits(const at::Tensor& scaled_logits, int64_t top_k, double top_p);

// logits: float [B, V]. Greedy takes the argmax and reports the log-prob and entropy of the
// unmodified model distribution (temperature 1, no filtering): a point mass would say nothing.
SampledTokens SampleNext(const at::Tensor& logits, const SamplingOptions& options,
                         at::Generator& generator);

}  // namespace rhythm::common::rollout

// The reasoning regime's learner shapes, shared by the trainer benchmarks
// (trainer_summary_bench.cc, trainer_kl_bench.cc): the warm-countdown3 model's architecture (4
// layers, 4 heads, 2 KV heads, hidden 128, vocab 101) and a batch of 4 groups x 8 responses of
// 40-100 tokens after a 14-token prompt.
#pragma once

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "common/fp16.h"
#include "common/model/model_config.h"
#include "learner/batch_assembler.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::bench {

inline common::model::ModelConfig RegimeModel() {
  common::model::ModelConfig c;
  c.architecture = common::model::Architecture::kQwen2;
  c.vocab_size = 101;
  c.hidden_size = 128;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.intermediate_size = 384;
  c.max_position_embeddings = 256;
  c.qkv_bias = true;
  c.tie_word_embeddings = true;
  return c;
}

// 4 groups x 8 rollouts with the regime's lengths, rewards 0 / 1, and an actor summary of the
// right shape (FAI undefined where the band [10, 100] leaves no row), so the actor source
// credits every response as the learner source does.
inline std::vector<learner::Group> RegimeBatch(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> token(3, 100), length(40, 100), coin(0, 1);
  std::uniform_real_distribution<float> unit(0.f, 1.f);
  std::vector<learner::Group> batch(4);
  uint64_t id = 1;
  for (int g = 0; g < 4; ++g) {
    std::vector<uint32_t> prompt;
    for (int j = 0; j < 14; ++j) prompt.push_back(static_cast<uint32_t>(token(rng)));
    for (int i = 0; i < 8; ++i) {
      v1::Rollout r;
      r.set_rollout_id(id++);
      r.set_actor_id("a");
      r.set_run_id("r");
      r.set_group_id(static_cast<uint64_t>(g));
      r.set_sample_index(static_cast<uint32_t>(i));
      r.set_group_size(8);
      r.add_version_spans()->set_version(0);
      for (uint32_t t : prompt) r.add_prompt_token_ids(t);
      const int t_len = length(rng);
      std::vector<float> waad, fai;
      for (int t = 0; t < t_len; ++t) {
        r.add_response_token_ids(static_cast<uint32_t>(token(rng)));
        r.add_behaviour_logprobs(-std::log(101.f) * (0.5f + unit(rng)));
        r.add_entropy(4.f * unit(rng));
        waad.push_back(10.f * unit(rng));
        fai.push_back(t + 10 <= t_len - 1 ? 0.05f * unit(rng) : NAN);
      }
      r.mutable_summary()->set_waad_f16(common::EncodeFp16(waad));
      r.mutable_summary()->set_fai_f16(common::EncodeFp16(fai));
      r.mutable_verifier()->set_reward(coin(rng));
      batch[g].push_back(std::move(r));
    }
  }
  return batch;
}

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace rhythm::bench

// The model every speed figure in bench/ refers to: a 4-layer, d=256 Qwen2-style decoder
// (vocab 512, 4 heads, 2 KV heads, SwiGLU 1024), 4,067,584 parameters.
#pragma once

#include "common/model/model_config.h"

namespace rhythm::bench {

inline common::model::ModelConfig BenchModelConfig() {
  common::model::ModelConfig c;
  c.architecture = common::model::Architecture::kQwen2;
  c.vocab_size = 512;
  c.hidden_size = 256;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.intermediate_size = 1024;
  c.max_position_embeddings = 1024;
  c.qkv_bias = true;
  c.tie_word_embeddings = true;
  return c;
}

}  // namespace rhythm::bench

// The decoder against a reference written the slow, obvious way (one position, one head, one
// dot product at a time, in double precision), and its two forward paths against each other.
#include "common/model/transformer.h"

#include <cmath>
#include <filesystem>

#include "ATen/ATen.h"
#include "common/model/hf_checkpoint.h"
#include "gtest/gtest.h"

namespace rhythm::common::model {
namespace {

namespace fs = std::filesystem;

ModelConfig TinyConfig(Architecture arch) {
  ModelConfig c;
  c.architecture = arch;
  c.vocab_size = 37;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = arch == Architecture::kQwen3 ? 16 : 8;  // Qwen3: head_dim != hidden / heads
  c.intermediate_size = 48;
  c.max_position_embeddings = 64;
  c.rope_theta = 10000;
  c.rms_norm_eps = 1e-6;
  c.qkv_bias = arch == Architecture::kQwen2;
  c.qk_norm = arch == Architecture::kQwen3;
  c.tie_word_embeddings = arch != Architecture::kLlama;
  c.initializer_range = 0.2;  // large weights: differences show
  if (arch == Architecture::kLlama) {
    c.rope_scaling.factor = 8;
    c.rope_scaling.original_max_position_embeddings = 16;  // so some frequencies are scaled
  }
  return c;
}

std::unique_ptr<Transformer> RandomModel(const ModelConfig& c, uint64_t seed = 1) {
  auto m = Transformer::RandomInit(c, seed);
  EXPECT_TRUE(m.ok()) << m.status();
  // Random norms and biases too, so every parameter matters to the comparison.
  at::manual_seed(seed);
  for (const auto& [name, t] : (*m)->NamedParameters()) {
    if (name.find("norm") != std::string::npos) t.copy_(1 + 0.3 * at::randn_like(t));
    if (name.find("bias") != std::string::npos) t.copy_(0.3 * at::randn_like(t));
  }
  return *std::move(m);
}

// ---- the reference ---------------------------------------------------------------------------

using Vec = std::vector<double>;

Vec Row(const at::Tensor& m, int64_t r) {
  at::Tensor d = m[r].to(at::kDouble).contiguous();
  return Vec(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

Vec MatVec(const at::Tensor& w, const Vec& x) {
  Vec out(w.size(0), 0.0);
  for (int64_t i = 0; i < w.size(0); ++i) {
    const Vec row = Row(w, i);
    for (size_t j = 0; j < x.size(); ++j) out[i] += row[j] * x[j];
  }
  return out;
}

Vec RmsNormRef(const Vec& x, const at::Tensor& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / x.size() + eps);
  Vec out(x.size());
  const Vec wv = Row(w.unsqueeze(0), 0);
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] * inv * wv[i];
  return out;
}

double InvFreqRef(const ModelConfig& c, int64_t i) {
  double f = 1.0 / std::pow(c.rope_theta, 2.0 * i / c.head_dim);
  const RopeScaling& s = c.rope_scaling;
  if (s.factor > 0) {
    const double wavelen = 2 * M_PI / f;
    const double low = s.original_max_position_embeddings / s.low_freq_factor;
    const double high = s.original_max_position_embeddings / s.high_freq_factor;
    if (wavelen > low) {
      f = f / s.factor;
    } else if (wavelen >= high) {
      const double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
      f = (1 - smooth) * f / s.factor + smooth * f;
    }
  }
  return f;
}

// Rotates one head vector for position `pos`: pairs (i, i + d/2).
void RopeRef(const ModelConfig& c, Vec& x, int64_t pos) {
  const int64_t half = c.head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double a = pos * InvFreqRef(c, i);
    const double x1 = x[i], x2 = x[i + half];
    x[i] = x1 * std::cos(a) - x2 * std::sin(a);
    x[i + half] = x2 * std::cos(a) + x1 * std::sin(a);
  }
}

// Logits [T][V] of one unpadded sequence.
std::vector<Vec> ReferenceLogits(const Transformer& m, const std::vector<int64_t>& ids) {
  const ModelConfig& c = m.config();
  const TensorMap p = m.NamedParameters();
  auto P = [&](const std::string& n) { return p.at(n); };
  auto Add = [](Vec a, const Vec& b) {
    for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
    return a;
  };
  const int64_t T = static_cast<int64_t>(ids.size());
  std::vector<Vec> x(T);
  for (int64_t t = 0; t < T; ++t) x[t] = Row(P("model.embed_tokens.weight"), ids[t]);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    std::vector<std::vector<Vec>> q(T), k(T), v(T);  // [t][head][d]
    for (int64_t t = 0; t < T; ++t) {
      const Vec h = RmsNormRef(x[t], P(pre + "input_layernorm.weight"), c.rms_norm_eps);
      Vec qa = MatVec(P(pre + "self_attn.q_proj.weight"), h);
      Vec ka = MatVec(P(pre + "self_attn.k_proj.weight"), h);
      Vec va = MatVec(P(pre + "self_attn.v_proj.weight"), h);
      if (c.qkv_bias) {
        qa = Add(qa, Row(P(pre + "self_attn.q_proj.bias").unsqueeze(0), 0));
        ka = Add(ka, Row(P(pre + "self_attn.k_proj.bias").unsqueeze(0), 0));
        va = Add(va, Row(P(pre + "self_attn.v_proj.bias").unsqueeze(0), 0));
      }
      auto split = [&](const Vec& a, int64_t heads, const char* norm) {
        std::vector<Vec> out(heads);
        for (int64_t hh = 0; hh < heads; ++hh) {
          out[hh] = Vec(a.begin() + hh * c.head_dim, a.begin() + (hh + 1) * c.head_dim);
          if (c.qk_norm) out[hh] = RmsNormRef(out[hh], P(pre + norm), c.rms_norm_eps);
          if (std::string(norm) != "v") RopeRef(c, out[hh], t);
        }
        return out;
      };
      q[t] = split(qa, c.num_heads, "self_attn.q_norm.weight");
      k[t] = split(ka, c.num_kv_heads, "self_attn.k_norm.weight");
      std::vector<Vec> vh(c.num_kv_heads);
      for (int64_t hh = 0; hh < c.num_kv_heads; ++hh) {
        vh[hh] = Vec(va.begin() + hh * c.head_dim, va.begin() + (hh + 1) * c.head_dim);
      }
      v[t] = vh;
    }
    for (int64_t t = 0; t < T; ++t) {
      Vec concat;
      for (int64_t hh = 0; hh < c.num_heads; ++hh) {
        const int64_t kvh = hh / (c.num_heads / c.num_kv_heads);
        Vec score(t + 1);
        double mx = -1e300;
        for (int64_t s = 0; s <= t; ++s) {
          double d = 0;
          for (int64_t i = 0; i < c.head_dim; ++i) d += q[t][hh][i] * k[s][kvh][i];
          score[s] = d / std::sqrt(static_cast<double>(c.head_dim));
          mx = std::max(mx, score[s]);
        }
        double z = 0;
        for (double& sc : score) z += (sc = std::exp(sc - mx));
        Vec o(c.head_dim, 0.0);
        for (int64_t s = 0; s <= t; ++s) {
          for (int64_t i = 0; i < c.head_dim; ++i) o[i] += score[s] / z * v[s][kvh][i];
        }
        concat.insert(concat.end(), o.begin(), o.end());
      }
      Vec attn = MatVec(P(pre + "self_attn.o_proj.weight"), concat);
      x[t] = Add(x[t], attn);
      const Vec h2 = RmsNormRef(x[t], P(pre + "post_attention_layernorm.weight"), c.rms_norm_eps);
      const Vec g = MatVec(P(pre + "mlp.gate_proj.weight"), h2);
      const Vec u = MatVec(P(pre + "mlp.up_proj.weight"), h2);
      Vec act(g.size());
      for (size_t i = 0; i < g.size(); ++i) act[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      x[t] = Add(x[t], MatVec(P(pre + "mlp.down_proj.weight"), act));
    }
  }
  std::vector<Vec> logits(T);
  const at::Tensor head =
      c.tie_word_embeddings ? P("model.embed_tokens.weight") : P("lm_head.weight");
  for (int64_t t = 0; t < T; ++t) {
    logits[t] = MatVec(head, RmsNormRef(x[t], P("model.norm.weight"), c.rms_norm_eps));
  }
  return logits;
}

at::Tensor Ids(const std::vector<int64_t>& ids) { return at::tensor(ids, at::kLong).unsqueeze(0); }

class PerArchitecture : public ::testing::TestWithParam<Architecture> {};

TEST_P(PerArchitecture, ForwardMatchesTheScalarReference) {
  auto m = RandomModel(TinyConfig(GetParam()));
  const std::vector<int64_t> ids = {3, 17, 0, 36, 5, 5, 22, 9, 1, 30, 14, 2, 8, 19, 27, 11, 4,
                                    33, 6, 21};
  ForwardOutput out = *m->Forward(Ids(ids), at::ones({1, 20}));
  const std::vector<Vec> want = ReferenceLogits(*m, ids);
  double max_diff = 0;
  for (int64_t t = 0; t < 20; ++t) {
    for (int64_t v = 0; v < 37; ++v) {
      max_diff = std::max(max_diff, std::abs(out.logits[0][t][v].item<double>() - want[t][v]));
    }
  }
  EXPECT_LT(max_diff, 2e-4) << ArchitectureName(GetParam());
}

std::vector<int64_t> Longs(const std::vector<int32_t>& v) { return {v.begin(), v.end()}; }

// Both decode paths: the kernels (fp32 CPU) and the generic ATen ops.
TEST_P(PerArchitecture, DecodeStepsMatchFullForwardTokenByToken) {
  for (bool kernels : {true, false}) {
    auto m = RandomModel(TinyConfig(GetParam()));
    m->UseDecodeKernels(kernels);
    const std::vector<int64_t> ids = {1, 4, 9, 16, 25, 36, 12, 7, 7, 7, 3, 0};
    const at::Tensor full = m->Forward(Ids(ids), at::ones({1, 12}))->logits;
    KvCache cache(m->config(), 1, 16, at::kFloat, at::kCPU);
    // A 5-token prompt, then one token per step.
    at::Tensor prompt_logits = *m->Prefill({0}, {{1, 4, 9, 16, 25}}, cache);
    EXPECT_LT((prompt_logits[0] - full[0][4]).abs().max().item<double>(), 1e-5);
    for (int64_t t = 5; t < 12; ++t) {
      at::Tensor step = m->DecodeStep({ids[t]}, {1}, cache)->logits;
      EXPECT_LT((step[0] - full[0][t]).abs().max().item<double>(), 1e-5)
          << "token " << t << " kernels " << kernels;
    }
    EXPECT_EQ(cache.length(0), 12);
    EXPECT_FALSE(m->Prefill({0}, {{1}}, cache).ok()) << "slot 0 is not empty";
    for (int64_t t = 12; t < 16; ++t) ASSERT_TRUE(m->DecodeStep({1}, {1}, cache).ok());
    EXPECT_EQ(m->DecodeStep({1}, {1}, cache).status().code(),
              absl::StatusCode::kFailedPrecondition)
        << "16 tokens fill capacity 16";
    EXPECT_EQ(m->DecodeStep({37}, {1}, cache).status().code(),
              absl::StatusCode::kInvalidArgument)
        << "id outside the vocabulary";
  }
}

// The kernels pack weights once per cache; a weight changed in place (as loading and the
// optimiser change them) is packed again before the next step.
TEST_P(PerArchitecture, DecodeStepSeesWeightsChangedInPlace) {
  auto m = RandomModel(TinyConfig(GetParam()));
  KvCache cache(m->config(), 1, 8, at::kFloat, at::kCPU);
  ASSERT_TRUE(m->Prefill({0}, {{3, 1, 4}}, cache).ok());
  ASSERT_TRUE(m->DecodeStep({1}, {1}, cache).ok());  // packs the weights
  {
    at::NoGradGuard no_grad;
    for (const auto& [name, t] : m->NamedParameters()) {
      if (name.find("mlp.up_proj") != std::string::npos ||
          name.find("self_attn.q_proj.weight") != std::string::npos ||
          name.find("embed") != std::string::npos) {
        t.mul_(1.5);
      }
    }
  }
  // The same cache, its slot refilled under the new weights, against the generic ops.
  cache.Clear(0);
  ASSERT_TRUE(m->Prefill({0}, {{3, 1, 4, 1}}, cache).ok());
  const at::Tensor got = m->DecodeStep({5}, {1}, cache)->logits;
  m->UseDecodeKernels(false);
  KvCache generic(m->config(), 1, 8, at::kFloat, at::kCPU);
  ASSERT_TRUE(m->Prefill({0}, {{3, 1, 4, 1}}, generic).ok());
  const at::Tensor want = m->DecodeStep({5}, {1}, generic)->logits;
  EXPECT_LT((got[0] - want[0]).abs().max().item<double>(), 1e-5);
}

// Slots of different lengths in one step, one of them idle, and a slot refilled while the
// others continue: each row is the full forward of its own sequence.
TEST_P(PerArchitecture, SlotsOfDifferentLengthsDecodeIndependently) {
  for (bool kernels : {true, false}) {
    auto m = RandomModel(TinyConfig(GetParam()));
    m->UseDecodeKernels(kernels);
    KvCache cache(m->config(), 3, 24, at::kFloat, at::kCPU);
    std::vector<std::vector<int32_t>> seq = {{5, 6, 7, 8, 9, 10}, {11, 12, 13}, {2}};
    ASSERT_TRUE(m->Prefill({2, 0, 1}, {seq[2], seq[0], seq[1]}, cache).ok());
    auto check = [&](int64_t slot, const at::Tensor& logits, const std::string& what) {
      const std::vector<int64_t> ids = Longs(seq[slot]);
      const at::Tensor full =
          m->Forward(Ids(ids), at::ones({1, static_cast<int64_t>(ids.size())}))->logits;
      EXPECT_LT((logits[slot] - full[0][ids.size() - 1]).abs().max().item<double>(), 1e-5)
          << what << " slot " << slot << " kernels " << kernels;
    };
    for (int step = 0; step < 6; ++step) {
      std::vector<uint8_t> active = {1, 1, static_cast<uint8_t>(step % 2)};  // slot 2 idles
      std::vector<int64_t> ids = {20 + step, 30 - step, 3 + step};
      for (int64_t r = 0; r < 3; ++r) {
        if (active[r]) seq[r].push_back(static_cast<int32_t>(ids[r]));
      }
      ForwardOutput out = *m->DecodeStep(ids, active, cache);
      for (int64_t r = 0; r < 3; ++r) {
        if (active[r]) check(r, out.logits, "step " + std::to_string(step));
      }
      if (step == 2) {  // slot 1 takes a new sequence
        cache.Clear(1);
        seq[1] = {8, 8, 1, 30};
        const at::Tensor p = *m->Prefill({1}, {seq[1]}, cache);
        const at::Tensor full = m->Forward(Ids(Longs(seq[1])), at::ones({1, 4}))->logits;
        EXPECT_LT((p[0] - full[0][3]).abs().max().item<double>(), 1e-5);
      }
    }
    EXPECT_EQ(cache.length(2), 1 + 3);
  }
}

TEST_P(PerArchitecture, PaddedBatchesMatchUnpaddedSequences) {
  auto m = RandomModel(TinyConfig(GetParam()));
  const std::vector<int64_t> a = {5, 6, 7, 8, 9, 10}, b = {11, 12, 13};
  const at::Tensor la = m->Forward(Ids(a), at::ones({1, 6}))->logits[0];
  const at::Tensor lb = m->Forward(Ids(b), at::ones({1, 3}))->logits[0];
  // Right padding (training) and left padding (generation prompts).
  const at::Tensor right = at::tensor({5, 6, 7, 8, 9, 10, 11, 12, 13, 0, 0, 0}, at::kLong).view({2, 6});
  const at::Tensor right_mask = at::tensor({1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0}).view({2, 6});
  const at::Tensor lr = m->Forward(right, right_mask)->logits;
  EXPECT_LT((lr[0] - la).abs().max().item<double>(), 1e-5);
  EXPECT_LT((lr[1].narrow(0, 0, 3) - lb).abs().max().item<double>(), 1e-5);
  const at::Tensor left = at::tensor({5, 6, 7, 8, 9, 10, 0, 0, 0, 11, 12, 13}, at::kLong).view({2, 6});
  const at::Tensor left_mask = at::tensor({1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1}).view({2, 6});
  const at::Tensor ll = m->Forward(left, left_mask)->logits;
  EXPECT_LT((ll[1].narrow(0, 3, 3) - lb).abs().max().item<double>(), 1e-5);
  EXPECT_FALSE(ll.isnan().any().item<bool>()) << "padding rows stay finite";

}

TEST_P(PerArchitecture, CapturedAttentionIsCausalStochasticAndAgreesAcrossPaths) {
  auto m = RandomModel(TinyConfig(GetParam()));
  const std::vector<int64_t> ids = {2, 3, 5, 7, 11, 13, 17};
  ForwardOutput full = *m->Forward(Ids(ids), at::ones({1, 7}), {1, 0});
  ASSERT_EQ(full.attention.size(), 2u);
  const at::Tensor p = full.attention[0];  // layer 1
  EXPECT_EQ(p.sizes(), at::IntArrayRef({1, 4, 7, 7}));
  EXPECT_LT((p.sum(-1) - 1).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(p.triu(1).abs().max().item<double>(), 0.0) << "no attention to the future";
  for (bool kernels : {true, false}) {
    m->UseDecodeKernels(kernels);
    KvCache cache(m->config(), 2, 8, at::kFloat, at::kCPU);
    ASSERT_TRUE(m->Prefill({1}, {{2, 3, 5, 7, 11, 13}}, cache).ok());
    ForwardOutput last = *m->DecodeStep({0, 17}, {0, 1}, cache, {1});
    EXPECT_EQ(last.attention[0].sizes(), at::IntArrayRef({2, 4, 8}));
    EXPECT_LT((last.attention[0][1].narrow(1, 0, 7) - p[0].select(1, 6)).abs().max().item<double>(),
              1e-6)
        << "kernels " << kernels;
  }
  EXPECT_FALSE(m->Forward(Ids(ids), at::ones({1, 7}), {5}).ok()) << "layer 5 does not exist";
}

TEST_P(PerArchitecture, ExportAndReloadGiveBitIdenticalLogits) {
  auto m = RandomModel(TinyConfig(GetParam()));
  const std::string dir = ::testing::TempDir() + "/export_" + ArchitectureName(GetParam());
  fs::remove_all(dir);
  ASSERT_TRUE(ExportHfModel(*m, dir).ok());
  EXPECT_TRUE(fs::exists(dir + "/config.json"));
  auto back = LoadHfModel(dir);
  ASSERT_TRUE(back.ok()) << back.status();
  const at::Tensor ids = at::arange(30, at::kLong).remainder(37).view({2, 15});
  const at::Tensor mask = at::ones({2, 15});
  EXPECT_TRUE(m->Forward(ids, mask)->logits.equal((*back)->Forward(ids, mask)->logits));
  // Sharded, overwriting the first export.
  ExportOptions sharded;
  sharded.overwrite = true;
  sharded.max_shard_bytes = 20000;
  ASSERT_TRUE(ExportHfModel(*m, dir, sharded).ok());
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  auto sharded_back = LoadHfModel(dir);
  ASSERT_TRUE(sharded_back.ok()) << sharded_back.status();
  EXPECT_TRUE(m->Forward(ids, mask)->logits.equal((*sharded_back)->Forward(ids, mask)->logits));
  EXPECT_EQ(ExportHfModel(*m, dir).code(), absl::StatusCode::kFailedPrecondition)
      << "no silent overwrite";
}

INSTANTIATE_TEST_SUITE_P(All, PerArchitecture,
                         ::testing::Values(Architecture::kLlama, Architecture::kQwen2,
                                           Architecture::kQwen3),
                         [](const auto& info) { return std::string(ArchitectureName(info.param)); });

TEST(Transformer, SameSeedSameWeightsAndGradientsReachEveryParameter) {
  const ModelConfig c = TinyConfig(Architecture::kQwen2);
  auto a = *Transformer::RandomInit(c, 7);
  auto b = *Transformer::RandomInit(c, 7);
  auto d = *Transformer::RandomInit(c, 8);
  const TensorMap pa = a->NamedParameters(), pb = b->NamedParameters(), pd = d->NamedParameters();
  EXPECT_TRUE(pa.at("model.embed_tokens.weight").equal(pb.at("model.embed_tokens.weight")));
  EXPECT_FALSE(pa.at("model.embed_tokens.weight").equal(pd.at("model.embed_tokens.weight")));
  a->SetRequiresGrad(true);
  const at::Tensor ids = at::arange(12, at::kLong).view({2, 6});
  const at::Tensor logits = a->Forward(ids, at::ones({2, 6}))->logits;
  at::cross_entropy_loss(logits.view({12, 37}), (ids.view({12}) + 1) % 37).backward();
  for (const auto& [name, t] : a->NamedParameters()) {
    ASSERT_TRUE(t.grad().defined()) << name;
    EXPECT_GT(t.grad().abs().sum().item<double>(), 0.0) << name;
  }
  EXPECT_EQ(a->NumParameters(), 37 * 32 + 2 * (32 * 32 + 2 * 16 * 32 + 32 + 2 * 16 + 32 * 32 +
                                               2 * 32 + 3 * 48 * 32) + 32);
}

TEST(Transformer, Bfloat16RunsCloseToFloat32) {
  const ModelConfig c = TinyConfig(Architecture::kQwen3);
  auto f = *Transformer::RandomInit(c, 3);
  auto h = *Transformer::RandomInit(c, 3, at::kBFloat16);
  const at::Tensor ids = at::arange(10, at::kLong).view({1, 10});
  const at::Tensor lf = f->Forward(ids, at::ones({1, 10}))->logits;
  const at::Tensor lh = h->Forward(ids, at::ones({1, 10}))->logits;
  EXPECT_EQ(lh.scalar_type(), at::kFloat);
  EXPECT_LT((lf - lh).abs().max().item<double>(), 0.1 * lf.abs().max().item<double>());
}

TEST(Transformer, LoaderNamesMissingUnexpectedAndMisshapenTensors) {
  const ModelConfig c = TinyConfig(Architecture::kQwen2);
  auto m = *Transformer::RandomInit(c, 1);
  CheckpointTensors ck;
  ck.tensors = m->NamedParameters();
  for (const auto& [name, t] : ck.tensors) ck.file_of[name] = "/ck/model.safetensors";

  CheckpointTensors missing = ck;
  missing.tensors.erase("model.layers.1.mlp.up_proj.weight");
  absl::Status s = Transformer::FromTensors(c, missing, at::kFloat).status();
  EXPECT_NE(s.message().find("missing tensor 'model.layers.1.mlp.up_proj.weight' ([48, 32])"),
            std::string::npos)
      << s;
  EXPECT_NE(s.message().find("/ck/model.safetensors"), std::string::npos) << s;

  CheckpointTensors extra = ck;
  extra.tensors["model.layers.2.mlp.up_proj.weight"] = at::zeros({48, 32});
  extra.file_of["model.layers.2.mlp.up_proj.weight"] = "/ck/model.safetensors";
  s = Transformer::FromTensors(c, extra, at::kFloat).status();
  EXPECT_NE(s.message().find(
                "/ck/model.safetensors: unexpected tensor 'model.layers.2.mlp.up_proj.weight'"),
            std::string::npos)
      << s;

  CheckpointTensors shape = ck;
  shape.tensors["model.layers.0.self_attn.k_proj.weight"] = at::zeros({32, 32});
  s = Transformer::FromTensors(c, shape, at::kFloat).status();
  EXPECT_NE(s.message().find("tensor 'model.layers.0.self_attn.k_proj.weight' has shape [32, "
                             "32], the config needs [16, 32]"),
            std::string::npos)
      << s;

  CheckpointTensors tied_head = ck;  // a tied checkpoint that also stores lm_head is accepted
  tied_head.tensors["lm_head.weight"] = at::zeros({37, 32});
  EXPECT_TRUE(Transformer::FromTensors(c, tied_head, at::kFloat).ok());
}

}  // namespace
}  // namespace rhythm::common::model

// Starting figures for the policy model on this machine: a 4-layer, d=256 decoder (vocab 512,
// 4 heads, 2 KV heads, MLP 1024), training forward + backward over B x T tokens, and single
// sequence greedy decode through the KV cache. Items are tokens, so items_per_second is
// tokens/s. Run: build/bin/bench_model --benchmark_min_time=2
#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include <thread>

#include "benchmark/benchmark.h"
#include "bench/bench_model_config.h"
#include "common/model/transformer.h"

namespace rhythm::common::model {
namespace {


void SetThreads() { at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))); }

void BM_TrainForwardBackward(benchmark::State& state) {
  SetThreads();
  const int64_t b = state.range(0), t = state.range(1);
  auto m = *Transformer::RandomInit(bench::BenchModelConfig(), 0);
  m->SetRequiresGrad(true);
  const at::Tensor ids = at::randint(512, {b, t}, at::kLong);
  const at::Tensor mask = at::ones({b, t});
  for (auto _ : state) {
    const at::Tensor logits = m->Forward(ids, mask)->logits;
    at::cross_entropy_loss(logits.view({b * t, 512}), ids.view({b * t})).backward();
  }
  state.SetItemsProcessed(state.iterations() * b * t);
}
BENCHMARK(BM_TrainForwardBackward)->Args({16, 128})->Unit(benchmark::kMillisecond);

void BM_DecodeOneSequence(benchmark::State& state) {
  SetThreads();
  const int64_t new_tokens = state.range(0);
  auto m = *Transformer::RandomInit(bench::BenchModelConfig(), 0);
  at::InferenceMode guard;
  KvCache cache(m->config(), 1, 16 + new_tokens, at::kFloat, at::kCPU);
  const at::Tensor prompt = at::randint(512, {1, 16}, at::kLong);
  for (auto _ : state) {
    cache.Reset();
    at::Tensor logits = m->ForwardIncremental(prompt, {}, cache)->logits;
    for (int64_t i = 0; i < new_tokens; ++i) {
      const at::Tensor next = logits.select(1, -1).argmax(-1, /*keepdim=*/true);
      logits = m->ForwardIncremental(next, {}, cache)->logits;
    }
  }
  state.SetItemsProcessed(state.iterations() * new_tokens);
}
BENCHMARK(BM_DecodeOneSequence)->Arg(128)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace rhythm::common::model
